"""Issue 5 on real guests: the smoke matrix, Ctrl-C in case 2, --resume, report, JUnit."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, cli, leftovers
from junitparser import JUnitXml

pytestmark = [pytest.mark.system, pytest.mark.slow]


def test_smoke_matrix_interrupt_resume_report(results: dict[str, str], tmp_path: Path) -> None:
    root = Path(results["TESTBED_RESULTS"])
    p = subprocess.Popen([sys.executable, "-m", "testbed", "matrix", "scenarios/matrix/smoke.yaml"], cwd=REPO,
                         env={**os.environ, **results}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:  # wait for case 2's workload
        ev = list(root.glob("*/iscsi.incomplete/events.jsonl"))
        if ev and '"name": "workload"' in ev[0].read_text():
            break
        if p.poll() is not None:
            pytest.fail(f"matrix ended early: {p.stderr.read()[-2000:]}")
        time.sleep(1)
    else:
        p.kill()
        pytest.fail("case 2 never reached its workload")
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert not leftovers()
    run = (root / "latest").resolve()
    first = run / "nfs" / "verdict.json"
    assert first.exists() and (run / "iscsi.incomplete").exists()
    stamp = first.stat().st_mtime

    cp = cli("matrix", "scenarios/matrix/smoke.yaml", "--resume", run.name, env=results)
    assert "1 case(s) already complete, 2 to run" in cp.stderr, cp.stderr[-3000:]
    assert first.stat().st_mtime == stamp  # case 1 was not rerun
    assert {p.name for p in run.iterdir() if p.is_dir()} == {"nfs", "iscsi", "aoe", "html"}
    assert (run / "html/index.html").exists() and (run / "html/cases/aoe.html").exists()  # written when it ended
    verdicts = {c: json.loads((run / c / "verdict.json").read_text())["verdict"] for c in ("nfs", "iscsi", "aoe")}
    assert set(verdicts.values()) <= {"recovered", "deadlocked", "livelocked"}, verdicts  # judged, never unknown
    bad = sum(v != "recovered" for v in verdicts.values())
    assert cp.returncode == (1 if bad else 0)
    assert "storage.protocol" in cp.stdout and f"{verdicts['aoe']}:1" in cp.stdout

    junit = tmp_path / "junit.xml"
    cp = cli("report", str(run), "--junit", str(junit), env=results)
    assert cp.returncode == 0 and "aoe" in cp.stdout
    suite = next(iter(JUnitXml.fromfile(str(junit))))
    assert suite.tests == 3 and suite.failures == bad and suite.errors == 0
    show = cli("show", f"{run.name}/aoe", env=results)
    assert show.returncode == 0 and f"aoe: {verdicts['aoe']}" in show.stdout and "console-client.log" in show.stdout
