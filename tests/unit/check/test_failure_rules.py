"""Failure rules need evidence about the case itself: a reviewer's probes on copies of committed case
folders, each adding one console line or one kill that is not the case's, judged again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from testbed.check import casefile
from testbed.check.verdict import judge

RESULTS = Path(__file__).parents[3] / "results"
ANON = RESULTS / "20261128-032624-tb245036/nfs-swap"  # recovered: anon over NFS swap (no block device)
ISCSI = RESULTS / "20261128-001915-tb507179/iscsi-restore-1"  # recovered: anon on an iSCSI LUN


def with_events(src: Path, tmp: Path, add: list[dict], status: int | None = None) -> Path:
    case = tmp / src.name
    shutil.copytree(src, case)
    rows = [json.loads(x) for x in (case / "events.jsonl").read_text().splitlines()]
    start = next(e["t"] for e in rows if (e["kind"], e["name"]) == ("phase", "workload"))
    at = next(i for i, e in enumerate(rows) if e["t"] > start + 5)
    rows[at:at] = [{"t": start + 5, "kind": "console", "vm": "client", **a} for a in add]
    if status is not None:
        for e in rows:
            if (e["kind"], e["name"]) == ("workload", "exit"):
                e["status"] = status
    (case / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return case


def verdict(case: Path) -> tuple[str, list[str]]:
    j = judge(casefile.load(case).observations)
    return j.verdict, j.reasons


def test_a_bus_error_of_a_process_off_the_path_is_not_an_io_error(tmp_path: Path) -> None:
    case = with_events(ANON, tmp_path, [{"name": "sigbus", "line": "sh: Bus error", "groups": []}])
    assert verdict(case)[0] == "recovered"


def test_a_bus_error_of_the_workload_is(tmp_path: Path) -> None:
    case = with_events(ANON, tmp_path, [{"name": "sigbus", "line": "tb-work[134]: Bus error (core dumped)", "groups": []}])
    v, reasons = verdict(case)
    assert v == "io-error" and "tb-work[134]: Bus error" in reasons[0]


def test_an_io_error_naming_no_device_or_another_is_not_the_cases(tmp_path: Path) -> None:
    case = with_events(ISCSI, tmp_path, [{"name": "io-error", "line": "Buffer I/O error, logical block 7", "groups": []},
                                         {"name": "io-error", "line": "I/O error, dev sr0, sector 0", "groups": []}])
    assert verdict(case)[0] == "recovered"


def test_an_io_error_on_the_cases_lun_is(tmp_path: Path) -> None:
    dev = next(json.loads(x)["device"] for x in (ISCSI / "events.jsonl").read_text().splitlines()
               if '"storage-attached"' in x).rsplit("/", 1)[-1]
    case = with_events(ISCSI, tmp_path, [{"name": "io-error", "line": f"I/O error, dev {dev}, sector 2048", "groups": []}])
    assert verdict(case)[0] == "io-error"


def test_an_unrelated_oom_victim_and_a_failed_workload_is_not_oom(tmp_path: Path) -> None:
    kill = {"name": "oom-kill", "line": "Out of memory: Killed process 99 (sleep)", "groups": ["99", "sleep"]}
    case = with_events(ANON, tmp_path, [kill], status=1)
    v, reasons = verdict(case)
    assert v == "unknown" and any("killed sleep (not on the storage path)" in r for r in reasons), reasons
    assert "which of them broke it, if any, is not known" in reasons[-1]


def test_the_workload_killed_is_oom(tmp_path: Path) -> None:
    kill = {"name": "oom-kill", "line": "Out of memory: Killed process 134 (tb-work)", "groups": ["134", "tb-work"]}
    case = with_events(ANON, tmp_path, [kill], status=137)
    assert verdict(case)[0] == "oom"
