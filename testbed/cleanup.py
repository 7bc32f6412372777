"""The LIFO undo stack every resource registers on the moment it exists, and signal handling.

Teardown runs in reverse order, collects errors instead of stopping at the first, and runs on
SIGINT/SIGTERM too (both arrive as KeyboardInterrupt in the main thread).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Undo:
    what: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]


class Cleanup:
    """Undo stack: `push` right after acquiring, `close` (or leaving the `with`) undoes all in reverse."""

    def __init__(self) -> None:
        self._stack: list[Undo] = []
        self.errors: list[str] = []

    def push(self, what: str, fn: Callable[..., Any], *args: Any) -> Undo:
        undo = Undo(what, fn, args)
        self._stack.append(undo)
        return undo

    def discard(self, undo: Undo) -> None:
        """Forget an undo whose resource was released by other means."""
        if undo in self._stack:
            self._stack.remove(undo)

    def release(self, undo: Undo) -> None:
        """Run one undo now (out of order) and forget it."""
        self.discard(undo)
        self._run(undo)

    def _run(self, undo: Undo) -> None:
        try:
            undo.fn(*undo.args)
        except Exception as e:  # collected, reported together: one failing undo must not skip the rest
            self.errors.append(f"{undo.what}: {e}")
            log.warning("cleanup of %s failed: %s", undo.what, e)

    def close(self) -> list[str]:
        """Undo everything in reverse order; a second Ctrl-C cannot cut teardown short."""
        in_main = _in_main_thread()
        old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
        for sig in old:
            signal.signal(sig, signal.SIG_IGN)
        try:
            while self._stack:
                self._run(self._stack.pop())
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
        return self.errors

    def __enter__(self) -> Cleanup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# Ctrl-C reaches only the main thread. A matrix running cases in worker threads sets this, and each
# worker's case raises KeyboardInterrupt at its next check (between phases, every poll of the
# pressure loop), so its own Cleanup undoes what it made.
INTERRUPTED = threading.Event()


def check_interrupted() -> None:
    if INTERRUPTED.is_set() and not _in_main_thread():
        raise KeyboardInterrupt


_MAIN_PID = 0


def _on_signal(signum: int, frame: object) -> None:
    import os

    if os.getpid() != _MAIN_PID:
        # A forked helper (a library's child process) must never run our teardown a second time.
        os._exit(128 + signum)
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    """Make SIGINT and SIGTERM unwind (KeyboardInterrupt) so every `finally` and undo stack runs."""
    import os

    global _MAIN_PID
    _MAIN_PID = os.getpid()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


# ---- `testbed clean`: leftovers of earlier runs, found by our tag only --------------------------


def find_our_qemus() -> list[tuple[int, str]]:
    """(pid, name) of QEMU processes whose `-name` is one of our tags."""
    from pathlib import Path

    from testbed.tags import QEMU_NAME_RE

    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"qemu-system-x86_64"):
            continue
        for i, a in enumerate(argv[:-1]):
            if a == b"-name":
                name = argv[i + 1].decode(errors="replace").split(",")[0]
                if QEMU_NAME_RE.match(name):
                    found.append((int(p.name), name))
    return found


def find_our_netns() -> list[str]:
    import os

    from testbed.tags import TAG_RE

    try:
        names = os.listdir("/run/netns")
    except OSError:
        return []
    return sorted(n for n in names if TAG_RE.match(n))


def find_our_rundirs() -> list[str]:
    from testbed.paths import runtime_dir
    from testbed.tags import TAG_RE

    root = runtime_dir()
    if not root.is_dir():
        return []
    return sorted(str(p) for p in root.iterdir() if TAG_RE.match(p.name))


def make_rundir(tag: str, undo: Cleanup):  # type: ignore[no-untyped-def]
    """The run's runtime folder (sockets, overlays), with the owner's pid so `clean` spares live runs."""
    import os
    import shutil

    from testbed.paths import runtime_dir

    path = runtime_dir() / tag
    path.mkdir(parents=True, exist_ok=True)
    undo.push(f"runtime folder {path}", shutil.rmtree, path, True)
    (path / "owner.pid").write_text(f"{os.getpid()}\n")
    return path


def live_owner(tag: str) -> int | None:
    """The pid of the testbed process that owns `tag`, if it is still running."""
    from pathlib import Path

    from testbed.paths import runtime_dir

    try:
        pid = int((runtime_dir() / tag / "owner.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"testbed" in cmdline else None


def _is_our_qemu(pid: int, name: str) -> bool:
    return any(p == pid and n == name for p, n in find_our_qemus())


def clean_leftovers(dry_run: bool = False) -> list[str]:
    """Remove our QEMUs, namespaces and runtime folders of runs whose owner is gone; returns what
    was (or would be) removed. A run whose testbed process still lives is left alone."""
    import os
    import shutil
    import time

    from testbed.net.netns import delete_netns

    done = []
    live: dict[str, int] = {}

    def spared(tag: str) -> bool:
        pid = live_owner(tag)
        if pid and tag not in live:
            live[tag] = pid
            done.append(f"skipped live run {tag} (testbed pid {pid})")
        return pid is not None

    qemus = [(pid, name) for pid, name in find_our_qemus() if not spared(name.split("-")[0])]
    for pid, name in qemus:
        done.append(f"QEMU {name} (pid {pid})")
        if not dry_run:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    if qemus and not dry_run:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_is_our_qemu(pid, name) for pid, name in qemus):
            time.sleep(0.1)
        for pid, name in qemus:
            if _is_our_qemu(pid, name):  # still the same process: a reused pid is never killed
                os.kill(pid, signal.SIGKILL)
    for ns in find_our_netns():
        if spared(ns):
            continue
        done.append(f"network namespace {ns}")
        if not dry_run:
            res = delete_netns(ns)  # its helper processes (dnsmasq, iperf3, tcpdump) go with it
            if res.returncode != 0:
                done[-1] += f" (failed: {res.stderr.strip()})"
    for d in find_our_rundirs():
        if spared(os.path.basename(d)):
            continue
        done.append(f"runtime folder {d}")
        if not dry_run:
            shutil.rmtree(d, ignore_errors=True)
    return done
