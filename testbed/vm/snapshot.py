"""Ready snapshots: a guest booted once to its agent's `ready`, its state saved (QMP migrate to a
zstd stream through `exec:`, QEMU 7.2 has no `file:` target) beside a qcow2 overlay of the image's
root disk. A case restores from it in about a second instead of booting.

A snapshot is keyed by everything that shapes the saved machine (image hash, memory, vCPUs,
accelerator, QEMU version, NICs' MTUs, extra disks' serials and sizes, this module's format); a
folder whose recorded key differs from the wanted one is never used. The guest's identity (name,
MACs, clock, entropy) is given after restore, before anything else happens, so the case proceeds
exactly as after a cold boot. Any failure to restore is a `SnapshotError`: the caller boots cold and
records why.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from testbed.host import proc
from testbed.host.cleanup import Cleanup
from testbed.errors import GuestError, TestbedError
from testbed.images import cache as image_cache
from testbed.images.cache import Image
from testbed.host.paths import cache_dir
from testbed.vm import argv as qargv
from testbed.vm.argv import Nic, VMSpec
from testbed.vm.caps import host_caps
from testbed.vm.machine import VM

FORMAT = 2  # bump when what is saved, or how a guest is given its identity, changes
STATE = "state.zst"
ROOT = "root.qcow2"
META = "meta.json"
# The NICs of a saved guest: fixed per role (two restored guests never share one on a bridge), so a
# restore knows which guest interface is which NIC.
SAVE_MACS = {"client": "52:54:00:5a:00:{:02x}", "nas": "52:54:00:5b:00:{:02x}"}


def save_mac(role: str, i: int) -> str:
    return SAVE_MACS.get(role, "52:54:00:5c:00:{:02x}").format(i)


class SnapshotError(TestbedError):
    def __init__(self, message: str, discard: bool = False):
        super().__init__(message)
        self.discard = discard  # the snapshot itself is bad (not a slow host): remove it, the next case saves anew


@dataclass(frozen=True)
class SnapshotKey:
    role: str
    image: str  # the image's recipe hash
    mem_mb: int
    vcpus: int
    accel: str
    qemu: str
    nic_mtus: tuple[int, ...]
    disks: tuple[tuple[str, int], ...]  # (serial, size in bytes) of the extra disks, in order
    built_at: str = ""  # the image's build: a rebuild under the same recipe hash is another root disk
    machine: str = ""  # QEMU machine, CPU and devices as the argv gives them, and the kernel command line
    format: int = FORMAT

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def dirname(self) -> str:
        return f"{self.role}-{self.digest}"


@dataclass(frozen=True)
class Snapshot:
    key: SnapshotKey
    dir: Path
    built_at: str
    save_s: float
    state_bytes: int

    @property
    def state(self) -> Path:
        return self.dir / STATE

    @property
    def root(self) -> Path:
        return self.dir / ROOT


def snapshots_dir() -> Path:
    return cache_dir() / "snapshots"


def key_for(role: str, spec: VMSpec, image: Image) -> SnapshotKey:
    return SnapshotKey(
        role=role, image=image.hash, mem_mb=spec.mem_mb, vcpus=spec.vcpus, accel=spec.accel,
        qemu=host_caps().version, nic_mtus=tuple(n.mtu for n in spec.nics),
        disks=tuple((d.serial, d.path.stat().st_size) for d in spec.disks), built_at=image.built_at,
        machine=" ".join([*qargv.machine_args(spec), *qargv.kernel_args(spec)[4:], *spec.extra]),
    )


def _key_from(data: dict[str, Any]) -> SnapshotKey:
    data = dict(data)
    data["nic_mtus"] = tuple(data["nic_mtus"])
    data["disks"] = tuple(tuple(d) for d in data["disks"])
    return SnapshotKey(**data)


def read(folder: Path) -> Snapshot:
    """The snapshot in `folder`; SnapshotError when it is incomplete or not what it claims."""
    try:
        meta = json.loads((folder / META).read_text())
        snap = Snapshot(key=_key_from(meta["key"]), dir=folder, built_at=meta["built_at"], save_s=meta["save_s"],
                        state_bytes=meta["state_bytes"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SnapshotError(f"snapshot {folder.name}: unreadable {META}: {e}") from None
    for f in (snap.state, snap.root):
        if not f.is_file():
            raise SnapshotError(f"snapshot {folder.name}: {f.name} is missing")
    if snap.state.stat().st_size != snap.state_bytes:
        raise SnapshotError(f"snapshot {folder.name}: {STATE} is {snap.state.stat().st_size} bytes, "
                            f"{snap.state_bytes} were saved")
    return snap


def lookup(key: SnapshotKey) -> tuple[Snapshot | None, str]:
    """The usable snapshot for `key`, or None and why not ("" when there simply is none yet)."""
    folder = snapshots_dir() / key.dirname
    if not folder.exists():
        return None, ""
    try:
        snap = read(folder)
    except SnapshotError as e:
        return None, str(e)
    if snap.key != key:
        return None, f"snapshot {folder.name} was saved for another key ({_diff(snap.key, key)})"
    return snap, ""


def _diff(a: SnapshotKey, b: SnapshotKey) -> str:
    da, db = asdict(a), asdict(b)
    return ", ".join(f"{k}: {da[k]} != {db[k]}" for k in da if da[k] != db[k]) or "same fields"


def discard(folder: Path) -> None:
    """Remove a snapshot that must not be used again (renamed first: a reader never sees half of it)."""
    if not folder.exists():
        return
    doomed = folder.with_name(f".discard-{os.getpid()}-{folder.name}")
    try:
        folder.rename(doomed)
    except OSError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def _wait_migration(vm: VM, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = vm.qmp.cmd("query-migrate", timeout=10).get("status", "none")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            info = vm.qmp.cmd("query-migrate", timeout=10)
            raise SnapshotError(f"{vm.name}: {what} {status}: {info.get('error-desc', 'no reason given')}")
        if time.monotonic() > deadline:
            raise SnapshotError(f"{vm.name}: {what} not finished after {timeout:.0f} s (status {status})")
        time.sleep(0.1)


def save(role: str, spec: VMSpec, image: Image, key: SnapshotKey, undo: Cleanup, boot_s: float,
         say: Callable[[str], None] = lambda m: None) -> Snapshot:
    """Boot `spec` cold over a fresh overlay, save it at `ready`, and store it under `key`. One saver per
    key (a lock: matrix jobs are threads of one process, other runs other processes); the others wait
    and use what it saved. Any failure is a SnapshotError."""
    root = snapshots_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{key.dirname}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        snap, _ = lookup(key)
        if snap is not None:
            return snap
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{os.getpid()}-{key.dirname}-"))
        undo.push(f"snapshot temporary {tmp}", shutil.rmtree, tmp, True)
        try:
            return _save(role, spec, image, key, tmp, undo, boot_s, say)
        except (GuestError, OSError) as e:  # CommandError is a TestbedError: below
            raise SnapshotError(f"saving a {role} snapshot failed: {e}") from None
        except TestbedError as e:
            if isinstance(e, SnapshotError):
                raise
            raise SnapshotError(f"saving a {role} snapshot failed: {e}") from None


def _save(role: str, spec: VMSpec, image: Image, key: SnapshotKey, tmp: Path, undo: Cleanup, boot_s: float,
          say: Callable[[str], None]) -> Snapshot:
    t0 = time.monotonic()
    say(f"saving a ready {role} snapshot ({key.digest}): one cold boot, once per key")
    proc.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.root), str(tmp / ROOT)])
    disks = []
    for i, d in enumerate(spec.disks):  # blank stand-ins of the same size: their content is the case's
        blank = tmp / f"disk{i}.img"
        with open(blank, "wb") as f:
            f.truncate(d.path.stat().st_size)
        disks.append(replace(d, path=blank))
    save_spec = replace(
        spec, root=tmp / ROOT, root_format="qcow2", root_snapshot=False, disks=tuple(disks),
        nics=tuple(Nic(n.tap, save_mac(role, i), n.mtu) for i, n in enumerate(spec.nics)),
        console_log=tmp / "console.log", qemu_log=tmp / "qemu.log", incoming="",
    )
    state = tmp / STATE
    vm = VM(save_spec, undo)
    try:
        vm.start()
        vm.wait_ready(boot_s)
        vm.qmp.cmd("stop")
        vm.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 2**40})
        vm.qmp.cmd("migrate", uri="exec:" + shlex.join(["/bin/sh", "-c", SAVE_SCRIPT, "sh", str(state)]))
        _wait_migration(vm, 120, "saving the state")
    finally:
        vm.stop()
    deadline = time.monotonic() + 60
    while not state.exists():  # zstd finishes in its own time, then renames its .part into place
        if time.monotonic() > deadline:
            raise SnapshotError(f"saving a {role} snapshot: {STATE} never completed")
        time.sleep(0.05)
    check = proc.run(["zstd", "-q", "-t", str(state)], check=False, timeout=120)
    if check.returncode != 0:
        raise SnapshotError(f"saving a {role} snapshot: the saved stream does not verify: {check.stderr.strip()[:200]}")
    for d in disks:
        d.path.unlink()
    snap = Snapshot(key=key, dir=snapshots_dir() / key.dirname, built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    save_s=round(time.monotonic() - t0, 2), state_bytes=state.stat().st_size)
    (tmp / META).write_text(json.dumps({"key": asdict(key), "built_at": snap.built_at, "save_s": snap.save_s,
                                        "state_bytes": snap.state_bytes}, indent=2) + "\n")
    tmp.rename(snap.dir)  # atomic: readers see all of it or nothing (the lock keeps other savers out)
    return read(snap.dir)


# QEMU SIGTERMs its exec: child as soon as the stream ends: zstd runs detached from that shell (its
# stdin kept through fd 3) and renames its output into place only once it has written all of it.
SAVE_SCRIPT = 'exec 3<&0; { zstd -q -1 -f -o "$1.part" <&3 && mv "$1.part" "$1"; } & exit 0'


def restore(snap: Snapshot, spec: VMSpec, undo: Cleanup, timeout: float) -> VM:
    """Start `spec` from `snap` and give it its identity; SnapshotError (VM stopped) on any failure."""
    overlay = spec.rundir / f"{spec.name}-root.qcow2"
    try:
        spec.rundir.mkdir(parents=True, exist_ok=True)
        proc.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(snap.root), str(overlay)])
    except (OSError, TestbedError) as e:
        raise SnapshotError(f"restoring {spec.name}: no overlay on snapshot {snap.key.digest}: {e}") from None
    undo.push(f"overlay {overlay}", overlay.unlink, True)
    rspec = replace(spec, root=overlay, root_format="qcow2", root_snapshot=False,
                    incoming="exec:" + shlex.join(["zstd", "-q", "-d", "-c", str(snap.state)]))
    vm = VM(rspec, undo)
    try:
        vm.start(timeout=timeout)
        deadline = time.monotonic() + timeout
        while (status := vm.qmp.status()) != "running":
            if status == "paused":  # loaded; saved stopped (no pages dirtied while saving), so it waits for us
                vm.qmp.cont()
                continue
            if status not in ("inmigrate", "prelaunch", "restore-vm"):
                raise GuestError(f"restored guest is {status!r}, not running")
            if time.monotonic() > deadline:
                raise GuestError(f"still {status!r} after {timeout:.0f} s")
            time.sleep(0.05)
        if vm.agent.ping(max(1.0, deadline - time.monotonic())) is None:
            raise GuestError("its agent did not answer after the restore")
        vm.agent.ready.set()
        vm.ready_at = time.monotonic()
        give_identity(vm, spec, snap.key.role)
    except (GuestError, OSError) as e:
        died = vm.proc is not None and vm.proc.poll() is not None  # QEMU refused the stream: the snapshot is bad
        vm.stop()
        raise SnapshotError(f"restoring {spec.name} from snapshot {snap.key.digest} failed: {e}", discard=died) from None
    return vm


def give_identity(vm: VM, spec: VMSpec, role: str) -> None:
    """What a boot would have given the guest: its name, its NICs' MACs, the time, fresh entropy;
    and no cached blocks of the stand-in disks it was saved with."""
    now = f"@{time.time():.6f}"
    steps = [["hostname", spec.name], ["date", "-u", "-s", now]]
    for i, nic in enumerate(spec.nics):
        steps.append(["/bin/sh", "-c", 'for d in /sys/class/net/*; do [ "$(cat $d/address)" = "$1" ] && '
                      'ip link set dev "${d##*/}" address "$2"; done; true', "sh", save_mac(role, i), nic.mac])
    for d in spec.disks:
        steps.append(["/bin/sh", "-c", 'for b in /sys/block/vd*; do [ "$(cat $b/serial 2>/dev/null)" = "$1" ] && '
                      'blockdev --flushbufs "/dev/${b##*/}"; done; true', "sh", d.serial])
    # Mixed in, not a reseed: the CRNG reseeds because vmgenid (every guest has one, guid=auto) tells the
    # kernel it is a new generation of a saved VM.
    seed = os.urandom(64).hex()
    steps.append(["/bin/sh", "-c", 'printf %s "$1" > /dev/urandom', "sh", seed])
    vm.run_all(*steps, timeout=30)


def stale() -> list[Path]:
    """Snapshot folders no current image can use (their image hash is not in the cache), and
    temporaries whose saving process is gone."""
    root = snapshots_dir()
    if not root.is_dir():
        return []
    hashes = {i.hash for i in image_cache.all_entries()}
    out = []
    for p in sorted(root.iterdir()):
        if p.name.endswith(".lock"):
            continue
        if p.name.startswith((".tmp-", ".discard-")):
            pid = p.name.split("-")[1]
            if not (pid.isdigit() and Path(f"/proc/{pid}").exists()):
                out.append(p)
            continue
        try:
            snap = read(p)
        except SnapshotError:
            out.append(p)
            continue
        if snap.key.image not in hashes or snap.key.format != FORMAT or snap.key.qemu != host_caps().version:
            out.append(p)
    return out
