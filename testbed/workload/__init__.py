"""Memory-pressure and writeback workloads; each runs the guest's tb-work, which verifies its data."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from testbed.storage.base import WORKFILE

if TYPE_CHECKING:  # type only: the scenario names the workload kinds, so importing it here would be a cycle
    from testbed.config.scenario import Scenario


@dataclass
class Progress:
    """What the workload has said so far (tb-work's JSON lines)."""

    done: int = 0
    total: int = 0
    pass_: int = 0
    phase: str = ""
    finished: dict[str, Any] | None = None
    mismatch: dict[str, Any] | None = None
    error: str | None = None
    other: list[str] = field(default_factory=list)

    def feed(self, line: str) -> bool:
        """Take one output line; True when it advanced progress."""
        try:
            msg = json.loads(line)
        except ValueError:
            self.other.append(line[:200])
            return False
        if "progress" in msg:
            advanced = msg["progress"] > self.done
            self.done, self.total = int(msg["progress"]), int(msg.get("total", self.total))
            self.pass_, self.phase = int(msg.get("pass", 0)), str(msg.get("phase", ""))
            return advanced
        if "mismatch" in msg:
            self.mismatch = msg["mismatch"]
        elif msg.get("done"):
            self.finished = msg
        elif "error" in msg:
            self.error = str(msg["error"])
        return False


class Workload:
    """A workload kind: the guest command it runs and the processes it runs as."""

    name: str
    processes: ClassVar[tuple[str, ...]] = ("tb-work",)

    def argv(self, sc: Scenario) -> list[str]:
        raise NotImplementedError


class Anon(Workload):
    """Anonymous memory beyond RAM: every page written, swapped out, read back and checked."""

    name = "anon"

    def argv(self, sc: Scenario) -> list[str]:
        size = sc.workload.total_mb(sc.client.mem_mb)
        return ["/usr/bin/tb-work", "anon", str(size), str(sc.workload.passes), str(sc.workload.seed)]


class FileWorkload(Workload):
    """mmap-shared or write: a file larger than RAM on the network storage, written back and verified."""

    def __init__(self, name: str):
        self.name = name

    def argv(self, sc: Scenario) -> list[str]:
        size = sc.workload.total_mb(sc.client.mem_mb)
        return ["/usr/bin/tb-work", self.name, WORKFILE, str(size), str(sc.workload.passes), str(sc.workload.seed)]


WORKLOADS: dict[str, Workload] = {"anon": Anon(), "mmap-shared": FileWorkload("mmap-shared"), "write": FileWorkload("write")}


def get(name: str) -> Workload:
    return WORKLOADS[name]
