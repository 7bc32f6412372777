"""Memory-pressure and writeback workloads: the guest's tb-work, which verifies its data, or any command
(kind `command`), run in a cgroup of its own whose CPU time is its progress."""

from __future__ import annotations

import fnmatch
import json
import posixpath
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from testbed.storage.base import MOUNT, WORKFILE

if TYPE_CHECKING:  # type only: the scenario names the workload kinds, so importing it here would be a cycle
    from testbed.config.scenario import Scenario, WorkloadSpec

# The cgroup v2 group a command workload runs in (tb-init mounts cgroup2; tb-agent reports its cpu.stat
# in every telemetry message as `workload_cpu`).
CGROUP = "/sys/fs/cgroup/tb.workload"
# What a command's argv may name: filled in when the case starts.
PLACEHOLDERS = ("mount", "mem_mb", "size_mb", "vcpus")
COMM_LEN = 15  # the kernel's task name (what an OOM report prints) is cut to this
# A step of a command's CPU progress: 50 ms of user CPU. A stuck command's helper threads (fio's status
# thread) still wake and use a trickle of CPU, which must not pass for progress: at 0.2 ms a second it
# makes no step within a progress deadline (60 s and more), while a command doing work makes many.
CPU_STEP_US = 50_000


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
        if not isinstance(msg, dict):
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

    def feed_cpu(self, stat: dict[str, Any]) -> bool:
        """tb-work says its own progress: the CPU time of a command's group is not read."""
        return False

    def detail(self) -> str:
        return f"pass {self.pass_ + 1} {self.phase}"

    def last_words(self) -> str:
        """What the workload printed last that was not progress (for a failure without a known cause)."""
        return self.other[-1] if self.other else ""

    def summary(self) -> str:
        """What finishing meant, for the verdict's reasons."""
        f = self.finished or {}
        by = f" by {f['processes']} processes" if f.get("processes") else ""
        return f"workload finished and verified {f.get('pages')} pages x {f.get('passes')} passes{by}"

    def figures(self) -> dict[str, Any]:
        return {"progress_pages": self.done, "progress_total": self.total}


@dataclass
class CommandProgress(Progress):
    """A command's progress: its group's user CPU time (time in reclaim is system time and does not
    count) and/or its output lines, as `workload.progress` chooses; never elapsed time. `done` is their
    sum (CPU in steps of CPU_STEP_US), so it stops when both stop. Its output is kept as lines, never parsed."""

    sources: tuple[str, ...] = ("cpu",)
    user_us: int = 0
    system_us: int = 0
    lines: int = 0
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    def _update(self) -> None:
        self.done = ((self.user_us // CPU_STEP_US) if "cpu" in self.sources else 0) + (self.lines if "output" in self.sources else 0)

    def feed(self, line: str) -> bool:
        self.lines += 1
        self.tail.append(line[:200])
        self._update()
        return "output" in self.sources

    def feed_cpu(self, stat: dict[str, Any]) -> bool:
        user, system = stat.get("user_usec"), stat.get("system_usec")
        if not isinstance(user, int):
            return False
        advanced = user // CPU_STEP_US > self.user_us // CPU_STEP_US
        self.user_us = max(self.user_us, user)
        if isinstance(system, int):
            self.system_us = max(self.system_us, system)
        self._update()
        return advanced and "cpu" in self.sources

    def last_words(self) -> str:
        return self.tail[-1] if self.tail else ""

    def detail(self) -> str:
        return f"command: {self.user_us / 1e6:.1f} s user CPU, {self.lines} output lines"

    def summary(self) -> str:
        f = self.finished or {}
        verify = f.get("verify")
        checked = (f"; verification `{shorten(verify['argv'])}` exited 0" if verify
                   else "; no verification command (its exit status is the only check)")
        return f"command exited 0 after {self.user_us / 1e6:.1f} s of user CPU and {self.lines} output lines{checked}"

    def figures(self) -> dict[str, Any]:
        return {**super().figures(), "command_user_cpu_s": round(self.user_us / 1e6, 2),
                "command_system_cpu_s": round(self.system_us / 1e6, 2), "command_output_lines": self.lines}


def shorten(argv: list[str], width: int = 72) -> str:
    """A command line for a reason: whole up to `width` characters, else cut with an ellipsis."""
    text = " ".join(argv)
    return text if len(text) <= width else text[: width - 1] + "…"


def expected_victim(comm: str, declared: tuple[str, ...]) -> bool:
    """An OOM victim's task name (cut to 15 characters by the kernel) against the names a scenario
    declares its command loses to the OOM killer by design: a whole name (`stress-ng-bigheap` is
    `stress-ng-bighe` in the report) or a glob (`stress-ng-*`)."""
    return any(comm == d[:COMM_LEN] or fnmatch.fnmatchcase(comm, d) for d in declared)


class Workload:
    """A workload kind: the guest command it runs and the processes it runs as."""

    name: str
    processes: ClassVar[tuple[str, ...]] = ("tb-work",)
    # Its progress is its group's CPU time, in every telemetry message (else: its own output lines).
    progress_from_telemetry: ClassVar[bool] = False
    # It ends by its exit status (the runner records its end and runs its verification), rather than by
    # saying so itself (tb-work's `done` line).
    ends_by_exit: ClassVar[bool] = False

    def argv(self, sc: Scenario) -> list[str]:
        raise NotImplementedError

    def command(self, sc: Scenario) -> list[str]:
        """What the user asked to run (the argv without our wrapper), for the records."""
        return self.argv(sc)

    def verification(self, sc: Scenario) -> list[str]:
        """The command that checks its data after it exited 0 (empty: none)."""
        return []

    def path_processes(self, spec: WorkloadSpec) -> tuple[str, ...]:
        return self.processes

    def new_progress(self, spec: WorkloadSpec) -> Progress:
        return Progress()


class Anon(Workload):
    """Anonymous memory beyond RAM: every page written, swapped out, read back and checked."""

    name = "anon"

    def argv(self, sc: Scenario) -> list[str]:
        size = sc.workload.total_mb(sc.client.mem_mb)
        return ["/usr/bin/tb-work", "anon", str(size), str(sc.workload.passes), str(sc.workload.seed)]


class Readers(Workload):
    """Mel Gorman's swap-over-NBD shape: anonymous mappings (4 x RAM in his test) shared out over many
    processes (8 per CPU), each written once and then read linearly in a loop; every page verified."""

    name = "readers"

    def argv(self, sc: Scenario) -> list[str]:
        wl = sc.workload
        return ["/usr/bin/tb-work", "readers", str(wl.readers(sc.client.vcpus)), str(wl.total_mb(sc.client.mem_mb)),
                str(wl.passes), str(wl.seed)]


class FileWorkload(Workload):
    """mmap-shared or write: a file larger than RAM on the network storage, written back and verified."""

    def __init__(self, name: str):
        self.name = name

    def argv(self, sc: Scenario) -> list[str]:
        size = sc.workload.total_mb(sc.client.mem_mb)
        return ["/usr/bin/tb-work", self.name, WORKFILE, str(size), str(sc.workload.passes), str(sc.workload.seed)]


def fill(argv: tuple[str, ...], sc: Scenario) -> list[str]:
    """A command's argv with its placeholders filled in ({mount}, {mem_mb}, {size_mb}, {vcpus})."""
    values = {"mount": MOUNT, "mem_mb": sc.client.mem_mb, "size_mb": sc.workload.total_mb(sc.client.mem_mb),
              "vcpus": sc.client.vcpus}
    return [a.format_map(values) for a in argv]


def bad_placeholder(arg: str) -> str | None:
    """Why an argv item cannot be filled in, or None."""
    try:
        arg.format_map({k: 0 for k in PLACEHOLDERS})
    except KeyError as e:
        return f"unknown placeholder {{{e.args[0]}}} (known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})"
    except (ValueError, IndexError, AttributeError) as e:
        return f"cannot be filled in ({e}); write a literal brace as {{{{ or }}}}"
    return None


class Command(Workload):
    """Any command, run in the client under the same monitors: `tb-work run` puts it in its own cgroup
    (its CPU time is its progress) and execs it. Success is its exit status, then the verification
    command's if the scenario gives one."""

    name = "command"
    progress_from_telemetry = True
    ends_by_exit = True

    def argv(self, sc: Scenario) -> list[str]:
        return ["/usr/bin/tb-work", "run", CGROUP, *fill(sc.workload.argv, sc)]

    def command(self, sc: Scenario) -> list[str]:
        return fill(sc.workload.argv, sc)

    def verification(self, sc: Scenario) -> list[str]:
        return fill(sc.workload.verify_argv, sc) if sc.workload.verify_argv else []

    def path_processes(self, spec: WorkloadSpec) -> tuple[str, ...]:
        return (posixpath.basename(spec.argv[0])[:COMM_LEN],) if spec.argv else ()

    def new_progress(self, spec: WorkloadSpec) -> Progress:
        return CommandProgress(sources=tuple(spec.progress))


WORKLOADS: dict[str, Workload] = {"anon": Anon(), "mmap-shared": FileWorkload("mmap-shared"), "write": FileWorkload("write"),
                                  "readers": Readers(), "command": Command()}


def get(name: str) -> Workload:
    return WORKLOADS[name]
