"""Issue 3 end to end: the NFS scenario, the three controls, Ctrl-C mid-workload, a failed run."""

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, check_judged, cli, leftovers

pytestmark = pytest.mark.system

CASE_FILES = {"scenario.yaml", "events.jsonl", "timeline.csv", "verdict.json", "console-client.log"}


def events(case: Path) -> list[dict]:
    return [json.loads(x) for x in (case / "events.jsonl").read_text().splitlines()]


def only_case(results: dict[str, str]) -> Path:
    run = Path(results["TESTBED_RESULTS"]) / "latest"
    cases = [p for p in run.resolve().iterdir() if p.is_dir() and p.name != "html"]  # html/: the run's report
    assert len(cases) == 1, cases
    return cases[0]


@pytest.mark.parametrize("version", ["3", pytest.param("4.2", marks=pytest.mark.slow)])
def test_nfs_swap_judged(version: str, results: dict[str, str]) -> None:
    cp = cli("run", "scenarios/nfs-swap.yaml", "--set", f"storage.nfs.version={version}", "--json", env=results)
    assert cp.stdout, cp.stderr[-2000:]
    out = json.loads(cp.stdout)["cases"][0]
    assert cp.returncode == (0 if out["verdict"] == "recovered" else 1), cp.stderr[-2000:]
    case = only_case(results)
    check_judged(out, case)
    assert CASE_FILES | {"console-nas.log"} <= {p.name for p in case.iterdir()}
    attached = [e for e in events(case) if e["name"] == "storage-attached"][0]
    assert f"vers={version}" in attached["mount"] and "swapfile" in attached["proc_swaps"]
    rows = list(csv.DictReader(open(case / "timeline.csv")))
    assert len(rows) > 10
    assert int(rows[-1]["pswpout"]) >= int(rows[0]["pswpout"])
    for key in ("pfmemalloc_drop_peak", "allocstall", "oom_kill", "case_wall_s"):
        assert key in out["figures"]


def test_controls(results: dict[str, str]) -> None:
    files = ["scenarios/controls/local-swap.yaml", "scenarios/controls/nas-frozen.yaml", "scenarios/controls/nas-frozen-60s.yaml",
             "scenarios/controls/client-frozen.yaml", "scenarios/controls/nas-service-down.yaml",
             "scenarios/controls/client-panic.yaml"]
    cp = cli("run", *files, "--json", env=results)
    assert cp.stdout, cp.stderr[-3000:]
    cases = {c["scenario"]: c for c in json.loads(cp.stdout)["cases"]}
    assert cases["control-local-swap"]["verdict"] == "recovered"
    frozen = cases["control-nas-frozen"]
    assert frozen["verdict"] == "stalled" and "probe" in frozen["reasons"][-1], frozen["reasons"]
    # Each control is decided by its evidence: the client's QMP status, the NAS's service read-back.
    paused = cases["control-client-frozen"]
    assert paused["verdict"] == "unknown" and "client VM was paused" in paused["reasons"][-1], paused["reasons"]
    folder = Path(json.loads(cp.stdout)["path"]) / "control-nas-frozen"
    assert "Show Blocked State" in (folder / "sysrq-client.txt").read_text()
    # The memory dump at the stall, read with drgn: tasks with stacks, zones, reserves, the NFS socket.
    state = json.loads((folder / "forensics.json").read_text())
    assert state["unread"] == {} and state["why"] == "stall" and state["dump"]["mb"] > 10, state["unread"]
    blocked = [t for t in state["tasks"] if t["state"] == "D"]
    assert blocked and all(t.get("frames") for t in blocked), blocked
    assert {z["zone"] for z in state["memory"]["zones"]} >= {"DMA32"} and state["memory"]["memalloc_socks"] >= 1
    assert [s for s in state["sockets"] if s["remote"].endswith(":2049") and s["memalloc"]], state["sockets"]
    assert [n for n in state["nics"] if n.get("driver") == "virtio_net" and n["rx"]], state["nics"]
    (rpc,) = state["protocol"]["rpc_transports"]
    assert rpc["swapper"] and sum(rpc["sending_procedures"].values()) == rpc["sending_queue"], rpc
    nfs = next(s for s in state["sockets"] if s["remote"].endswith(":2049"))
    assert nfs["tcp"]["ca_state"] in ("Loss", "Open", "Disorder", "Recovery", "CWR") and "RetransSegs" in state["netstat"]
    # The frozen NAS is the suspect side: the NAS VM is dumped too, and read (its NFS server's port 2049)
    nas = json.loads((folder / "forensics-nas.json").read_text())
    assert nas["why"] == "stall" and nas["unread"] == {}, nas["unread"]
    assert [s for s in nas["sockets"] if s["local"].endswith(":2049")], nas["sockets"]
    shown = cli("show", str(folder), env=results).stdout
    assert "state at the stall" in shown and "zone DMA32: free" in shown and "NAS state at the stall" in shown
    # A panic pauses the client (pvpanic, set-action panic=pause): dumped at the panic, then ended: unknown.
    panicked = cases["control-client-panic"]
    assert panicked["verdict"] == "unknown", panicked["reasons"]
    at_panic = json.loads((folder.parent / "control-client-panic" / "forensics.json").read_text())
    assert at_panic["why"] == "panic" and any("sysrq_handle_crash" in t.get("frames", []) for t in at_panic["tasks"])
    down = cases["control-nas-service-down"]
    assert down["verdict"] == "stalled" and "service probe" in down["reasons"][-1], down["reasons"]
    thawed = cases["control-nas-frozen-60s"]
    assert thawed["figures"]["time_to_recover_s"] is not None, thawed["reasons"]
    # Every control gives exactly its `expect:` (recovered when it names none), so the exit status is 0.
    assert all(c["as_expected"] for c in cases.values()), {n: (c["verdict"], c["expected"]) for n, c in cases.items()}
    assert cp.returncode == 0


@pytest.mark.slow  # CI tier: tests/system/test_stop.py (SIGINT and SIGTERM mid-workload)
@pytest.mark.parametrize("scenario,mark", [
    ("scenarios/nfs-swap.yaml", '"name": "workload"'),
    # A fault in place: dnsmasq on the host (in the run's namespace), udhcpc in the guest.
    ("scenarios/faults/dhcp-renew.yaml", '"name": "dhcp:inject"'),
])
def test_sigint_mid_workload_leaves_nothing(scenario: str, mark: str, results: dict[str, str]) -> None:
    import os

    p = subprocess.Popen([sys.executable, "-m", "testbed", "run", scenario], cwd=REPO,
                         env={**os.environ, **results}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = Path(results["TESTBED_RESULTS"])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ev = list(root.glob("*/*.incomplete/events.jsonl"))
        if ev and mark in ev[0].read_text():
            break
        time.sleep(0.5)
    else:
        p.kill()
        pytest.fail(f"never saw {mark}")
    time.sleep(5)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert not leftovers()
    assert list(root.glob("*/*.incomplete")), "an interrupted case must not look complete"
    assert "nothing of ours to clean" in cli("clean").stdout


def test_failed_setup_is_unknown_and_clean(results: dict[str, str]) -> None:
    # Cold boots: a guest restored from its ready snapshot is ready well within 1 s.
    cp = cli("run", "scenarios/nfs-swap.yaml", "--set", "deadlines.boot_s=1", "--set", "client.boot=cold",
             "--set", "nas.boot=cold", "--json", env=results)
    assert cp.returncode == 2, cp.stderr[-2000:]
    case = json.loads(cp.stdout)["cases"][0]
    assert case["verdict"] == "unknown"
    assert "did not report ready within 1 s" in case["reasons"][0]
