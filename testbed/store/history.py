"""The case history: every phase, fact, fault operation, probe and console finding, as timed events.

Written to events.jsonl as it happens (so a crash keeps what was seen) and kept in memory for the
checker, the way Jepsen records nemesis operations beside client operations.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Event:
    t: float  # seconds since the case started
    kind: str  # phase | fact | fault | probe | console | workload | evidence | error | verdict
    name: str
    data: dict[str, Any] = field(default_factory=dict)


class History:
    def __init__(self, path: Path | None):
        self.path = path
        self.t0 = time.monotonic()
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._file = open(path, "a") if path else None
        self.write_error: OSError | None = None  # the first failed write (a full disk): the case stops on it

    def now(self) -> float:
        return time.monotonic() - self.t0

    def add(self, kind: str, name: str, **data: Any) -> Event:
        ev = Event(round(self.now(), 3), kind, name, data)
        with self._lock:
            self.events.append(ev)
            if self._file:
                row = {"t": ev.t, "wall": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                       "kind": kind, "name": name, **data}
                try:
                    self._file.write(json.dumps(row, default=str) + "\n")
                    self._file.flush()
                except OSError as e:  # kept in memory; the runner ends the case on it
                    self.write_error = self.write_error or e
        return ev

    def find(self, kind: str, name: str | None = None) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.kind == kind and (name is None or e.name == name)]

    def close(self) -> None:
        if self._file:
            try:
                self._file.close()
            except OSError as e:
                self.write_error = self.write_error or e
            self._file = None
