"""The Ray engine's result collection without a cluster: a case folder packed on a node is unpacked
into the run as a complete case with the engine's facts; a missing Ray or cluster is one clear line."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from testbed.store import runs as store
from testbed.errors import UsageError
from testbed.store.index import read_run
from testbed.config.matrix import load_matrix
from testbed.engine.ray_engine import ENGINE_LOG, _pack, _ray, log, not_run, unpack

REPO = Path(__file__).parents[3]
CASE = REPO / "results/20261127-210436-tbc975a6/minfree8192-r1"


def test_a_returned_case_lands_complete(tmp_path: Path) -> None:
    node = tmp_path / "node" / "minfree8192-r1"
    shutil.copytree(CASE, node)
    run = store.new_run("tbunit001", {"engine": "ray"}, root=tmp_path / "results")
    folder = unpack(run, "minfree8192-r1", _pack(node), {"engine": "ray", "node": "n1", "attempt": 2})
    assert folder == run.path / "minfree8192-r1" and not (run.path / "minfree8192-r1.incoming").exists()
    v = json.loads((folder / "verdict.json").read_text())
    assert v["engine"] == {"engine": "ray", "node": "n1", "attempt": 2} and v["verdict"] == "recovered"
    assert [c.case_id for c in read_run(run.path)] == ["minfree8192-r1"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in CASE.iterdir())
    log(run, case="minfree8192-r1", attempt=1, lost="WorkerCrashedError")
    assert json.loads((run.path / ENGINE_LOG).read_text())["lost"] == "WorkerCrashedError"


def test_a_returned_folder_without_verdict_is_refused(tmp_path: Path) -> None:
    node = tmp_path / "node" / "c1"
    node.mkdir(parents=True)
    (node / "events.jsonl").write_text("")
    run = store.new_run("tbunit002", {}, root=tmp_path / "results")
    with pytest.raises(RuntimeError, match="no verdict.json"):
        unpack(run, "c1", _pack(node), {})
    assert not (run.path / "c1").exists() and not (run.path / "c1.incoming").exists()  # nothing half left


def test_without_ray_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UsageError, match=r"pip install '\.\[ray\]'"):
        _ray()


def test_a_case_the_engine_could_not_run_is_unknown(tmp_path: Path) -> None:
    c = load_matrix(REPO / "scenarios/matrix/smoke.yaml").cases[0]
    run = store.new_run("tbunit003", {}, root=tmp_path / "results")
    folder = not_run(run, c, "attempt 2 lost too (WorkerCrashedError)", {"engine": "ray", "attempt": 2})
    [rec] = read_run(run.path)
    assert rec.case_id == c.id and rec.verdict["verdict"] == "unknown" and rec.axes == c.assignments
    assert "could not run this case: attempt 2 lost too" in rec.verdict["reasons"][0]
    assert (folder / "scenario.yaml").exists()
