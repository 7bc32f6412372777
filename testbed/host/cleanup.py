"""The LIFO undo stack every resource registers on the moment it exists, and signal handling.

Teardown runs in reverse order, collects errors instead of stopping at the first, and runs on
SIGINT/SIGTERM too (both arrive as KeyboardInterrupt in the main thread). The stack knows no kind
of resource: finding leftovers for `testbed clean` is testbed/host/leftovers.py.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from typing import Any, TypeVar

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
        """Undo everything in reverse order. A stop request (SIGINT/SIGTERM) that arrives meanwhile cannot cut
        teardown short, and is never lost either: it is recorded while undoing and raised (KeyboardInterrupt)
        once everything is undone. (Ignoring signals here would drop a stop for good: a SIGTERM arriving while
        a nested stack, e.g. a probe VM's, was closed let the case run on to its deadline.) A stack closed
        by an undo of another (the faults' own, inside the case's) leaves the stop to the outermost close."""
        if not _in_main_thread() or _HOLDING:
            while (undo := self._pop()) is not None:
                self._run(undo)
            return self.errors
        held: list[tuple[int, float]] = []
        _HOLDING.append(held)
        old = {sig: signal.getsignal(sig) for sig in _STOPS}
        try:
            _swap(dict.fromkeys(_STOPS, lambda signum, frame: held.append((signum, time.monotonic()))), held)
            while (undo := self._pop()) is not None:
                self._run(undo)
        finally:
            _HOLDING.clear()
            _swap(old, held)
        if held:
            _note(*held[0])
            raise KeyboardInterrupt(f"signal {held[0][0]} (during teardown)")
        return self.errors

    def __enter__(self) -> Cleanup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


_STOPS = (signal.SIGINT, signal.SIGTERM)
# The main thread's close() that is holding stop requests (at most one: nested closes run inside it).
_HOLDING: list[list[tuple[int, float]]] = []


def _swap(handlers: dict[int, Any], held: list[tuple[int, float]]) -> None:
    """Install `handlers` for SIGINT/SIGTERM with both blocked meanwhile, so that no stop lands between two
    handlers; a stop already pending as they change is kept in `held`, never lost."""
    signal.pthread_sigmask(signal.SIG_BLOCK, set(_STOPS))
    try:
        for sig, handler in handlers.items():
            while True:
                try:
                    signal.signal(sig, handler)
                    break
                except KeyboardInterrupt as e:  # Python ran the previous handler for a stop already pending
                    held.append((_signum_of(e), time.monotonic()))
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(_STOPS))


# Ctrl-C reaches only the main thread. A matrix running cases in worker threads sets this, and each
# worker's case raises KeyboardInterrupt at its next check (between phases, every poll of the
# pressure loop), so its own Cleanup undoes what it made.
INTERRUPTED = threading.Event()


def check_interrupted() -> None:
    if INTERRUPTED.is_set() and not _in_main_thread():
        raise KeyboardInterrupt


_MAIN_PID = 0


@dataclass(frozen=True)
class StopRequest:
    signum: int
    at: float  # time.monotonic() when it arrived


# The first stop request this process received: the case's `interrupted` record names it.
STOP: list[StopRequest] = []


def _note(signum: int, at: float | None = None) -> None:
    if not STOP:
        STOP.append(StopRequest(signum, time.monotonic() if at is None else at))


def _signum_of(e: KeyboardInterrupt) -> int:
    text = str(e.args[0]) if e.args else ""
    return int(text.split()[1]) if text.startswith("signal ") and text.split()[1].isdigit() else int(signal.SIGINT)


def _on_signal(signum: int, frame: object) -> None:
    if os.getpid() != _MAIN_PID:
        # A forked helper (a library's child process) must never run our teardown a second time.
        os._exit(128 + signum)
    _note(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    """Make SIGINT and SIGTERM unwind (KeyboardInterrupt) so every `finally` and undo stack runs. Both are
    unblocked too: a launcher may hand its children a signal mask with them blocked (Python never unblocks
    a signal), and every thread started later inherits the main thread's mask."""
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def process_facts() -> dict[str, Any]:
    """Who this process is to signals: its ids and session, and the signals it blocks or ignores as read
    from /proc (a stop request that never arrives is explained by these, e.g. another process group)."""
    facts: dict[str, Any] = {"pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0), "sid": os.getsid(0)}
    try:
        for line in open("/proc/self/status"):
            key, _, value = line.partition(":")
            if key in ("SigBlk", "SigIgn"):
                mask = int(value.strip(), 16)
                facts[key] = [signal.Signals(n).name for n in range(1, 65) if mask >> (n - 1) & 1
                              and n in signal.Signals._value2member_map_]
    except OSError as e:
        facts["status_error"] = str(e)
    return facts


def stop_record(history: Any) -> dict[str, Any]:
    """The `interrupted` record's fields: which signal, when it arrived on the case's clock (a History's
    t0), and how long until teardown was done (now)."""
    if not STOP:
        return {}
    s = STOP[0]
    return {"signal": signal.Signals(s.signum).name, "received_t": round(s.at - history.t0, 3),
            "stopped_after_s": round(time.monotonic() - s.at, 3)}


T = TypeVar("T")


def wait_result(future: Future[T], slice_s: float = 0.5) -> T:
    """future.result() in slices: a wait with no limit in the main thread may not be woken by a signal the
    kernel handed to another thread, and the stop would wait for the future."""
    while not future.done():
        futures_wait([future], timeout=slice_s)  # a TimeoutError the function itself raised is its result
    return future.result()


def join(thread: threading.Thread, slice_s: float = 0.5) -> None:
    """thread.join() in slices, for the same reason."""
    while thread.is_alive():
        thread.join(slice_s)
