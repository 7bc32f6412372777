"""The LIFO undo stack every resource registers on the moment it exists, and signal handling.

Teardown runs in reverse order, collects errors instead of stopping at the first, and runs on
SIGINT/SIGTERM too (both arrive as KeyboardInterrupt in the main thread). The stack knows no kind
of resource: finding leftovers for `testbed clean` is testbed/leftovers.py.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(eq=False)  # one undo is itself, never another with equal fields
class Undo:
    what: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]


class Cleanup:
    """Undo stack: `push` right after acquiring, `close` (or leaving the `with`) undoes all in reverse.

    Threads may push and discard while another thread closes it; a push after `close` began its
    last pass is undone at once (the resource came too late to be kept)."""

    def __init__(self) -> None:
        self._stack: list[Undo] = []
        self._lock = threading.Lock()
        self._closed = False
        self.errors: list[str] = []

    def push(self, what: str, fn: Callable[..., Any], *args: Any) -> Undo:
        undo = Undo(what, fn, args)
        with self._lock:
            late = self._closed
            if not late:
                self._stack.append(undo)
        if late:
            self._run(undo)
        return undo

    def discard(self, undo: Undo) -> None:
        """Forget an undo whose resource was released by other means."""
        with self._lock:
            if undo in self._stack:
                self._stack.remove(undo)

    def _pop(self) -> Undo | None:
        with self._lock:
            if self._stack:
                return self._stack.pop()
            self._closed = True
            return None

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
            while (undo := self._pop()) is not None:
                self._run(undo)
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
    if os.getpid() != _MAIN_PID:
        # A forked helper (a library's child process) must never run our teardown a second time.
        os._exit(128 + signum)
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    """Make SIGINT and SIGTERM unwind (KeyboardInterrupt) so every `finally` and undo stack runs."""
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
