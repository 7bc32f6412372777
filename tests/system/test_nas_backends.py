"""Issue 14 on real guests: the NAS as userspace servers (nfs-ganesha with a private rpcbind, tgt,
vblade) in a namespace of the run and in a Docker container serves a client VM's swap for every protocol
(the docker ones skip, saying why, where no engine answers); a Mininet Topo (two switches,
a rate-limited trunk, a traffic host) runs end to end. Nothing of ours is left (the autouse fixture)."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, check_judged, cli, leftovers

pytestmark = pytest.mark.system


def run_case(path: str, results: dict[str, str], *sets: str) -> tuple[dict, list[dict]]:
    cp = cli("run", path, "--json", *(x for s in sets for x in ("--set", s)), env=results)
    assert cp.stdout, cp.stderr[-3000:]
    case = json.loads(cp.stdout)["cases"][0]
    run = (Path(results["TESTBED_RESULTS"]) / "latest").resolve()
    check_judged(case, run / case["case"])
    ev = [json.loads(x) for x in (run / case["case"] / "events.jsonl").read_text().splitlines()]
    return case, ev


def engine_or_skip() -> None:
    from testbed.errors import TestbedError
    from testbed.nas import container

    try:
        container.client()
    except TestbedError as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("backend, proto, server", [
    # CI tier: one userspace-NAS case; the others are slow
    pytest.param(b, p, s, marks=[] if (b, p) == ("netns", "nfs") else [pytest.mark.slow])
    for p, s in (("nfs", "ganesha"), ("iscsi", "tgt"), ("aoe", "vblade")) for b in ("netns", "docker")])
def test_userspace_nas_serves_swap(backend: str, proto: str, server: str, results: dict[str, str]) -> None:
    if backend == "docker":
        engine_or_skip()
    case, ev = run_case(f"scenarios/{proto}-swap.yaml", results, f"nas.backend={backend}")
    assert case["boot"]["nas"]["mode"] == backend
    net = next(e for e in ev if e["kind"] == "fact" and e["name"] == "network")
    assert net["hosted"] == {"nas": f"{case['tag']}-nas"}
    export = next(e for e in ev if e["name"] == "nas-export")
    assert server in json.dumps(export)
    probes = next(e for e in ev if e["kind"] == "fact" and e["name"] == "nas-probes")
    assert "ip netns pids" in probes["nas_service"] and "no guest to ping" in probes["nas_agent_ms"]
    timeline = (Path(results["TESTBED_RESULTS"]) / "latest").resolve() / case["case"] / "timeline.csv"
    rows = timeline.read_text().splitlines()
    col = rows[0].split(",").index("nas_service")
    assert any(r.split(",")[col] == "1" for r in rows[1:])  # the probe saw the server up in the NAS's namespace
    assert case["figures"]["net_tx_mb"] > 10  # swap really crossed the veth


@pytest.mark.slow
def test_mininet_dumbbell_end_to_end(results: dict[str, str]) -> None:
    case, ev = run_case("scenarios/nfs-swap-dumbbell.yaml", results)
    net = next(e for e in ev if e["kind"] == "fact" and e["name"] == "network")
    (trunk,) = net["trunks"]
    assert (trunk["a"], trunk["b"]) == ("s1", "s2") and all("tbf 100.0 Mbit/s" in s for s in trunk["shaping"])
    assert net["hosted"] == {"traffic": f"{case['tag']}-traffic"}
    assert case["figures"]["net_tx_mb"] > 10


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["netns", "docker"])
def test_ctrl_c_during_a_userspace_nas_case_leaves_nothing(backend: str, results: dict[str, str]) -> None:
    if backend == "docker":
        engine_or_skip()
    before = leftovers()
    p = subprocess.Popen([sys.executable, "-m", "testbed", "run", "scenarios/nfs-swap.yaml", "--set", f"nas.backend={backend}"],
                         cwd=REPO, env={**__import__("os").environ, **results}, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    assert p.stdout
    for line in p.stdout:  # interrupt once the workload runs: ganesha, rpcbind and the namespaces exist
        if "workload" in line:
            break
    time.sleep(3)
    p.send_signal(signal.SIGINT)
    assert p.wait(120) == 130
    assert [x for x in leftovers() if x not in before] == []
    out = subprocess.run(["ps", "-eo", "stat,comm"], capture_output=True, text=True).stdout.splitlines()
    assert not [ln for ln in out if ln.split()[-1] in ("ganesha.nfsd", "rpcbind", "tgtd", "vblade")], out
    if backend == "docker":
        from testbed.nas import container

        assert container.client().containers.list(all=True, filters={"label": container.LABEL}) == []
