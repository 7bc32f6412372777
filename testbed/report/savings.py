"""What an adaptive run (`matrix --until-ci`) cost against fixed repeats on the same cells: read from
the run's own folders (case wall times, cells by axis values), never simulated.

The fixed-repeat cost of a cell is `fixed` runs at that cell's median case wall time (the same
machine, the same cases); with a fixed-repeat run of the same matrix given, its measured times are
used instead."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from testbed.errors import UsageError
from testbed.store.index import CaseRecord, read_run
from testbed.report.runs import cell_key, cell_label, resolve_run


@dataclass(frozen=True)
class CellCost:
    cell: str
    adaptive_cases: int
    adaptive_min: float
    fixed_cases: int
    fixed_min: float
    measured: bool  # fixed_min from a real fixed-repeat run, not cases x median

    @property
    def saved_min(self) -> float:
        return round(self.fixed_min - self.adaptive_min, 1)


@dataclass(frozen=True)
class Savings:
    run: str
    width: float
    max_repeat: int
    fixed: int
    cells: tuple[CellCost, ...]

    @property
    def adaptive_min(self) -> float:
        return round(sum(c.adaptive_min for c in self.cells), 1)

    @property
    def fixed_min(self) -> float:
        return round(sum(c.fixed_min for c in self.cells), 1)

    def to_dict(self) -> dict:
        return {"run": self.run, "until_ci": self.width, "max_repeat": self.max_repeat, "fixed_repeat": self.fixed,
                "adaptive_case_min": self.adaptive_min, "fixed_case_min": self.fixed_min,
                "saved_case_min": round(self.fixed_min - self.adaptive_min, 1),
                "cells": [{**asdict(c), "saved_min": c.saved_min} for c in self.cells]}


def _minutes(rec: CaseRecord) -> float | None:
    wall = (rec.verdict.get("figures") or {}).get("case_wall_s")
    return float(wall) / 60 if wall is not None else None


def _by_cell(cases: list[CaseRecord]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for rec in cases:
        m = _minutes(rec)
        if m is not None:
            out.setdefault(cell_key(rec), []).append(m)
    return out


def savings(ref: str, fixed: int | None = None, fixed_ref: str | None = None) -> Savings:
    """The adaptive run `ref` against `fixed` repeats per cell (default: its --max-repeat), or against
    the fixed-repeat run `fixed_ref` of the same cells."""
    path = resolve_run(ref)
    request = json.loads((path / "run.json").read_text()).get("request", {})
    if request.get("until_ci") is None:
        raise UsageError(f"run {ref}: not an adaptive run (its run.json has no until_ci); "
                         "give a run of `testbed matrix FILE --until-ci W`")
    width, max_repeat = float(request["until_ci"]), int(request.get("max_repeat") or 1)
    adaptive = _by_cell(read_run(path))
    if not adaptive:
        raise UsageError(f"run {ref}: no complete case with a case_wall_s figure")
    baseline = _by_cell(read_run(resolve_run(fixed_ref))) if fixed_ref else {}
    n = fixed or max_repeat
    cells = []
    for key, mins in adaptive.items():
        if fixed_ref:
            if key not in baseline:
                raise UsageError(f"run {fixed_ref} has no case of the cell {cell_label(key)}")
            other = baseline[key]
            cells.append(CellCost(cell_label(key), len(mins), round(sum(mins), 1), len(other), round(sum(other), 1), True))
        else:
            cells.append(CellCost(cell_label(key), len(mins), round(sum(mins), 1), n,
                                  round(n * statistics.median(mins), 1), False))
    return Savings(path.name, width, max_repeat, n if not fixed_ref else 0, tuple(cells))


def render(s: Savings) -> str:
    lines = [f"run {s.run}: --until-ci {s.width:g}, --max-repeat {s.max_repeat}"]
    for c in s.cells:
        how = "measured" if c.measured else "cases x this cell's median case time"
        lines.append(f"  {c.cell}: {c.adaptive_cases} case(s), {c.adaptive_min:.1f} case-min; fixed "
                     f"{c.fixed_cases} case(s): {c.fixed_min:.1f} case-min ({how}); saved {c.saved_min:+.1f}")
    total = round(s.fixed_min - s.adaptive_min, 1)
    share = f" ({100 * total / s.fixed_min:.0f}%)" if s.fixed_min else ""
    lines.append(f"saved {total:+.1f} case-minutes{share}: {s.adaptive_min:.1f} adaptive against {s.fixed_min:.1f} fixed")
    return "\n".join(lines)


def write(s: Savings, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(s.to_dict(), indent=2) + "\n")
    return out
