"""Watching a serial console log for the kernel's own words: OOM, hung tasks, allocation failures, swap errors."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from testbed.store.history import History

PATTERNS: dict[str, re.Pattern[str]] = {
    "oom-kill": re.compile(r"Out of memory: Killed process (\d+) \(([^)]+)\)"),
    "oom-invoked": re.compile(r"(\S+) invoked oom-killer"),
    "hung-task": re.compile(r"task (\S+):\d+ blocked for more than \d+ seconds|hung_task"),
    "alloc-failure": re.compile(r"(\S+): page allocation failure"),
    "swap-write-error": re.compile(r"Write-error on swap-device"),
    "swap-read-error": re.compile(r"Read-error on swap-device"),
    "io-error": re.compile(r"Buffer I/O error|blk_update_request: I/O error|I/O error, dev"),
    "nfs-not-responding": re.compile(r"nfs: server \S+ not responding"),
    "nfs-ok": re.compile(r"nfs: server \S+ OK"),
    "panic": re.compile(r"Kernel panic"),
    # a kernel crash's first words and where it was (the RIP's function), for the reason a died client gets
    # (at the start of the kernel's line: `traps: prog[pid] general protection fault` is a user program's)
    "oops": re.compile(r"^(?:\[\s*[0-9.]+\]\s*)?(?:Oops: .*|kernel BUG at .*|BUG: unable to handle .*|general protection fault.*)"),
    "oops-rip": re.compile(r"^(?:\[\s*[0-9.]+\]\s*)?RIP: [0-9a-f]{4}:(\S+)"),
    "oom-no-victim": re.compile(r"Out of memory and no killable processes"),
    "sigbus": re.compile(r"SIGBUS|Bus error"),
    # the NIC's transmit queue made no progress for the watchdog's period (5 s and more): that VM
    # could not send, whatever its stacks say
    "tx-timeout": re.compile(r"NETDEV WATCHDOG: .*transmit queue \d+ timed out"),
}


def scan_line(line: str) -> list[tuple[str, re.Match[str]]]:
    return [(name, m) for name, pat in PATTERNS.items() if (m := pat.search(line))]


class ConsoleWatcher:
    """Tails one console file in a thread; each finding becomes a `console` event."""

    def __init__(self, vm: str, path: Path, history: History):
        self.vm, self.path, self.history = vm, path, history
        self.offset = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"console-{vm}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.poll()  # the last lines written before QEMU stopped

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return
        cut = chunk.rfind(b"\n")
        if cut < 0:
            return
        self.offset += cut + 1
        for raw in chunk[: cut + 1].splitlines():
            line = raw.decode(errors="replace").strip()
            for name, m in scan_line(line):
                self.history.add("console", name, vm=self.vm, line=line[:300], groups=list(m.groups()))

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.poll()
