"""Adaptive repeats (`testbed matrix --until-ci`): the pure decision, then whole runs with a fake case runner
that writes case folders as the runner does (no VM)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed import cli
from testbed.engine import matrix as mx
from testbed.config.matrix import load_matrix
from testbed.errors import UsageError
from testbed.report.runs import load_cases, rate_pivot
from testbed.report.stats import wilson
from testbed.engine.runner import CaseResult

REPO = Path(__file__).parents[3]


def v(verdict: str, expected: str | None = None) -> dict[str, Any]:
    return {"verdict": verdict, "expected": expected}


def runs(failures: int, ok: int, unknown: int = 0) -> list[dict[str, Any]]:
    return [v("deadlocked")] * failures + [v("recovered")] * ok + [v("unknown")] * unknown


# --- the decision ---------------------------------------------------------------------------------------

def test_never_failing_cell_stops_once_its_interval_is_narrow_enough() -> None:
    lo, hi = wilson(0, 5)
    assert hi - lo == pytest.approx(0.4345, abs=1e-4)  # < 0.5
    assert not mx.needs_run(runs(0, 5), 0.5, 10)
    lo, hi = wilson(0, 3)
    assert hi - lo == pytest.approx(0.5615, abs=1e-4)  # >= 0.5
    assert mx.needs_run(runs(0, 3), 0.5, 10)
    assert not mx.needs_run(runs(0, 4), 0.5, 10)  # 0/4: 0.4899
    assert mx.needs_run(runs(0, 8), 0.3, 10) and not mx.needs_run(runs(0, 9), 0.3, 10)  # 0.3244, 0.2991


def test_fifty_fifty_cell_goes_on_until_max_repeat() -> None:
    for n in range(2, 10, 2):
        assert mx.needs_run(runs(n // 2, n // 2), 0.3, 10), n
    assert not mx.needs_run(runs(5, 5), 0.3, 10)  # 10 judged runs: the cap, though 0.53 wide
    why = mx.cell_status(runs(5, 5), 0.3, 10)[1]
    assert why == "done: 10 judged runs (--max-repeat 10)"
    # at 50 % a 0.3-wide interval needs ~40 runs, as --help says
    assert mx.needs_run(runs(19, 19), 0.3, 100) and not mx.needs_run(runs(20, 20), 0.3, 100)


def test_unknowns_do_not_count_and_a_cell_the_testbed_keeps_failing_stops() -> None:
    assert mx.needs_run(runs(0, 3, unknown=1), 0.5, 10)  # 3 judged runs, not 4
    assert not mx.needs_run(runs(0, 4, unknown=1), 0.5, 10)
    assert mx.needs_run(runs(0, 2), 0.5, 3) and not mx.needs_run(runs(0, 3), 0.5, 3)
    assert mx.unknown_cap(10) == 5 and mx.unknown_cap(3) == 2
    assert mx.needs_run(runs(0, 0, unknown=4), 0.3, 10)
    assert not mx.needs_run(runs(0, 0, unknown=5), 0.3, 10)
    assert mx.cell_status(runs(0, 0, unknown=5), 0.3, 10)[1] == "stopped: the testbed failed it 5 times (unknown)"


def test_a_control_cell_counts_its_expect() -> None:
    stalled = [v("stalled", "stalled")] * 4
    assert not mx.needs_run(stalled, 0.5, 10)  # 0/4 failures: the expected verdict is no failure


def test_cells_needing_runs_keeps_the_mapping_order() -> None:
    cells = {"steady": runs(0, 5), "flaky": runs(2, 3), "empty": [], "capped": runs(3, 3)}
    assert mx.cells_needing_runs(cells, 0.5, 6) == ["flaky", "empty"]
    assert mx.cells_needing_runs(cells, 0.5, 5) == ["empty"]


def test_progress_line_shows_runs_and_interval() -> None:
    line = mx.cell_progress("storage.protocol=nfs", runs(1, 3, unknown=1), 0.3, 10)
    assert line == "storage.protocol=nfs: 5 run(s), fail 1/4 [5%-70%] +1 unknown, interval 0.65 >= 0.3: another run"
    assert (mx.cell_progress("x", runs(0, 5), 0.5, 10)
            == "x: 5 run(s), fail 0/5 [0%-43%], done: interval 0.43 narrower than 0.5")


# --- whole runs with a fake case runner ------------------------------------------------------------------

def matrix_file(tmp_path: Path, repeat: int = 1) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump({"name": "t", "base": str(REPO / "scenarios/nfs-swap.yaml"),
                                 "axes": {"storage.protocol": ["nfs", "iscsi"]}, "repeat": repeat}))
    return p


class FakeRunner:
    """Stands in for testbed.engine.runner.run_case: writes the case folder, verdict from `verdict(axes, r)`."""

    def __init__(self, verdict: Callable[[dict[str, Any], str], str]):
        self.verdict, self.calls = verdict, []

    def __call__(self, loaded, run, case_id, accel, ui, axes=None) -> CaseResult:
        self.calls.append(case_id)
        verdict = self.verdict(axes or {}, case_id)
        c = run.case(case_id)
        c.write_yaml("scenario.yaml", loaded.raw)
        data = {"case": case_id, "scenario": loaded.scenario.name, "axes": axes or {}, "verdict": verdict,
                "expected": None, "as_expected": verdict == "recovered", "reasons": [], "figures": {}}
        path = c.complete(data)
        return CaseResult(case_id, verdict, None, verdict == "recovered", str(path), data)


def nfs_steady_iscsi_flaky(axes: dict[str, Any], case_id: str) -> str:
    if axes["storage.protocol"] == "nfs":
        return "recovered"
    return "deadlocked" if int(case_id.rsplit("-r", 1)[1]) % 2 else "recovered"


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "results"
    root.mkdir()
    monkeypatch.setenv("TESTBED_RESULTS", str(root))
    return root


def test_until_ci_spends_runs_on_the_uncertain_cell(tmp_path: Path, results: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRunner(nfs_steady_iscsi_flaky)
    monkeypatch.setattr(mx, "run_case", fake)
    m = load_matrix(matrix_file(tmp_path), repeat=2, max_repeat=6)
    assert [c.id for c in m.cases] == ["nfs-r1", "nfs-r2", "iscsi-r1", "iscsi-r2"]
    mr = mx.run_matrix(m, until_ci=0.5, max_repeat=6, quiet=True)
    # the initial 2 per cell, then a round at a time: nfs stops at 0/4 (0.49 < 0.5), iscsi goes on to 6
    assert fake.calls == ["nfs-r1", "nfs-r2", "iscsi-r1", "iscsi-r2", "nfs-r3", "iscsi-r3", "nfs-r4", "iscsi-r4",
                          "iscsi-r5", "iscsi-r6"]
    assert [r.case_id for r in mr.results] == ["nfs-r1", "nfs-r2", "nfs-r3", "nfs-r4",
                                               "iscsi-r1", "iscsi-r2", "iscsi-r3", "iscsi-r4", "iscsi-r5", "iscsi-r6"]
    nfs, iscsi = mr.cells
    assert (nfs.cases, nfs.rate.failures, nfs.rate.runs) == (4, 0, 4)
    assert nfs.why == "done: interval 0.49 narrower than 0.5"
    assert (iscsi.cases, iscsi.rate.failures, iscsi.rate.runs) == (6, 3, 6)
    assert iscsi.why == "done: 6 judged runs (--max-repeat 6)"
    request = json.loads((mr.run.path / "run.json").read_text())["request"]
    assert request["until_ci"] == 0.5 and request["max_repeat"] == 6 and request["repeat"] == 2
    # the report pairs the repeats by axes: both cells with their rates
    rp = rate_pivot(load_cases(str(mr.run.path)), "storage.protocol", "client.mem_mb")
    assert rp.cells[("nfs", "128")].runs == 4 and rp.cells[("iscsi", "128")].failures == 3


def test_resumed_adaptive_run_counts_the_cases_already_there(tmp_path: Path, results: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRunner(nfs_steady_iscsi_flaky)
    monkeypatch.setattr(mx, "run_case", fake)
    first = mx.run_matrix(load_matrix(matrix_file(tmp_path), max_repeat=3), until_ci=0.5, max_repeat=3, quiet=True)
    assert fake.calls == ["nfs-r1", "iscsi-r1", "nfs-r2", "iscsi-r2", "nfs-r3", "iscsi-r3"]
    (first.run.path / "iscsi-r4.incomplete").mkdir()  # as a Ctrl-C leaves a case
    fake.calls.clear()
    mr = mx.run_matrix(load_matrix(matrix_file(tmp_path), max_repeat=6), until_ci=0.5, max_repeat=6,
                       resume=first.run.id, quiet=True)
    # 0/3 at nfs: another one (0/4 is narrow enough); iscsi on to 6. Nothing already there runs again.
    assert fake.calls == ["nfs-r4", "iscsi-r4", "iscsi-r5", "iscsi-r6"]
    assert sorted(mr.skipped) == sorted(["nfs-r1", "nfs-r2", "nfs-r3", "iscsi-r1", "iscsi-r2", "iscsi-r3"])
    assert len(mr.results) == 10 and not (first.run.path / "iscsi-r4.incomplete").exists()
    assert [c.rate.runs for c in mr.cells] == [4, 6]


def test_resume_refuses_cases_named_by_other_repeat_options(tmp_path: Path, results: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mx, "run_case", FakeRunner(lambda axes, cid: "recovered"))
    plain = mx.run_matrix(load_matrix(matrix_file(tmp_path)), quiet=True)  # ids nfs, iscsi
    assert [r.case_id for r in plain.results] == ["nfs", "iscsi"]
    named_otherwise = r"case iscsi \(storage.protocol=iscsi\) is named otherwise .* \(iscsi-r1, \.\.\.\)"
    with pytest.raises(UsageError, match=named_otherwise):
        mx.run_matrix(load_matrix(matrix_file(tmp_path), max_repeat=4), until_ci=0.5, max_repeat=4,
                      resume=plain.run.id, quiet=True)


def test_fixed_repeat_override_and_resume_unchanged(tmp_path: Path, results: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRunner(lambda axes, cid: "recovered")
    monkeypatch.setattr(mx, "run_case", fake)
    m = load_matrix(matrix_file(tmp_path, repeat=5), repeat=2)
    mr = mx.run_matrix(m, quiet=True)
    assert fake.calls == ["nfs-r1", "nfs-r2", "iscsi-r1", "iscsi-r2"] and mr.cells == []
    (mr.run.path / "iscsi-r2" / "verdict.json").unlink()  # incomplete again
    fake.calls.clear()
    again = mx.run_matrix(m, resume=mr.run.id, quiet=True)
    assert fake.calls == ["iscsi-r2"] and again.skipped == ["nfs-r1", "nfs-r2", "iscsi-r1"]


def test_fail_fast_stops_the_adaptive_rounds(tmp_path: Path, results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRunner(nfs_steady_iscsi_flaky)
    monkeypatch.setattr(mx, "run_case", fake)
    mx.run_matrix(load_matrix(matrix_file(tmp_path), max_repeat=6), until_ci=0.5, max_repeat=6, fail_fast=True,
                  quiet=True)
    assert fake.calls == ["nfs-r1", "iscsi-r1"]  # iscsi-r1 deadlocked


def run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(cli, "install_signal_handlers", lambda: None)
    return cli.main(argv)


def test_cli_refuses_until_ci_with_shard_in_one_line(tmp_path: Path, results: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeRunner(lambda axes, cid: "recovered")
    monkeypatch.setattr(mx, "run_case", fake)
    rc = run_cli(["matrix", str(matrix_file(tmp_path)), "--until-ci", "0.3", "--shard", "1/2"], monkeypatch)
    err = capsys.readouterr().err
    assert rc == 3 and fake.calls == [] and not any(results.iterdir())
    assert err.strip().splitlines() == [
        "testbed: error: --until-ci cannot be combined with --shard: a shard's cases are fixed up front; "
        "give the shards a fixed --repeat, or run the matrix unsharded"]
    for bad, msg in ((["--max-repeat", "3"], "--max-repeat only applies with --until-ci W"),
                     (["--until-ci", "0"], "--until-ci 0: must be an interval width above 0 and at most 1"),
                     (["--repeat", "0"], "--repeat 0: must be at least 1")):
        assert run_cli(["matrix", str(matrix_file(tmp_path)), *bad], monkeypatch) == 3
        assert msg in capsys.readouterr().err


def test_cli_until_ci_json(tmp_path: Path, results: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(mx, "run_case", FakeRunner(nfs_steady_iscsi_flaky))
    argv = ["matrix", str(matrix_file(tmp_path)), "--until-ci", "0.5", "--max-repeat", "4", "--json"]
    rc = run_cli(argv, monkeypatch)
    out = json.loads(capsys.readouterr().out)
    assert rc == 1  # iscsi deadlocked in some runs
    assert [c["case"] for c in out["cases"]] == ["nfs-r1", "nfs-r2", "nfs-r3", "nfs-r4",
                                                  "iscsi-r1", "iscsi-r2", "iscsi-r3", "iscsi-r4"]
    cells = out["until_ci"]["cells"]
    assert [(c["cell"], c["runs"], c["failures"]) for c in cells] == [("storage.protocol=nfs", 4, 0),
                                                                      ("storage.protocol=iscsi", 4, 2)]
