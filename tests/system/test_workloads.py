"""Issue 19: any command as a workload, and the reference workloads, in real guests."""

import csv
import json
from pathlib import Path

import pytest
from conftest import cli

pytestmark = [pytest.mark.system, pytest.mark.slow]


def run_case(results: dict[str, str], path: str, *sets: str) -> tuple[dict, Path]:
    args = [a for s in sets for a in ("--set", s)]
    cp = cli("run", path, "--json", *args, env=results)
    assert cp.stdout, cp.stderr[-3000:]
    case = json.loads(cp.stdout)["cases"][0]
    folder = (Path(results["TESTBED_RESULTS"]) / "latest").resolve() / case["case"]
    return case, folder


def events(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "events.jsonl").read_text().splitlines()]


def test_fio_command_is_run_timed_by_its_cpu_and_verified(results: dict[str, str]) -> None:
    """fio writes a file with fsyncs on NFS and a second fio verifies it from the storage; the command's
    cgroup CPU time is in the timeline; `testbed judge` gives the stored verdict from the folder alone."""
    case, folder = run_case(results, "scenarios/reference/fio-fsync.yaml", "workload.ratio_to_ram=0.75")
    assert case["verdict"] == "recovered", case["reasons"]
    assert "verification `fio" in case["reasons"][0]
    assert case["figures"]["command_user_cpu_s"] > 0 and case["figures"]["net_tx_mb"] > 50
    verify = next(e for e in events(folder) if e["kind"] == "workload" and e["name"] == "verify")
    assert verify["status"] == 0 and "--verify_only" in verify["argv"]
    with open(folder / "timeline.csv", newline="") as f:
        user = [float(r["workload_user_s"]) for r in csv.DictReader(f) if r["workload_user_s"]]
    assert user and user[-1] > user[0]
    lines = (folder / "workload.jsonl").read_text().splitlines()
    assert any("fsync: (groupid=0" in x for x in lines)  # fio's report, streamed as lines
    judged = cli("judge", str(folder), "--json", env=results)
    assert judged.returncode == 0 and json.loads(judged.stdout)["cases"][0]["verdict"] == "recovered", judged.stdout


def test_a_failed_verification_is_corrupted(results: dict[str, str]) -> None:
    """The verification command is the data check: its non-zero exit in the guest is `corrupted`."""
    case, _ = run_case(results, "scenarios/reference/fio-fsync.yaml", "workload.ratio_to_ram=0.25",
                       "workload.verify_argv=[/bin/sh, -c, 'echo checksum mismatch; exit 1']")
    assert case["verdict"] == "corrupted", case["reasons"]
    assert "exited 1: checksum mismatch" in case["reasons"][0]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["neilbrown-stress-ng", "gorman-nbd"])
def test_reference_workloads_end_in_verdicts(name: str, results: dict[str, str]) -> None:
    case, _ = run_case(results, f"scenarios/reference/{name}.yaml")
    assert case["verdict"] in ("recovered", "deadlocked", "livelocked", "oom"), case["reasons"]
    assert case["figures"]["swap_out_mb"] > 100
