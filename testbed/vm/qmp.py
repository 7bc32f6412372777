"""QMP through the qemu.qmp library: status, stop/cont, sysrq by send-key, quit.

Each monitor owns an asyncio loop in its own thread, so monitors, fault injectors and teardown can
all call it from any thread (qemu.qmp's legacy wrapper ties one loop to the thread that made it).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from testbed.errors import GuestError


class Qmp:
    def __init__(self, path: Path, name: str):
        self.path, self.name = path, name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: QMPClient | None = None

    def _call(self, coro: Any, timeout: float) -> Any:
        assert self._loop
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except FutureTimeout:
            fut.cancel()
            raise GuestError(f"{self.name}: QMP did not answer within {timeout:.0f} s") from None

    def connect(self, deadline: float) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"qmp-{self.name}", daemon=True)
        self._thread.start()

        async def make() -> QMPClient:
            return QMPClient(self.name)

        while True:
            self._client = self._call(make(), 5)
            try:
                self._call(self._client.connect(str(self.path)), 5)
                return
            except Exception as e:  # qemu.qmp raises ConnectError wrapping the OSError
                if time.monotonic() > deadline:
                    raise GuestError(f"{self.name}: QMP socket {self.path} not answering: {e}") from None
                time.sleep(0.05)

    def cmd(self, command: str, timeout: float = 10, **args: Any) -> Any:
        if not self._client or not self._loop:
            raise GuestError(f"{self.name}: QMP is not connected")
        try:
            return self._call(self._client.execute(command, args or None), timeout)
        except GuestError:
            raise
        except Exception as e:
            raise GuestError(f"{self.name}: QMP {command} failed: {e}") from None

    def status(self) -> str:
        return str(self.cmd("query-status", timeout=5).get("status", "unknown"))

    def stop(self) -> None:
        self.cmd("stop")

    def cont(self) -> None:
        self.cmd("cont")

    def sysrq(self, key: str) -> None:
        """Alt+SysRq+key on the guest's PS/2 keyboard: needs nothing from guest userspace."""
        keys = [{"type": "qcode", "data": k} for k in ("alt", "sysrq", key)]
        self.cmd("send-key", keys=keys, **{"hold-time": 100})

    def quit(self) -> None:
        self.cmd("quit", timeout=5)

    def close(self) -> None:
        if self._loop is None:
            return
        if self._client:
            try:
                self._call(self._client.disconnect(), 5)
            except Exception:
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(5)
        self._loop.close()
        self._loop, self._client = None, None
