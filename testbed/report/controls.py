"""Controls: cases whose scenario sets `expect:`. Each must give its expect on every run; a miss is a
bug in the testbed or a finding, never noise. `unknown` is a miss (the control told nothing) unless
the control expects it, and a control that should have run but left no record is a miss too: a
missing record is `unknown`, never a pass."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from testbed.config.strict import load_yaml
from testbed.store.index import CaseRecord
from testbed.report.stats import wilson


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


@dataclass(frozen=True)
class ControlRate:
    """How often a control gave its expect over repeated runs: `as_expected` of `runs` (every run counts;
    `unknown` is a miss), the 95 % Wilson interval of its miss rate, and the host's slowdown factors."""

    control: str
    expected: str
    runs: int
    as_expected: int
    verdicts: dict[str, int]
    miss_interval: tuple[float, float]
    slowdown: tuple[float, float] | None  # lowest and highest factor its cases measured

    def to_dict(self) -> dict[str, object]:
        return {"control": self.control, "expected": self.expected, "runs": self.runs, "as_expected": self.as_expected,
                "verdicts": self.verdicts, "miss_rate_95": list(self.miss_interval),
                "slowdown": list(self.slowdown) if self.slowdown else None}

    def line(self) -> str:
        lo, hi = self.miss_interval
        slow = f"slowdown {self.slowdown[0]}-{self.slowdown[1]}" if self.slowdown else "slowdown not recorded"
        seen = ", ".join(f"{v} {n}" for v, n in sorted(self.verdicts.items()))
        return (f"{self.control:28} expect {self.expected:10} {self.as_expected}/{self.runs} as expected "
                f"(miss rate 95 % [{lo:.0%}, {hi:.0%}]; {seen}; {slow})")


def case_slowdown(path: Path) -> float | None:
    """The slowdown factor a case measured (its `slowdown` fact), if recorded."""
    try:
        for line in (path / "events.jsonl").read_text().splitlines():
            if '"name": "slowdown"' in line:
                return float(json.loads(line)["factor"])
    except (OSError, ValueError, KeyError):
        return None
    return None


def rates(cases: Iterable[CaseRecord]) -> list[ControlRate]:
    by: dict[str, list[CaseRecord]] = {}
    for c in cases:
        if c.verdict.get("expected"):
            by.setdefault(str(c.verdict.get("scenario") or c.case_id), []).append(c)
    out = []
    for name, cs in by.items():
        verdicts: dict[str, int] = {}
        for c in cs:
            verdicts[str(c.verdict.get("verdict"))] = verdicts.get(str(c.verdict.get("verdict")), 0) + 1
        expected = str(cs[0].verdict["expected"])
        ok = sum(1 for c in cs if c.verdict.get("verdict") == expected)
        factors = [f for c in cs if (f := case_slowdown(c.path)) is not None]
        out.append(ControlRate(name, expected, len(cs), ok, verdicts, wilson(len(cs) - ok, len(cs)),
                               (min(factors), max(factors)) if factors else None))
    return out
