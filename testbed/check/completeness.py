"""Whether a case's history holds what its scenario declared, before any verdict is claimed from it:
every declared fault injected (and healed, when it declares a duration), the workload's declared
amount verified, a declared verification recorded, the client's answer after the pressure recorded,
how the pressure ended recorded. What is missing is named; the rule "history incomplete"
(testbed/check/rules.py) makes it `unknown`. A missing record is never read as its happy value.

The files a folder must hold (events closed by their final record, the timeline to the end of the
pressure, the workload's own lines) are checked where the folder is read (testbed/check/casefile.py)
and arrive here as `Observations.incomplete`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from testbed.check.observations import Observations
from testbed.faults import outcome
from testbed.store.history import Event

if TYPE_CHECKING:
    from testbed.config.scenario import Scenario


@dataclass(frozen=True)
class DeclaredFault:
    """A fault of the scenario's `faults:` list, as the checker compares it with what was recorded."""

    index: int
    kind: str
    at_s: float
    duration_s: float | None
    optional: bool = False  # the scenario lets the case end before its time


def declared_faults(sc: Scenario) -> tuple[DeclaredFault, ...]:
    return tuple(DeclaredFault(i, f.kind, f.at_s, f.duration_s, f.optional) for i, f in enumerate(sc.faults))


def declared_verify(sc: Scenario) -> bool:
    from testbed import workload  # the workload kinds say whether they verify

    return bool(workload.get(sc.workload.kind).verification(sc))


def missing(obs: Observations) -> list[str]:
    """What the case's history lacks of what its scenario declared (empty: complete)."""
    out = list(obs.incomplete)
    if obs.pressure_start is None:  # never reached the pressure: the setup rule speaks
        return out
    if not obs.ended_by:
        out.append("no record of how the pressure phase ended (exit, stall, channel closed, deadline)")
    out += _faults(obs)
    if obs.ended_by == "finished" and obs.workload_status == 0:
        out += _finished(obs)
    return out


def _faults(obs: Observations) -> list[str]:
    h = outcome.read(obs.events)
    by_key = {(o.kind, o.index): o for o in h.outcomes}
    out = []
    for f in obs.declared_faults:
        o = by_key.get((f.kind, f.index)) or by_key.get((f.kind, None))  # folders before indexes: by kind
        name = f"fault {f.kind} (faults[{f.index}], at_s {f.at_s:g})"
        started = o is not None and (o.injected_t is not None or any(x.op == "inject" for x in o.failures))
        if not started:
            late = _not_started(obs.events, f)
            if late and f.optional:  # declared so: the case may end first
                continue
            out.append(f"{name} never started: {late}" if late else f"{name}: no record of its injection")
            continue
        assert o is not None
        healed = o.healed_t is not None or any(x.op == "heal" for x in o.failures)
        if f.duration_s is not None and o.injected_t is not None and not healed:
            out.append(f"{name}: injected at t={o.injected_t:.1f} s, declared to heal after {f.duration_s:g} s, "
                       "and no heal is recorded")
    return out


def _not_started(events: list[Event], f: DeclaredFault) -> str | None:
    e = next((e for e in events if e.kind == "fault" and e.name == f"{f.kind}:not-started"
              and e.data.get("index") == f.index), None)
    return str(e.data.get("reason") or "the case ended before its time") if e else None


def _finished(obs: Observations) -> list[str]:
    """A workload that says it finished: what it verified is what was asked, and the client answered."""
    out = []
    p = obs.progress
    if obs.client_answers is None:
        out.append("no record of the client answering after the pressure (probe client-answers)")
    asked = declared_amount(obs.events)
    f = p.finished or {}
    if asked is not None and f:
        got = (f.get("pages"), f.get("passes"))
        if got != asked:
            out.append(f"tb-work said done with {got[0]} pages x {got[1]} passes; its argv asked for "
                       f"{asked[0]} x {asked[1]}")
    if obs.declared_verify and f and not f.get("verify") and not p.mismatch:
        out.append("the scenario declares a verification command and no verification is recorded")
    return out


def declared_amount(events: list[Event]) -> tuple[int, int] | None:
    """(pages, passes) tb-work was asked for, from the argv the workload phase recorded (its size in MB,
    passes and seed are its last three arguments); None for a command workload."""
    start = next((e for e in events if (e.kind, e.name) == ("phase", "workload")), None)
    argv = (start.data.get("argv") if start else None) or []
    if not argv or not str(argv[0]).endswith("tb-work") or len(argv) < 4:
        return None
    try:
        return int(argv[-3]) * 256, int(argv[-2])
    except ValueError:
        return None
