"""Host side of the guest agent channel: JSON lines over the VM's virtio-serial unix socket.

A reader thread dispatches the guest's messages: `ready`, 1 Hz `telemetry`, streamed `output`
lines and `result`s of commands. Guest strings arrive latin-1 escaped and are re-decoded as UTF-8.
"""

from __future__ import annotations

import itertools
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.errors import GuestError

log = logging.getLogger(__name__)


def _fix(s: str) -> str:
    try:
        return s.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return s


@dataclass
class ExecResult:
    argv: list[str]
    status: int
    stdout: str
    stderr: str
    timed_out: bool = False
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 0 and not self.timed_out

    def require(self, who: str) -> ExecResult:
        """This result, or GuestError naming `who`, the command, and the last lines it printed."""
        if not self.ok:
            why = "timed out" if self.timed_out else f"exited {self.status}"
            detail = (self.stderr or self.stdout).strip().splitlines()[-3:]
            raise GuestError(f"{who}: `{' '.join(self.argv)}` {why}: {' | '.join(detail)}")
        return self


class _Pending:
    def __init__(self, on_line: Callable[[str], None] | None):
        self.done = threading.Event()
        self.msg: dict[str, Any] | None = None
        self.on_line = on_line


class Agent:
    """Talks to tb-agent in one guest. `connect` once QEMU has created the socket."""

    def __init__(self, path: Path, name: str):
        self.path, self.name = path, name
        self.sock: socket.socket | None = None
        self.ready = threading.Event()
        self.ready_msg: dict[str, Any] = {}
        self.closed = threading.Event()
        self.last_seen = 0.0
        self.telemetry: dict[str, Any] | None = None
        self.telemetry_at = 0.0  # monotonic time the last telemetry arrived
        self.on_telemetry: list[Callable[[dict[str, Any]], None]] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def connect(self, deadline: float) -> None:
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(self.path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                if time.monotonic() > deadline:
                    raise GuestError(f"{self.name}: agent socket {self.path} never appeared") from None
                time.sleep(0.02)
        self.sock = s
        self._thread = threading.Thread(target=self._reader, name=f"agent-{self.name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self.sock:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
        self.closed.set()

    def _reader(self) -> None:
        assert self.sock
        f = self.sock.makefile("rb")
        try:
            for raw in f:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    log.warning("%s: unparsable agent line %r", self.name, raw[:200])
                    continue
                if not isinstance(msg, dict):
                    continue
                self.last_seen = time.monotonic()
                try:
                    self._dispatch(msg)
                except Exception:  # a broken callback must not end the channel: the guest is fine
                    log.exception("%s: handling %s failed", self.name, msg.get("type"))
        except OSError:
            pass
        finally:
            self.closed.set()
            with self._lock:
                pending = list(self._pending.values())
            for p in pending:
                p.done.set()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "telemetry":
            self.telemetry = msg
            self.telemetry_at = time.monotonic()
            for cb in list(self.on_telemetry):
                try:
                    cb(msg)
                except Exception:  # a broken monitor must not stop the channel
                    log.exception("telemetry callback failed")
        elif kind == "ready":
            self.ready_msg = msg
            self.ready.set()
        elif kind == "output":
            p = self._pending.get(msg.get("id", -1))
            if p and p.on_line:
                p.on_line(_fix(msg.get("line", "")))
        elif kind in ("result", "error", "pong"):
            with self._lock:
                p = self._pending.pop(msg.get("id", -1), None)
            if p:
                p.msg = msg
                p.done.set()
            elif kind == "error":
                log.warning("%s: agent error: %s", self.name, msg.get("message"))

    def _send(self, obj: dict[str, Any]) -> None:
        if not self.sock or self.closed.is_set():
            raise GuestError(f"{self.name}: agent channel is closed (did the VM die?)")
        try:
            with self._send_lock:  # runner, fault scheduler and rekeyer threads all send
                self.sock.sendall((json.dumps(obj) + "\n").encode())
        except OSError as e:
            raise GuestError(f"{self.name}: cannot write to agent: {e}") from None

    def fresh_telemetry(self, max_age_s: float = 3.0) -> dict[str, Any] | None:
        """The last telemetry if it is recent; None when the agent has gone quiet (stuck in the kernel)."""
        if self.telemetry is None or time.monotonic() - self.telemetry_at > max_age_s:
            return None
        return self.telemetry

    def start(self, argv: list[str], *, timeout: float = 0, on_line: Callable[[str], None] | None = None) -> Job:
        """Start argv in the guest; with `on_line`, stdout is streamed line by line instead of collected."""
        jid = next(self._ids)
        p = _Pending(on_line)
        with self._lock:
            self._pending[jid] = p
        self._send({"op": "exec", "id": jid, "argv": argv, "timeout": timeout, "stream": on_line is not None})
        return Job(self, jid, argv, p)

    def exec(self, argv: list[str], timeout: float = 60) -> ExecResult:
        """Run argv in the guest and wait for it (the guest kills it after `timeout` s)."""
        return self.start(argv, timeout=timeout).wait(timeout + 15)

    def ping(self, timeout: float = 5) -> float | None:
        """Round trip in seconds, or None when the agent did not answer in time."""
        jid = next(self._ids)
        p = _Pending(None)
        with self._lock:
            self._pending[jid] = p
        t = time.monotonic()
        self._send({"op": "ping", "id": jid})
        if p.done.wait(timeout) and p.msg:
            return time.monotonic() - t
        with self._lock:
            self._pending.pop(jid, None)
        return None


class Job:
    def __init__(self, agent: Agent, jid: int, argv: list[str], pending: _Pending):
        self.agent, self.id, self.argv, self._p = agent, jid, argv, pending

    def done(self) -> bool:
        return self._p.done.is_set()

    def kill(self, sig: int = 9) -> None:
        if not self.done():
            self.agent._send({"op": "kill", "id": self.id, "signal": sig})

    def wait(self, timeout: float | None = None) -> ExecResult:
        if not self._p.done.wait(timeout):
            raise GuestError(f"{self.agent.name}: no answer to `{' '.join(self.argv)}` within {timeout:.0f} s")
        msg = self._p.msg
        if msg is None:
            raise GuestError(f"{self.agent.name}: agent channel closed while running `{' '.join(self.argv)}`")
        if msg.get("type") == "error":
            raise GuestError(f"{self.agent.name}: {msg.get('message')}")
        return ExecResult(
            argv=self.argv,
            status=int(msg.get("status", -1)),
            stdout=_fix(msg.get("stdout", "")),
            stderr=_fix(msg.get("stderr", "")),
            timed_out=bool(msg.get("timed_out")),
            truncated=bool(msg.get("truncated")),
        )
