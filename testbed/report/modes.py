"""The same cells run in two ways (cold boots vs ready snapshots): per cell, the failure rate of each
with the interval of their difference, and the median figures side by side. Speed must change no
answer: a difference whose interval excludes 0, or figures far apart, is a bug to find."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.report.stats import CellRate, failed, figure, judged, median, newcombe, swap_mb_s

FIGURES = ("workload_wall_s", "swap_mb_s", "time_to_recover_s")


def figure_of(v: dict[str, Any], name: str) -> float | None:
    return swap_mb_s(v) if name == "swap_mb_s" else figure(v, name)


@dataclass
class CellComparison:
    cell: str
    rates: dict[str, CellRate]  # mode -> rate
    difference: tuple[float, float] | None  # interval of rate(first mode) - rate(second mode)
    figures: dict[str, dict[str, float | None]]  # figure -> mode -> median

    def to_dict(self) -> dict[str, Any]:
        return {"cell": self.cell, "rates": {m: r.to_dict() for m, r in self.rates.items()},
                "difference_interval": list(self.difference) if self.difference else None, "figures": self.figures}


def compare(cells: dict[str, dict[str, list[Path]]]) -> list[CellComparison]:
    """cells: cell label -> mode -> case folders (finished ones are read, others skipped)."""
    out = []
    for label, by_mode in cells.items():
        verdicts = {m: [v for d in dirs if (v := _verdict(d))] for m, dirs in by_mode.items()}
        rates = {m: CellRate.from_verdicts(vs) for m, vs in verdicts.items()}
        modes = list(rates)
        diff = None
        if len(modes) == 2:
            a, b = rates[modes[0]], rates[modes[1]]
            diff = newcombe(a.failures, a.runs, b.failures, b.runs)
        # Figures of the runs that went as expected: a deadlock's "workload wall" is the detector's wait.
        good = {m: [v for v in vs if judged(v) and not failed(v)] for m, vs in verdicts.items()}
        figs = {f: {m: _round(median([x for v in vs if (x := figure_of(v, f)) is not None])) for m, vs in good.items()}
                for f in FIGURES}
        out.append(CellComparison(label, rates, diff, figs))
    return out


def _verdict(case: Path) -> dict[str, Any] | None:
    try:
        return json.loads((case / "verdict.json").read_text())
    except (OSError, ValueError):
        return None


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def render(comps: list[CellComparison]) -> str:
    lines = ["  (figures: medians over the runs that went as expected)"]
    for c in comps:
        modes = list(c.rates)
        parts = [f"{m} {r.failures}/{r.runs} [{r.interval[0]:.0%}, {r.interval[1]:.0%}]"
                 + (f" (+{r.unknowns} unknown)" if r.unknowns else "") for m, r in c.rates.items()]
        line = f"  {c.cell}: failures " + " vs ".join(parts)
        if c.difference:
            lo, hi = c.difference
            verdict = "no difference shown" if lo <= 0 <= hi else "DIFFERENCE beyond noise"
            line += f"; {modes[0]} - {modes[1]} in [{lo:+.0%}, {hi:+.0%}] ({verdict})"
        lines.append(line)
        for f, by_mode in c.figures.items():
            lines.append(f"    {f:20}" + "".join(f"{m} {'-' if v is None else v:>8}   " for m, v in by_mode.items()))
    return "\n".join(lines)
