"""Issue 6 on real guests: each shipped fault scenario ends in a verdict, its injection and heal are
in the history at the scheduled times, and its effect is visible (slow: about 2-3 minutes each)."""

import json
from pathlib import Path

import pytest
from conftest import REPO, cli

from testbed.config.scenario import VERDICTS

pytestmark = [pytest.mark.system, pytest.mark.slow]

FAULTS = sorted(p.name for p in (REPO / "scenarios/faults").glob("*.yaml"))


@pytest.mark.parametrize("name", FAULTS)
def test_fault_scenario(name: str, results: dict[str, str]) -> None:
    cp = cli("run", f"scenarios/faults/{name}", "--json", env=results)
    assert cp.stdout, cp.stderr[-3000:]
    case = json.loads(cp.stdout)["cases"][0]
    assert case["verdict"] in VERDICTS and case["verdict"] != "unknown", case["reasons"]
    run = (Path(results["TESTBED_RESULTS"]) / "latest").resolve()
    events = [json.loads(x) for x in (run / case["case"] / "events.jsonl").read_text().splitlines()]
    faults = [e for e in events if e["kind"] == "fault"]
    if not faults:  # large-wsize-small-mtu shapes the topology, it schedules nothing
        return
    start = next(e["t"] for e in events if e["kind"] == "phase" and e["name"] == "workload")
    for e in faults:
        if e["name"].endswith((":inject", ":heal")) and not e.get("teardown"):
            assert abs(e["started_t"] - e["scheduled_s"]) <= 1.0, e
            assert e["scheduled_s"] >= start
    heals = [e for e in faults if e["name"].endswith(":heal")]
    assert all(h.get("visible", True) for h in heals), heals
    if name == "ipsec.yaml":
        capture = next(e for e in faults if e["name"] == "ipsec:capture")
        assert capture["capture_esp"] > 0 and capture["capture_clear_storage"] == 0
        assert [e for e in faults if e["name"] == "ipsec:rekey"]
