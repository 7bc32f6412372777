"""A history is complete or the verdict is `unknown`: a reviewer's probes on copies of committed case
folders (a record deleted, cut short or changed), judged again as `testbed judge` does. None may turn a
case `recovered` whose own evidence was removed, nor be rebuilt from what is absent."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from testbed.check import casefile
from testbed.check.verdict import judge

REPO = Path(__file__).parents[3]
RESULTS = REPO / "results"
ANON = RESULTS / "20261128-032624-tb245036/nfs-swap"  # recovered, anon over NFS swap, format 2
FAULT = RESULTS / "20261127-211457-tbb3cc1c/restart-service-r1"  # recovered through a nas-outage restart
COMMAND = RESULTS / "20261203-072137-tb9cd7b0/neilbrown-stress-ng-r1"  # recovered, a command workload
FIO = RESULTS / "20261203-071542-tbd5c6fb/nfs"  # recovered, fio with its verification command
STALL = RESULTS / "20261207-180316-tb80411b/control-nas-frozen-r1"  # stalled: the NAS frozen, never healed


def copy(src: Path, tmp: Path) -> Path:
    dst = tmp / src.name
    shutil.copytree(src, dst)
    return dst


def events(case: Path) -> list[dict]:
    return [json.loads(x) for x in (case / "events.jsonl").read_text().splitlines()]


def write_events(case: Path, rows: list[dict]) -> None:
    (case / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def edit_events(case: Path, keep: Callable[[dict], bool]) -> None:
    write_events(case, [e for e in events(case) if keep(e)])


def verdict(case: Path) -> tuple[str, list[str]]:
    j = judge(casefile.load(case).observations)
    return j.verdict, j.reasons


def incomplete(reasons: list[str]) -> list[str]:
    return [r for r in reasons if r.startswith("incomplete: ")]


def test_the_folders_used_here_are_what_they_say() -> None:
    assert verdict(ANON)[0] == verdict(FAULT)[0] == verdict(COMMAND)[0] == "recovered"
    assert verdict(STALL)[0] == "stalled"


def test_workload_lines_deleted(tmp_path: Path) -> None:
    case = copy(ANON, tmp_path)
    (case / "workload.jsonl").unlink()
    v, reasons = verdict(case)
    assert v == "unknown" and incomplete(reasons) == ["incomplete: workload.jsonl missing (the workload's own lines: what it verified)"]


def test_done_with_less_than_the_argv_asked(tmp_path: Path) -> None:
    case = copy(ANON, tmp_path)
    lines = (case / "workload.jsonl").read_text().splitlines()
    done = [i for i, ln in enumerate(lines) if '"done"' in ln]
    lines[done[-1]] = json.dumps({"done": True, "pages": 1, "passes": 0, "seconds": 1.0})
    (case / "workload.jsonl").write_text("\n".join(lines) + "\n")
    v, reasons = verdict(case)
    assert v == "unknown" and "tb-work said done with 1 pages x 0 passes; its argv asked for" in incomplete(reasons)[0]


def test_every_fault_event_deleted(tmp_path: Path) -> None:
    case = copy(FAULT, tmp_path)
    edit_events(case, lambda e: e["kind"] != "fault")
    v, reasons = verdict(case)
    assert v == "unknown"
    assert incomplete(reasons) == ["incomplete: fault nas-outage (faults[0], at_s 15): no record of its injection"]


def test_a_heal_deleted(tmp_path: Path) -> None:
    case = copy(FAULT, tmp_path)
    edit_events(case, lambda e: e["name"] != "nas-outage:heal")
    v, reasons = verdict(case)
    assert v == "unknown" and "no heal is recorded" in incomplete(reasons)[0]


def never_started(case: Path, at_s: int) -> None:
    """The fault's records replaced by the scheduler's `not-started` one (the case ended first)."""
    rows = [e for e in events(case) if not e["name"].startswith("nas-outage:") or e["name"] == "nas-outage:setup"]
    rows.insert(-1, {"t": rows[-1]["t"], "kind": "fault", "name": "nas-outage:not-started", "index": 0, "at_s": at_s,
                     "reason": f"the case ended 12.0 s into the pressure, before its time ({at_s} s)"})
    write_events(case, rows)


def test_a_fault_whose_time_never_came(tmp_path: Path) -> None:
    case = copy(FAULT, tmp_path)
    never_started(case, 20)
    v, reasons = verdict(case)
    assert v == "unknown" and incomplete(reasons) == [
        "incomplete: fault nas-outage (faults[0], at_s 15) never started: the case ended 12.0 s into the pressure, "
        "before its time (20 s)"]


def test_no_record_of_the_client_answering(tmp_path: Path) -> None:
    case = copy(ANON, tmp_path)
    edit_events(case, lambda e: e["name"] != "client-answers")
    v, reasons = verdict(case)
    assert v == "unknown" and "client answering after the pressure" in incomplete(reasons)[0]
    assert not any("client answered" in r for r in reasons)


def test_the_stored_verdict_is_never_an_input(tmp_path: Path) -> None:
    case = copy(ANON, tmp_path)
    stored = json.loads((case / "verdict.json").read_text())
    (case / "verdict.json").write_text(json.dumps({**stored, "ended_by": "stall", "verdict": "deadlocked",
                                                   "figures": {}}))
    assert verdict(case)[0] == "recovered"


def test_a_truncated_timeline(tmp_path: Path) -> None:
    case = copy(STALL, tmp_path)
    rows = (case / "timeline.csv").read_text().splitlines()
    (case / "timeline.csv").write_text("\n".join(rows[:len(rows) // 2]) + "\n")
    v, reasons = verdict(case)
    assert v == "unknown" and "timeline.csv ends at t=" in incomplete(reasons)[0]


def test_events_cut_before_their_final_record(tmp_path: Path) -> None:
    case = copy(ANON, tmp_path)
    write_events(case, events(case)[:-1])
    v, reasons = verdict(case)
    assert v == "unknown" and "final verdict record" in incomplete(reasons)[0]


@pytest.mark.parametrize("name", ["events.jsonl", "timeline.csv", "scenario.yaml"])
def test_a_file_the_judge_reads_deleted(tmp_path: Path, name: str) -> None:
    case = copy(ANON, tmp_path)
    (case / name).unlink()
    v, reasons = verdict(case)
    assert v == "unknown" and incomplete(reasons)


def with_verification(case: Path) -> None:
    sc = yaml.safe_load((case / "scenario.yaml").read_text())
    sc["workload"]["verify_argv"] = ["sh", "-c", "exit 1"]
    (case / "scenario.yaml").write_text(yaml.safe_dump(sc))


def test_a_failed_verification_wins_over_finished(tmp_path: Path) -> None:
    case = copy(COMMAND, tmp_path)
    with_verification(case)
    rows = events(case)
    at = next(i for i, e in enumerate(rows) if e["name"] == "finished")
    rows.insert(at, {"t": rows[at]["t"], "kind": "workload", "name": "verify", "argv": ["sh", "-c", "exit 1"],
                     "status": 1, "timed_out": False, "output": ["bad block 7"]})
    write_events(case, rows)
    v, reasons = verdict(case)
    assert v == "corrupted" and "exited 1: bad block 7" in reasons[0]


def test_a_declared_verification_not_recorded(tmp_path: Path) -> None:
    case = copy(COMMAND, tmp_path)
    with_verification(case)
    v, reasons = verdict(case)
    assert v == "unknown" and "declares a verification command and no verification is recorded" in incomplete(reasons)[0]


def test_fio_verification_changed_to_a_failure_beside_its_finished_record(tmp_path: Path) -> None:
    case = copy(FIO, tmp_path)
    rows = events(case)
    for e in rows:
        if e["name"] == "verify":
            e.update(status=1, output=["verify: bad header rand_seed"])
    write_events(case, rows)
    v, reasons = verdict(case)
    assert v == "corrupted" and "exited 1: verify: bad header rand_seed" in reasons[0]


def test_fio_verification_record_deleted(tmp_path: Path) -> None:
    case = copy(FIO, tmp_path)
    edit_events(case, lambda e: e["name"] != "verify")
    v, reasons = verdict(case)
    assert v == "unknown" and "no verification is recorded" in incomplete(reasons)[0]


def test_a_fault_declared_optional_may_never_start(tmp_path: Path) -> None:
    case = copy(FAULT, tmp_path)
    never_started(case, 15)
    sc = yaml.safe_load((case / "scenario.yaml").read_text())
    sc["faults"][0]["optional"] = True
    (case / "scenario.yaml").write_text(yaml.safe_dump(sc))
    assert verdict(case)[0] == "recovered"
    sc["faults"][0]["optional"] = False
    (case / "scenario.yaml").write_text(yaml.safe_dump(sc))
    assert verdict(case)[0] == "unknown"
