"""A damaged results folder (issue 18): one unreadable verdict.json, scenario.yaml, events.jsonl or
run.json is said on stderr and skipped; report, compare, judge and the index go on with the others."""

import json
import shutil
from pathlib import Path

import pytest

from testbed.cli import main
from testbed.index import DamagedCase, read_case, read_run

FIX = Path(__file__).parents[2] / "fixtures" / "runs"


@pytest.fixture
def damaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TESTBED_RESULTS", str(tmp_path))
    run = tmp_path / "fixture-base"
    shutil.copytree(FIX / "fixture-base", run)
    (run / "nfs-mtu1500-r1/verdict.json").write_text('{"verdict": "recov')  # cut short
    (run / "nfs-mtu1500-r2/verdict.json").write_bytes(b"\xff\xfe\x00garbage")  # not text
    (run / "nfs-mtu1500-r3/verdict.json").write_text("[1, 2]")  # JSON, but no verdict
    (run / "nfs-mtu1500-r4/scenario.yaml").write_text("[1, 2")  # cut short
    return run


def test_damaged_cases_are_skipped_and_said(damaged: Path, capsys: pytest.CaptureFixture) -> None:
    total = len([p for p in (FIX / "fixture-base").iterdir() if (p / "verdict.json").exists()])
    cases = read_run(damaged)
    assert len(cases) == total - 4
    err = capsys.readouterr().err
    for name in ("nfs-mtu1500-r1/verdict.json", "nfs-mtu1500-r2/verdict.json", "nfs-mtu1500-r3/verdict.json",
                 "nfs-mtu1500-r4/scenario.yaml"):
        assert f"skipping a damaged case: {damaged / name}" in err
    with pytest.raises(DamagedCase, match="nfs-mtu1500-r1/verdict.json: cannot be read back"):
        read_case(damaged / "nfs-mtu1500-r1", strict=True)


def test_report_compare_judge_index_go_on(damaged: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(damaged), "--json"]) == 0
    pivot = json.loads(capsys.readouterr().out)
    total = len([p for p in (FIX / "fixture-base").iterdir() if (p / "verdict.json").exists()])
    assert sum(c["runs"] + c["unknowns"] for c in pivot["cells"]) == total - 4
    assert main(["compare", str(damaged), str(FIX / "fixture-base"), "--json"]) in (0, 1)
    capsys.readouterr()
    assert main(["judge", str(damaged), "--json"]) == 3  # the unjudgeable ones counted, the rest judged
    out = json.loads(capsys.readouterr().out)["cases"]
    assert sum(1 for c in out if "error" in c) == 3 and sum(1 for c in out if "verdict" in c) == len(out) - 3
    assert main(["index", "--rebuild"]) == 0
    assert main(["show", str(damaged / "nfs-mtu1500-r1")]) == 2  # one clear line, not a traceback
    assert "verdict.json: cannot be read back" in capsys.readouterr().err


def test_damaged_run_json_keeps_its_cases(damaged: Path, capsys: pytest.CaptureFixture) -> None:
    (damaged / "run.json").write_text("{")
    assert len(read_run(damaged)) > 0
    assert "its cases are read without the host's facts" in capsys.readouterr().err


def test_compare_says_whether_the_guests_match() -> None:
    from testbed.commands.compare import guests_line

    same = guests_line({"client": {"aa"}, "nas": {"bb"}}, {"client": {"aa"}, "nas": {"bb"}})
    assert same == "guests: the same package lists on both sides"
    differ = guests_line({"client": {"aa"}}, {"client": {"cc"}})
    assert differ.startswith("guests DIFFER: client aa in A, cc in B")
    assert "not recorded for client" in guests_line({"client": {""}}, {"client": {"aa"}})
