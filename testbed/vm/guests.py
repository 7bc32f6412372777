"""Booting a case's guests on the built network and giving them their static addresses."""

from __future__ import annotations

import time
from dataclasses import replace
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testbed.host.cleanup import Cleanup
from testbed.errors import GuestError
from testbed.images.cache import Image
from testbed.net.build import BuiltNet
from testbed.host.tags import vm_name
from testbed.vm.argv import Disk, VMSpec
from testbed.vm import snapshot
from testbed.vm.machine import VM


def boot(
    *,
    role: str,
    node: str,
    tag: str,
    image: Image,
    net: BuiltNet,
    mem_mb: int,
    vcpus: int,
    accel: str,
    rundir: Path,
    logdir: Path,
    undo: Cleanup,
    boot_s: float,
    disks: tuple[Disk, ...] = (),
    mode: str = "cold",
    say: Callable[[str], None] = lambda m: None,
) -> VM:
    """A ready, addressed guest: restored from its ready snapshot (saved first when there is none)
    when `mode` is "restore", booted otherwise or when restoring fails; `vm.boot` says which and why."""
    spec = VMSpec(
        name=vm_name(tag, role),
        kernel=image.kernel,
        initrd=image.initrd,
        root=image.root,
        rundir=rundir,
        mem_mb=mem_mb,
        vcpus=vcpus,
        accel=accel,
        netns=net.netns,
        nics=net.nics_of(node),
        disks=disks,
        console_log=logdir / f"console-{role}.log",
        qemu_log=logdir / f"qemu-{role}.log",
        hostname=f"tb-{role}" if mode == "restore" else "",
    )
    t0 = time.monotonic()
    vm = restored(role, spec, image, undo, boot_s, say) if mode == "restore" else None
    if vm is None:
        vm = VM(spec, undo)
        vm.start()
        vm.wait_ready(boot_s)
        vm.boot.setdefault("mode", "cold")
    vm.boot["ready_s"] = round(time.monotonic() - t0, 2)
    configure_net(vm, net, node)
    return vm


def restored(role: str, spec: VMSpec, image: Image, undo: Cleanup, boot_s: float,
             say: Callable[[str], None]) -> VM | None:
    """The guest restored from its snapshot, or None with the reason in the returned record of the
    cold boot that follows (a snapshot that failed to restore is discarded: the next case saves anew)."""
    record: dict[str, Any] = {}
    key = snapshot.key_for(role, spec, image)
    snap, why = snapshot.lookup(key)
    try:
        if snap is None:
            if why:  # incomplete, or saved for another key: never used, saved again
                say(f"{role} snapshot not used: {why}")
                record["discarded"] = why
                snapshot.discard(snapshot.snapshots_dir() / key.dirname)
            snap = snapshot.save(role, spec, image, key, undo, boot_s, say)
            record["saved_s"] = snap.save_s
        vm = snapshot.restore(snap, spec, undo, timeout=min(boot_s, 60))
    except snapshot.SnapshotError as e:
        say(f"{role}: {e}; booting cold")
        if snap is not None and e.discard:  # a bad snapshot; a slow host's timeout leaves it for others
            snapshot.discard(snap.dir)
            record["discarded"] = str(e)
        fallback = VM(replace(spec, hostname=""), undo)
        fallback.boot.update(mode="cold", reason=str(e), **record)
        fallback.start()
        fallback.wait_ready(boot_s)
        return fallback
    vm.boot.update(mode="restored", snapshot=key.digest, snapshot_built=snap.built_at, **record)
    return vm


def configure_net(vm: VM, net: BuiltNet, node: str) -> None:
    """Find each NIC by its MAC (no udev in the guest, so names are eth0, eth1 ...) and address it."""
    out = vm.exec(["ip", "-o", "link"], 15, check=True).stdout
    by_mac = {}
    for line in out.splitlines():
        parts = line.split()
        if "link/ether" in parts:
            by_mac[parts[parts.index("link/ether") + 1]] = parts[1].rstrip(":").split("@")[0]
    steps: list[list[str]] = []
    for port in net.ports_of(node):
        dev = by_mac.get(port.mac)
        if not dev:
            raise GuestError(f"{vm.name}: no interface with MAC {port.mac} (guest has {', '.join(by_mac) or 'none'})")
        vm.net_devs.append(dev)
        steps.append(["ip", "link", "set", dev, "mtu", str(port.mtu), "up"])
        steps.append(["ip", "addr", "add", str(port.address), "dev", dev])
    vm.run_all(*steps, timeout=15)
