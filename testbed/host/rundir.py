"""A run's runtime folder (sockets, overlays) under paths.runtime_dir(), named by its tag, with the
owner's pid in it so `testbed clean` spares runs whose testbed process still lives."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from testbed.host.cleanup import Cleanup
from testbed.host.paths import runtime_dir


def make_rundir(tag: str, undo: Cleanup) -> Path:
    path = runtime_dir() / tag
    path.mkdir(parents=True, exist_ok=True)
    undo.push(f"runtime folder {path}", shutil.rmtree, path, True)
    (path / "owner.pid").write_text(f"{os.getpid()}\n")
    return path


def live_owner(tag: str) -> int | None:
    """The pid of the testbed process that owns `tag`, if it is still running."""
    try:
        pid = int((runtime_dir() / tag / "owner.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"testbed" in cmdline else None
