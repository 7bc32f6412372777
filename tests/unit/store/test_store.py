import json
from pathlib import Path

from testbed.store.runs import new_run


def test_case_is_complete_only_after_verdict(tmp_path: Path) -> None:
    run = new_run("tbabcdef", {"argv": ["x"]}, root=tmp_path)
    assert (tmp_path / "latest").resolve() == run.path
    case = run.case("nfs-swap")
    (case.path / "events.jsonl").write_text("{}\n")
    assert case.path.name == "nfs-swap.incomplete" and not (run.path / "nfs-swap").exists()
    final = case.complete({"verdict": "recovered"})
    assert final == run.path / "nfs-swap"
    assert json.loads((final / "verdict.json").read_text())["verdict"] == "recovered"
    assert not (run.path / "nfs-swap.incomplete").exists()


def test_latest_follows_the_newest_run(tmp_path: Path) -> None:
    new_run("tb000001", {}, root=tmp_path)
    second = new_run("tb000002", {}, root=tmp_path)
    assert (tmp_path / "latest").resolve() == second.path
