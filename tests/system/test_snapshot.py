"""Issue 13 on real guests: a ready snapshot is saved once, restored with the case's identity (name,
MAC, address, clock), never used for another key, and a corrupt one falls back to a cold boot."""

import json
import shutil
import time
from pathlib import Path

import pytest

from conftest import REPO

from testbed.vm import guests
from testbed.host.cleanup import Cleanup
from testbed.config.scenario import load_scenario
from testbed.images.build import ensure
from testbed.net.build import build as build_net
from testbed.host.paths import runtime_dir
from testbed.host.tags import new_tag
from testbed.vm import accel, snapshot

pytestmark = [pytest.mark.system, pytest.mark.slow]


def saved(snapshots: Path) -> list[Path]:
    return [p for p in snapshots.iterdir() if not p.name.startswith(".")]  # not the savers' lock files


@pytest.fixture
def snapshots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private snapshot folder: the test saves its own and never touches the cache's."""
    monkeypatch.setattr(snapshot, "snapshots_dir", lambda: tmp_path / "snapshots")
    return tmp_path / "snapshots"


def boot_client(undo: Cleanup, mode: str = "restore"):
    image = ensure("client", say=lambda m: None)
    choice = accel.choose("auto", image, say=lambda m: None)
    topo = load_scenario(REPO / "scenarios/nfs-swap.yaml").topology
    tag = new_tag()
    rundir = runtime_dir() / tag
    rundir.mkdir(parents=True)
    undo.push("rundir", shutil.rmtree, rundir, True)
    net = build_net(topo, tag, undo)
    node = topo.node_for("client")
    vm = guests.boot(role="client", node=node, tag=tag, image=image, net=net, mem_mb=128, vcpus=1, accel=choice.accel,
                     rundir=rundir, logdir=rundir, undo=undo, boot_s=120, mode=mode)
    return vm, net, node


def test_restore_gives_the_case_its_identity_and_never_writes_the_snapshot(snapshots: Path) -> None:
    with Cleanup() as undo:
        first, _, _ = boot_client(undo)
    assert first.boot["mode"] == "restored" and first.boot["saved_s"] > 0, first.boot
    (folder,) = saved(snapshots)
    root_before = (folder / snapshot.ROOT).read_bytes()
    with Cleanup() as undo:
        vm, net, node = boot_client(undo)
        assert vm.boot["mode"] == "restored" and "saved_s" not in vm.boot, vm.boot
        assert vm.exec(["hostname"], 10).stdout.strip() == vm.name
        port = net.ports_of(node)[0]
        link = vm.exec(["ip", "-o", "addr", "show", "dev", vm.net_devs[0]], 10).stdout
        assert str(port.address).split("/")[0] in link
        mac = vm.exec(["cat", f"/sys/class/net/{vm.net_devs[0]}/address"], 10).stdout.strip()
        assert mac == port.mac
        guest_time = float(vm.exec(["date", "+%s.%N"], 10).stdout)
        assert abs(guest_time - time.time()) < 5
        vm.exec(["sh", "-c", "echo scribble > /root/x && sync"], 10, check=True)
    assert (folder / snapshot.ROOT).read_bytes() == root_before  # the case wrote to its own overlay


def test_a_snapshot_for_another_key_is_saved_anew_and_a_corrupt_one_falls_back_to_cold(snapshots: Path) -> None:
    with Cleanup() as undo:
        boot_client(undo)
    (folder,) = saved(snapshots)
    meta = json.loads((folder / snapshot.META).read_text())
    meta["key"]["mem_mb"] = 999  # the folder now claims another key than its name's
    (folder / snapshot.META).write_text(json.dumps(meta))
    with Cleanup() as undo:
        vm, _, _ = boot_client(undo)
    assert vm.boot["mode"] == "restored" and "another key" in vm.boot["discarded"] and vm.boot["saved_s"] > 0
    state = folder / snapshot.STATE
    data = bytearray(state.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 4096):  # same size: only the stream's checksum can tell
        data[i] ^= 0x5A
    state.write_bytes(bytes(data))
    with Cleanup() as undo:
        vm, _, _ = boot_client(undo)
        assert vm.exec(["true"], 10).ok
    assert vm.boot["mode"] == "cold" and "failed" in vm.boot["reason"], vm.boot
    assert not folder.exists()  # discarded: the next case saves a good one
