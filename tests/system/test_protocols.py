"""Issue 4 (and 19's NBD): every protocol swaps (in CI); the file workloads on every protocol (slow marker)."""

import json
from pathlib import Path

import pytest
from conftest import check_judged, cli

pytestmark = pytest.mark.system


def run_one(path: str, results: dict[str, str]) -> dict:
    cp = cli("run", path, "--json", env=results)
    assert cp.stdout, cp.stderr[-3000:]
    case = json.loads(cp.stdout)["cases"][0]
    assert cp.returncode == (0 if case["verdict"] == "recovered" else 1), f"{case['verdict']}: {case['reasons']}"
    run = (Path(results["TESTBED_RESULTS"]) / "latest").resolve()
    if path.endswith("-swap.yaml"):
        check_judged(case, run / case["case"])
    return case


def events(case: dict, results: dict[str, str]) -> list[dict]:
    run = (Path(results["TESTBED_RESULTS"]) / "latest").resolve()
    return [json.loads(x) for x in (run / case["case"] / "events.jsonl").read_text().splitlines()]


def test_iscsi_swap(results: dict[str, str]) -> None:
    case = run_one("scenarios/iscsi-swap.yaml", results)
    ev = events(case, results)
    export = next(e for e in ev if e["name"] == "nas-export")
    assert export["configured_with"].startswith("rtslib-fb")
    assert export["acls"] == [f"iqn.2026-11.org.netswap:{case['tag']}-client"]
    attached = next(e for e in ev if e["name"] == "storage-attached")
    assert "/dev/sd" in attached["proc_swaps"]
    assert any("-1000" in x for x in attached["iscsid"])
    assert case["figures"]["net_tx_mb"] > 10  # swap traffic went over the wire
    if case["verdict"] == "recovered":
        assert "iscsi_txdata_octets" in case["protocol_counters"]["after"]


def test_aoe_swap(results: dict[str, str]) -> None:
    case = run_one("scenarios/aoe-swap.yaml", results)
    ev = events(case, results)
    attached = next(e for e in ev if e["name"] == "storage-attached")
    assert "e0.1" in attached["discovered"] and "/dev/etherd/e0.1" in attached["proc_swaps"]
    assert "memalloc" in attached["note"]
    assert case["figures"]["net_tx_mb"] > 10


def test_nbd_swap(results: dict[str, str]) -> None:
    """nbd-client stays resident (-nonetlink), locked in memory and out of the OOM killer's reach (-swap)."""
    case = run_one("scenarios/nbd-swap.yaml", results)
    ev = events(case, results)
    attached = next(e for e in ev if e["name"] == "storage-attached")
    assert "/dev/nbd0" in attached["proc_swaps"] and "-nonetlink -swap" in attached["nbd_client"]
    assert attached["nbd_client_pids"] and attached["nbd_client_oom_score_adj"] == -1000
    assert attached["nbd_client_vmlck_kb"] > 0  # mlockall took
    assert case["figures"]["net_tx_mb"] > 10


@pytest.mark.slow
@pytest.mark.parametrize("proto", ["nfs", "iscsi", "aoe", "nbd"])
@pytest.mark.parametrize("kind", ["mmap", "write"])
def test_file_workloads(proto: str, kind: str, results: dict[str, str]) -> None:
    case = run_one(f"scenarios/{proto}-{kind}.yaml", results)
    assert case["verdict"] in ("recovered", "deadlocked", "livelocked"), case["reasons"]
    assert case["figures"]["net_tx_mb"] > 10  # the file really went over the wire
    assert case["figures"]["nr_writeback_peak"] is not None
