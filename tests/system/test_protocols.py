"""Issue 4 (and 19's NBD): every protocol swaps (in CI); the file workloads on every protocol (slow marker)."""

import json
from pathlib import Path

import pytest
from conftest import check_judged, cli

pytestmark = pytest.mark.system


def run_one(path: str, results: dict[str, str], *extra: str) -> dict:
    cp = cli("run", path, "--json", *extra, env=results)
    assert cp.stdout, cp.stderr[-3000:]
    case = json.loads(cp.stdout)["cases"][0]
    assert cp.returncode == (0 if case["verdict"] == "recovered" else 1), f"{case['verdict']}: {case['reasons']}"
    run = (Path(results["TESTBED_RESULTS"]) / "latest").resolve()
    if path.endswith("-swap.yaml"):
        check_judged(case, run / case["case"])
    return case


# Issue 29: each protocol's swap case also dumps the client's memory at the end (evidence.dump: always), so
# that every CI run reads each protocol's kernel state from a real dump: its storage socket (SOCK_MEMALLOC)
# and its own queues (Storage.read_state).
DUMP = ("--set", "evidence.dump=always")


def forensics(case: dict, results: dict[str, str]) -> dict:
    run = (Path(results["TESTBED_RESULTS"]) / "latest").resolve()
    f = json.loads((run / case["case"] / "forensics.json").read_text())
    assert f["why"] == "finished" and not f["unread"], f["unread"]
    assert case["figures"]["dump_mb"] > 10 and f["memory"]["swap_total_kb"] > 0
    return f


def storage_sockets(f: dict, port: int) -> list[dict]:
    return [s for s in f["sockets"] if s["remote"].endswith(f":{port}")]


def events(case: dict, results: dict[str, str]) -> list[dict]:
    run = (Path(results["TESTBED_RESULTS"]) / "latest").resolve()
    return [json.loads(x) for x in (run / case["case"] / "events.jsonl").read_text().splitlines()]


def test_iscsi_swap(results: dict[str, str]) -> None:
    case = run_one("scenarios/iscsi-swap.yaml", results, *DUMP)
    ev = events(case, results)
    f = forensics(case, results)
    (sock,) = storage_sockets(f, 3260)
    assert sock["memalloc"] and f["memory"]["memalloc_socks"] == 1
    (conn,) = f["protocol"]["iscsi_connections"]
    assert conn["socket"].endswith(":3260") and conn["session_state"] == "LOGGED_IN"
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
    case = run_one("scenarios/aoe-swap.yaml", results, *DUMP)
    ev = events(case, results)
    f = forensics(case, results)
    assert f["memory"]["memalloc_socks"] == 0  # AoE has no socket to mark
    (dev,) = f["protocol"]["aoe_devices"]
    assert dev["device"] == "e0.1" and "UP" in dev["flags"] and dev["targets"]
    attached = next(e for e in ev if e["name"] == "storage-attached")
    assert "e0.1" in attached["discovered"] and "/dev/etherd/e0.1" in attached["proc_swaps"]
    assert "memalloc" in attached["note"]
    assert case["figures"]["net_tx_mb"] > 10


def test_nbd_swap(results: dict[str, str]) -> None:
    """nbd-client stays resident (-nonetlink), locked in memory and out of the OOM killer's reach (-swap)."""
    case = run_one("scenarios/nbd-swap.yaml", results, *DUMP)
    ev = events(case, results)
    f = forensics(case, results)
    (sock,) = storage_sockets(f, 10809)
    assert sock["memalloc"] and f["memory"]["memalloc_socks"] == 1
    (dev,) = f["protocol"]["nbd_devices"]
    assert dev["device"] == "nbd0" and dev["connections"][0]["socket"] == f"{sock['local']}>{sock['remote']}"
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
