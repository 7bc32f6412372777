"""Controls: cases whose scenario sets `expect:`. Each must give its expect on every run; a miss is a
bug in the testbed or a finding, never noise. `unknown` is a miss (the control told nothing) unless
the control expects it, and a control that should have run but left no record is a miss too: a
missing record is `unknown`, never a pass."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from testbed.config.strict import load_yaml
from testbed.index import CaseRecord


@dataclass(frozen=True)
class ControlMiss:
    control: str  # the scenario's name
    expected: str
    verdict: str  # "no record" when the control left none
    case: str = ""  # RUN/CASE of the miss
    reasons: list[str] = field(default_factory=list)

    def line(self) -> str:
        where = f" ({self.case})" if self.case else ""
        why = f": {self.reasons[0]}" if self.reasons else ""
        return f"control {self.control} gave {self.verdict}, expected {self.expected}{where}{why}"

    def to_dict(self) -> dict[str, object]:
        return {"control": self.control, "expected": self.expected, "verdict": self.verdict, "case": self.case,
                "reasons": self.reasons}


def control_name(path: Path) -> str:
    """The scenario name a control file gives its cases."""
    doc = load_yaml(path)
    return str(doc.get("name") or path.stem) if isinstance(doc, dict) else path.stem


def misses(cases: Iterable[CaseRecord], required: Iterable[str] = ()) -> list[ControlMiss]:
    """Every control case whose verdict is not its expect, and every required control (by scenario
    name) with no case at all."""
    out: list[ControlMiss] = []
    seen: set[str] = set()
    for c in cases:
        expected = c.verdict.get("expected")
        if not expected:
            continue
        name = str(c.verdict.get("scenario") or c.case_id)
        seen.add(name)
        if c.verdict.get("verdict") != expected:
            out.append(ControlMiss(name, str(expected), str(c.verdict.get("verdict")), f"{c.run}/{c.case_id}",
                                   [str(r) for r in c.verdict.get("reasons") or []][:2]))
    out += [ControlMiss(name, "its expect", "no record") for name in required if name not in seen]
    return out
