"""Where a case's time went, from a committed case folder's events."""

import json
from pathlib import Path

from testbed.report.phases import phase_durations, render, summarize

REPO = Path(__file__).parents[3]
RUN = REPO / "results/20261127-210436-tbc975a6"


def test_phases_of_a_real_case_cover_its_wall_time() -> None:
    case = RUN / "minfreedefault-r1"
    d = phase_durations(case)
    assert list(d)[:6] == ["images", "network", "nas", "client", "storage", "workload"]
    assert all(v >= 0 for v in d.values()) and d["workload"] > d["nas"] > 0
    wall = json.loads((case / "verdict.json").read_text())["figures"]["case_wall_s"]
    assert abs(sum(d.values()) - wall) < 15, (d, wall)  # the phases span the case, up to its last event


def test_summary_over_a_run() -> None:
    s = summarize([str(RUN)])
    assert s.cases == 6 and s.cases_per_hour and 0 < s.case_wall_median < 600
    assert s.overhead_median and s.overhead_median > 1.0
    assert "median seconds per phase" in render(s) and "workload" in s.per_phase
    assert phase_durations(REPO / "nonexistent") == {}
