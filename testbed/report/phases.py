"""Where a case's time goes, read from its events: each phase (images, network, NAS, client,
storage, workload, evidence, teardown) from its start to the next one's, the last to the case's
final event; over runs, the median per phase, case wall / workload wall, and cases per hour. The
baseline that faster cases (restored VMs, a kept NAS) are measured against."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from testbed.index import read_run
from testbed.report.runs import resolve_run

ORDER = ("images", "network", "nas", "client", "storage", "workload", "evidence", "teardown")


def phase_durations(case_dir: Path) -> dict[str, float]:
    """Seconds per phase of one case (a phase entered twice counts its total)."""
    f = case_dir / "events.jsonl"
    if not f.exists():
        return {}
    marks: list[tuple[float, str]] = []
    last = 0.0
    for line in f.read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        t = float(e.get("t", 0.0))
        last = max(last, t)
        if e.get("kind") == "phase":
            marks.append((t, str(e.get("name"))))
    out: dict[str, float] = {}
    for (t, name), nxt in zip(marks, [*(m[0] for m in marks[1:]), last]):
        out[name] = round(out.get(name, 0.0) + max(nxt - t, 0.0), 2)
    return out


@dataclass
class PhaseSummary:
    cases: int = 0
    per_phase: dict[str, float] = field(default_factory=dict)  # median seconds
    case_wall_median: float | None = None
    overhead_median: float | None = None  # case wall / workload wall
    cases_per_hour: float | None = None  # one case at a time: 3600 / mean case wall

    def to_dict(self) -> dict:
        return {"cases": self.cases, "median_s_per_phase": self.per_phase, "case_wall_median_s": self.case_wall_median,
                "case_over_workload_median": self.overhead_median, "cases_per_hour_one_at_a_time": self.cases_per_hour}


def summarize(refs: list[str]) -> PhaseSummary:
    phases: dict[str, list[float]] = {}
    walls, ratios = [], []
    for ref in refs:
        for rec in read_run(resolve_run(ref)):
            for name, secs in phase_durations(rec.path).items():
                phases.setdefault(name, []).append(secs)
            f = rec.verdict.get("figures") or {}
            if f.get("case_wall_s"):
                walls.append(float(f["case_wall_s"]))
                if f.get("workload_wall_s"):
                    ratios.append(float(f["case_wall_s"]) / float(f["workload_wall_s"]))
    names = [n for n in ORDER if n in phases] + sorted(n for n in phases if n not in ORDER)
    return PhaseSummary(len(walls), {n: round(statistics.median(phases[n]), 1) for n in names},
                        round(statistics.median(walls), 1) if walls else None,
                        round(statistics.median(ratios), 2) if ratios else None,
                        round(3600 / statistics.mean(walls), 1) if walls else None)


def render(s: PhaseSummary) -> str:
    lines = [f"{s.cases} case(s): median seconds per phase"]
    lines += [f"  {n:10} {v:7.1f}" for n, v in s.per_phase.items()]
    lines.append(f"case wall median {s.case_wall_median} s; case/workload wall median {s.overhead_median}; "
                 f"{s.cases_per_hour} cases per hour one at a time")
    return "\n".join(lines)
