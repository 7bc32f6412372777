"""A memory dump of a guest taken from outside it: QMP `dump-guest-memory` in kdump-zlib format (what
drgn reads), detached and followed with `query-dump`. QEMU stops the guest while it copies and resumes it
after. The guest's VMCOREINFO note (from `-device vmcoreinfo`, written once its qemu_fw_cfg module is
loaded) goes into the dump: it tells a reader the kernel's release, its symbols' offset and its kallsyms."""

from __future__ import annotations

import os
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.errors import GuestError
from testbed.host.paths import cache_dir
from testbed.vm.qmp import Qmp

FORMAT = "kdump-zlib"
KEEP_MB = 4096  # the dump cache's bound: the oldest cases' dumps go first (testbed clean --dumps: all)


@dataclass(frozen=True)
class Dump:
    """A dump as taken: its file (None when it failed), the seconds and MB it took, or why it failed."""

    path: Path | None
    seconds: float
    mb: float | None
    error: str | None = None

    def record(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "format": FORMAT, "seconds": round(self.seconds, 2),
                "mb": round(self.mb, 1) if self.mb is not None else None, **({"error": self.error} if self.error else {})}


def dumps_dir(tag: str, case_id: str) -> Path:
    """Where a case's dumps are kept: in the cache, by run tag and case id (hundreds of MB: never in results/)."""
    return cache_dir() / "dumps" / tag / case_id


def cached() -> list[Path]:
    """Every case folder of kept dumps, oldest first."""
    root = cache_dir() / "dumps"
    folders = [c for t in root.iterdir() if t.is_dir() for c in t.iterdir() if c.is_dir()] if root.exists() else []
    return sorted(folders, key=lambda p: p.stat().st_mtime)


def size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 2**20


def prune(keep_mb: float = KEEP_MB, keep: Path | None = None) -> list[str]:
    """Remove the oldest cases' dumps until the cache holds at most `keep_mb` (never `keep`'s); what went."""
    folders = cached()
    total = sum(size_mb(f) for f in folders)
    gone = []
    for f in folders:
        if total <= keep_mb:
            break
        if keep is not None and f == keep:
            continue
        mb = size_mb(f)
        for x in f.iterdir():
            x.unlink()
        f.rmdir()
        if not any(f.parent.iterdir()):
            f.parent.rmdir()
        total -= mb
        gone.append(f"{f} ({mb:.0f} MB)")
    return gone


def take(qmp: Qmp, dest: Path, timeout: float = 300) -> Dump:
    """dump-guest-memory of a running or paused guest into `dest`; a failure is returned, never raised."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    start = time.monotonic()
    try:
        qmp.cmd("dump-guest-memory", timeout=30, paging=False, protocol=f"file:{dest}", detach=True, format=FORMAT)
        while True:
            state = qmp.cmd("query-dump", timeout=10)
            status = state.get("status")
            if status == "completed":
                break
            if status == "failed":
                raise GuestError(f"dump-guest-memory failed after {state.get('completed')} of {state.get('total')} bytes")
            if time.monotonic() - start > timeout:
                raise GuestError(f"dump-guest-memory not done in {timeout:.0f} s ({state.get('completed')} of "
                                 f"{state.get('total')} bytes)")
            time.sleep(0.2)
        reassemble(dest)
    except (GuestError, OSError, ValueError) as e:
        dest.unlink(missing_ok=True)
        return Dump(None, time.monotonic() - start, None, str(e))
    return Dump(dest, time.monotonic() - start, dest.stat().st_size / 2**20)


FLATTENED = b"makedumpfile"


def reassemble(path: Path) -> None:
    """QEMU writes kdump files in makedumpfile's flattened form (records of offset, size, data, for a
    pipe): rewritten in place as the plain file readers seek in (`makedumpfile -R`)."""
    with open(path, "rb") as f:
        if f.read(16).rstrip(b"\0") != FLATTENED:
            return
    plain = path.with_name(path.name + ".plain")
    with open(path, "rb") as f, open(plain, "wb") as out:
        f.seek(4096)  # the flattened header
        while len(head := f.read(16)) == 16:
            offset, size = struct.unpack(">qq", head)
            if offset < 0 or size < 0:  # the end mark
                break
            out.seek(offset)
            out.write(f.read(size))
    os.replace(plain, path)


KEPT_DIR = "dumps"  # in a case folder: the copies `testbed run --keep-dumps` (evidence.keep_dumps) makes


def keep(dump: Dump, case_dir: Path) -> Path | None:
    """A copy of a dump in the case folder (a hard link where the cache is on the same file system), so that
    it outlives the cache's bound; None when there is nothing to keep."""
    if dump.path is None:
        return None
    dest = case_dir / KEPT_DIR / dump.path.name
    dest.parent.mkdir(exist_ok=True)
    dest.unlink(missing_ok=True)
    try:
        os.link(dump.path, dest)
    except OSError:
        shutil.copyfile(dump.path, dest)
    return dest


def of_case(case_dir: Path, recorded: list[dict[str, Any]]) -> list[Path]:
    """A case's dumps that still exist: the case folder's own copies first, then those its history records
    (`recorded`: the memory-dump events' fields) in the cache."""
    out = sorted((case_dir / KEPT_DIR).glob("*.kdump")) if (case_dir / KEPT_DIR).is_dir() else []
    names = {p.name for p in out}
    for r in recorded:
        p = Path(r["path"]) if r.get("path") else None
        if p is not None and p.name not in names and p.exists():
            out.append(p)
            names.add(p.name)
    return out
