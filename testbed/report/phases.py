"""Where a case's time goes, read from its events: each phase (images, network, NAS, client,
storage, workload, verify (a command workload's verification), evidence, teardown) from its start to the next one's, the last to the case's
final event; over runs, the median per phase, case wall / workload wall, and cases per hour. The
baseline that faster cases (restored VMs, a kept NAS) are measured against."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from testbed.store.index import read_run
from testbed.report.runs import resolve_run

ORDER = ("images", "network", "nas", "client", "storage", "workload", "verify", "evidence", "teardown")


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
    workload_wall_median: float | None = None
    overhead_median: float | None = None  # case wall / workload wall
    cases_per_hour: float | None = None  # one case at a time: 3600 / mean case wall
    ready_median: dict[str, float] = field(default_factory=dict)  # role -> seconds from its phase start to ready
    boots: dict[str, int] = field(default_factory=dict)  # "client restored": 3, "nas cold": 1 ...
    verdicts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"cases": self.cases, "median_s_per_phase": self.per_phase, "case_wall_median_s": self.case_wall_median,
                "workload_wall_median_s": self.workload_wall_median,
                "case_over_workload_median": self.overhead_median, "cases_per_hour_one_at_a_time": self.cases_per_hour,
                "ready_median_s": self.ready_median, "boots": self.boots, "verdicts": self.verdicts}


def summarize(refs: list[str]) -> PhaseSummary:
    return summarize_dirs([rec.path for ref in refs for rec in read_run(resolve_run(ref))])


def summarize_dirs(case_dirs: list[Path]) -> PhaseSummary:
    """Medians over finished case folders (their events.jsonl and verdict.json)."""
    phases: dict[str, list[float]] = {}
    walls, works, ratios = [], [], []
    ready: dict[str, list[float]] = {}
    boots: dict[str, int] = {}
    verdicts: dict[str, int] = {}
    for case in case_dirs:
        try:
            verdict = json.loads((case / "verdict.json").read_text())
        except (OSError, ValueError):
            continue
        for name, secs in phase_durations(case).items():
            phases.setdefault(name, []).append(secs)
        verdicts[str(verdict.get("verdict"))] = verdicts.get(str(verdict.get("verdict")), 0) + 1
        for role, b in (verdict.get("boot") or {}).items():
            if isinstance(b, dict):
                label = f"{role} {b.get('mode', '?')}" + (" (saved first)" if b.get("saved_s") else "")
                boots[label] = boots.get(label, 0) + 1
                if isinstance(b.get("ready_s"), (int, float)):
                    ready.setdefault(role, []).append(float(b["ready_s"]))
        f = verdict.get("figures") or {}
        if f.get("case_wall_s"):
            walls.append(float(f["case_wall_s"]))
            if f.get("workload_wall_s"):
                works.append(float(f["workload_wall_s"]))
                ratios.append(float(f["case_wall_s"]) / float(f["workload_wall_s"]))
    names = [n for n in ORDER if n in phases] + sorted(n for n in phases if n not in ORDER)
    med = statistics.median
    return PhaseSummary(len(walls), {n: round(med(phases[n]), 1) for n in names},
                        round(med(walls), 1) if walls else None, round(med(works), 1) if works else None,
                        round(med(ratios), 2) if ratios else None,
                        round(3600 / statistics.mean(walls), 1) if walls else None,
                        {r: round(med(v), 2) for r, v in ready.items()}, boots, verdicts)


def render(s: PhaseSummary) -> str:
    lines = [f"{s.cases} case(s): median seconds per phase"]
    lines += [f"  {n:10} {v:7.1f}" for n, v in s.per_phase.items()]
    lines.append(f"case wall median {s.case_wall_median} s; case/workload wall median {s.overhead_median}; "
                 f"{s.cases_per_hour} cases per hour one at a time")
    return "\n".join(lines)


def render_columns(cols: dict[str, PhaseSummary]) -> str:
    """Summaries side by side, one column each (e.g. cold | restored)."""
    names = list(cols)
    phases_seen = [n for n in ORDER if any(n in c.per_phase for c in cols.values())]

    def row(label: str, values: list[object]) -> str:
        return f"  {label:24}" + "".join(f"{'-' if v is None else v!s:>14}" for v in values)

    lines = [row("", names), row("cases", [c.cases for c in cols.values()]), "  median seconds per phase"]
    lines += [row(f"  {n}", [c.per_phase.get(n) for c in cols.values()]) for n in phases_seen]
    for role in sorted({r for c in cols.values() for r in c.ready_median}):
        lines.append(row(f"{role} ready (s)", [c.ready_median.get(role) for c in cols.values()]))
    lines += [row("case wall (s)", [c.case_wall_median for c in cols.values()]),
              row("workload wall (s)", [c.workload_wall_median for c in cols.values()]),
              row("case / workload", [c.overhead_median for c in cols.values()]),
              row("cases per hour", [c.cases_per_hour for c in cols.values()])]
    for n, c in cols.items():
        lines.append(f"  {n}: verdicts " + ", ".join(f"{k} {v}" for k, v in sorted(c.verdicts.items()))
                     + "; boots " + (", ".join(f"{k} {v}" for k, v in sorted(c.boots.items())) or "not recorded"))
    return "\n".join(lines)
