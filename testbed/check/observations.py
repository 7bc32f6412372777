"""What the checker reads (Observations: what a case saw, as the runner or `testbed judge` gathered it) and
what it gives (Judgement). Typed: the facts read at a stall are a StallFacts, not a free mapping."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from testbed.check.evidence import Evidence
from testbed.check.mechanism import Mechanism, StallFacts
from testbed.config.scenario import Deadlines
from testbed.store.history import Event
from testbed.workload import Progress

if TYPE_CHECKING:
    from testbed.check.completeness import DeclaredFault


def is_ok(verdict: str, expected: str | None) -> bool:
    """A case is as expected when its verdict is its scenario's `expect:` (by default, recovered)."""
    return verdict == (expected or "recovered")


@dataclass
class Observations:
    deadlines: Deadlines
    progress: Progress
    events: list[Event]
    rows: list[dict[str, Any]]
    setup_error: str | None = None
    ended_by: str = ""  # finished | stall | total-deadline | client-died | workload-failed
    workload_status: int | None = None
    workload_stderr: str = ""
    pressure_start: float | None = None
    pressure_end: float | None = None
    stall_since: float | None = None
    client_answers: bool | None = None
    # Client processes the workload and storage path depend on, as the scenario's roles declare them
    # (Scenario.path_processes): the OOM killer taking one of these breaks the path itself.
    path_processes: tuple[str, ...] = ()
    # Task names (or globs) a command workload loses to the OOM killer by design (the scenario's
    # workload.expected_oom_victims): their kills are reported, never the `oom` verdict.
    expected_victims: tuple[str, ...] = ()
    # At a stall (or a client that stopped answering): the parsed sysrq dump, and the facts the
    # mechanism rules read (protocol, the path helpers' states at the stall).
    evidence: Evidence | None = None
    facts: StallFacts = field(default_factory=StallFacts)
    # What the scenario declared, compared with what was recorded (testbed/check/completeness.py).
    declared_faults: tuple[DeclaredFault, ...] = ()
    declared_verify: bool = False
    # What the reader found missing or cut short in the case's files (a folder read back: casefile.py).
    incomplete: list[str] = field(default_factory=list)


@dataclass
class Judgement:
    verdict: str
    reasons: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    mechanism: Mechanism | None = None
    rule: str = ""  # the row of the rule table that decided (testbed/check/rules.py)
