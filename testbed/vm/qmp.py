"""QMP through the qemu.qmp library: status, stop/cont, sysrq by send-key, quit."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from qemu.qmp.legacy import QEMUMonitorProtocol

from testbed.errors import GuestError


class Qmp:
    def __init__(self, path: Path, name: str):
        self.path, self.name = path, name
        self._mon: QEMUMonitorProtocol | None = None
        self._lock = threading.Lock()

    def connect(self, deadline: float) -> None:
        while True:
            try:
                mon = QEMUMonitorProtocol(str(self.path))
                mon.connect()
                mon.settimeout(10)
                self._mon = mon
                return
            except (OSError, Exception) as e:  # qemu.qmp raises its own ConnectError wrapping OSError
                if time.monotonic() > deadline:
                    raise GuestError(f"{self.name}: QMP socket {self.path} not answering: {e}") from None
                time.sleep(0.05)

    def cmd(self, command: str, **args: Any) -> Any:
        if not self._mon:
            raise GuestError(f"{self.name}: QMP is not connected")
        with self._lock:
            try:
                return self._mon.cmd(command, **args)
            except Exception as e:
                raise GuestError(f"{self.name}: QMP {command} failed: {e}") from None

    def status(self) -> str:
        return str(self.cmd("query-status").get("status", "unknown"))

    def stop(self) -> None:
        self.cmd("stop")

    def cont(self) -> None:
        self.cmd("cont")

    def sysrq(self, key: str) -> None:
        """Alt+SysRq+key on the guest's PS/2 keyboard: needs nothing from guest userspace."""
        keys = [{"type": "qcode", "data": k} for k in ("alt", "sysrq", key)]
        self.cmd("send-key", keys=keys, **{"hold-time": 100})

    def quit(self) -> None:
        self.cmd("quit")

    def close(self) -> None:
        if self._mon:
            try:
                self._mon.close()
            except Exception:
                pass
            self._mon = None
