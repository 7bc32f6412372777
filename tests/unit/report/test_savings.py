"""The until-ci benchmark reads an adaptive run's own folders: per cell, the case-minutes used against
fixed repeats (estimated from the cell's median case time, or measured from a fixed-repeat run)."""

import json
from pathlib import Path

import pytest

from testbed.store import runs as store
from testbed.errors import UsageError
from testbed.report.savings import render, savings

A = {"client.sysctl.vm.min_free_kbytes": "default"}
B = {"client.sysctl.vm.min_free_kbytes": 8192}


def make_run(root: Path, tag: str, walls: dict[str, tuple[dict, float]], request: dict) -> str:
    run = store.new_run(tag, request, root=root)
    for cid, (axes, wall) in walls.items():
        c = run.case(cid)
        c.write_yaml("scenario.yaml", {"name": cid})
        c.complete({"case": cid, "scenario": cid, "verdict": "recovered", "axes": axes, "reasons": [],
                    "figures": {"case_wall_s": wall}})
    return str(run.path)


def test_savings_against_the_max_repeat_and_a_measured_run(tmp_path: Path) -> None:
    # cell A stopped at 3 runs (its interval narrow enough), cell B went on to the max of 5
    walls = {f"a-r{i}": (A, 180.0) for i in range(1, 4)} | {f"b-r{i}": (B, w) for i, w in
                                                          enumerate((200.0, 210.0, 190.0, 240.0, 260.0), 1)}
    adaptive = make_run(tmp_path, "tb00000a", walls, {"until_ci": 0.6, "max_repeat": 5})
    s = savings(adaptive)
    cells = {c.cell: c for c in s.cells}
    a, b = cells["client.sysctl.vm.min_free_kbytes=default"], cells["client.sysctl.vm.min_free_kbytes=8192"]
    assert (a.adaptive_cases, a.adaptive_min, a.fixed_cases, a.fixed_min, a.saved_min) == (3, 9.0, 5, 15.0, 6.0)
    assert (b.adaptive_cases, b.fixed_min, b.saved_min) == (5, 17.5, -0.8)  # 5 x median 210 s; it ran 1100 s
    assert s.to_dict()["saved_case_min"] == 5.2 and "saved +5.2 case-minutes" in render(s)
    # against a real fixed-repeat run of the same cells: its own times
    fixed = make_run(tmp_path, "tb00000f", {f"a-r{i}": (A, 200.0) for i in range(1, 6)}
                     | {f"b-r{i}": (B, 220.0) for i in range(1, 6)}, {"repeat": 5})
    m = savings(adaptive, fixed_ref=fixed)
    assert [(c.fixed_cases, c.fixed_min, c.measured) for c in m.cells] == [(5, 16.7, True), (5, 18.3, True)]


def test_savings_refuses_a_run_that_was_not_adaptive(tmp_path: Path) -> None:
    plain = make_run(tmp_path, "tb00000b", {"a-r1": (A, 100.0)}, {"repeat": 1})
    with pytest.raises(UsageError, match="not an adaptive run"):
        savings(plain)
    adaptive = make_run(tmp_path, "tb00000c", {"b-r1": (B, 100.0)}, {"until_ci": 0.5, "max_repeat": 3})
    with pytest.raises(UsageError, match="has no case of the cell"):
        savings(adaptive, fixed_ref=plain)
    assert json.loads((Path(adaptive) / "run.json").read_text())["request"]["until_ci"] == 0.5
