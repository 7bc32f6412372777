"""Cold vs restored: per-cell rates, the interval of their difference, medians side by side."""

import json
from pathlib import Path

import pytest

from testbed.report import modes, phases
from testbed.report.stats import newcombe


def case(tmp: Path, name: str, verdict: str, wall: float, swap_out: float = 700.0, boot: str = "cold") -> Path:
    d = tmp / name
    d.mkdir()
    (d / "verdict.json").write_text(json.dumps({
        "verdict": verdict, "expected": None,
        "figures": {"workload_wall_s": wall, "swap_in_mb": 500.0, "swap_out_mb": swap_out, "case_wall_s": wall + 6},
        "boot": {"client": {"mode": boot, "ready_s": 0.8 if boot == "restored" else 11.5}}}))
    (d / "events.jsonl").write_text("\n".join(json.dumps(e) for e in [
        {"t": 0.0, "kind": "phase", "name": "images"}, {"t": 0.1, "kind": "phase", "name": "client"},
        {"t": 5.0, "kind": "phase", "name": "workload"}, {"t": wall + 5, "kind": "phase", "name": "teardown"},
        {"t": wall + 6, "kind": "verdict", "name": verdict}]) + "\n")
    return d


def test_newcombe_contains_the_difference_and_is_symmetric() -> None:
    lo, hi = newcombe(0, 6, 0, 6)
    assert lo < 0 < hi and lo == pytest.approx(-hi)
    lo, hi = newcombe(6, 6, 0, 6)
    assert 0 < lo < 1 and hi == 1.0  # all vs none: a difference beyond noise
    lo, hi = newcombe(1, 6, 2, 6)
    assert lo < -1 / 6 < hi
    assert newcombe(1, 0, 0, 3) == (-1.0, 1.0)


def test_a_cell_that_fails_only_restored_is_shown_as_a_difference(tmp_path: Path) -> None:
    cold = [case(tmp_path, f"c{i}", "recovered", 64.0) for i in range(6)]
    warm = [case(tmp_path, f"w{i}", "deadlocked", 30.0, boot="restored") for i in range(6)]
    (c,) = modes.compare({"nfs-swap": {"cold": cold, "restore": warm}})
    assert (c.rates["cold"].failures, c.rates["restore"].failures) == (0, 6)
    assert c.difference and c.difference[1] < 0  # cold - restore is surely negative
    assert c.figures["workload_wall_s"] == {"cold": 64.0, "restore": None}  # a deadlock's wall is not a figure
    assert c.figures["swap_mb_s"]["cold"] == pytest.approx(1200 / 64, abs=0.1)
    assert "DIFFERENCE beyond noise" in modes.render([c])


def test_same_answers_show_no_difference_and_unfinished_cases_are_skipped(tmp_path: Path) -> None:
    cold = [case(tmp_path, f"c{i}", "recovered", 64.0) for i in range(3)]
    warm = [case(tmp_path, f"w{i}", "recovered", 63.0, boot="restored") for i in range(3)]
    (tmp_path / "half").mkdir()
    (c,) = modes.compare({"x": {"cold": cold, "restore": [*warm, tmp_path / "half"]}})
    assert c.rates["restore"].runs == 3
    assert "no difference shown" in modes.render([c])


def test_phase_columns_side_by_side(tmp_path: Path) -> None:
    cold = phases.summarize_dirs([case(tmp_path, f"c{i}", "recovered", 64.0) for i in range(3)])
    warm = phases.summarize_dirs([case(tmp_path, f"w{i}", "recovered", 64.0, boot="restored") for i in range(3)])
    assert cold.ready_median == {"client": 11.5} and warm.ready_median == {"client": 0.8}
    assert warm.boots == {"client restored": 3} and cold.verdicts == {"recovered": 3}
    text = phases.render_columns({"cold": cold, "restored": warm})
    assert "client ready (s)" in text and "11.5" in text and "0.8" in text
    assert text.splitlines()[0].split() == ["cold", "restored"]
