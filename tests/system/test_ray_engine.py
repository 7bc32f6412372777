"""Issue 17: the smoke matrix on a local Ray cluster (`--engine ray`): the same case ids as a local run,
a verdict each; a Ray worker killed mid-case leads to one recorded retry; Ctrl-C of the driver leaves
nothing of ours. Slow (about 10 minutes here) and needs `pip install '.[ray]'`."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import REPO, leftovers

pytestmark = [pytest.mark.system, pytest.mark.slow]
ray = pytest.importorskip("ray", reason="ray is an optional extra: pip install '.[ray]'")


@pytest.fixture
def cluster():
    # Ray's unix sockets live under RAY_TMPDIR: pytest's own temporary paths are too long for them.
    tmp = tempfile.mkdtemp(prefix="tbray", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": tmp}
    res = subprocess.run([sys.executable, "-m", "testbed", "node-resources"], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    ray_bin = str(Path(sys.executable).parent / "ray")
    subprocess.run([ray_bin, "start", "--head", "--num-cpus", "2", "--resources", res.stdout.strip(),
                    "--include-dashboard=false", "--disable-usage-stats"], check=True, env=env, capture_output=True)
    yield env
    subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True)
    shutil.rmtree(tmp, ignore_errors=True)


def _workers() -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::run_remote"):
                out.append(int(pid))
        except OSError:
            pass
    return out


def test_smoke_on_ray_with_a_lost_worker(cluster: dict[str, str], results: dict[str, str]) -> None:
    env = {**cluster, **results}
    p = subprocess.Popen([sys.executable, "-m", "testbed", "matrix", "scenarios/matrix/smoke.yaml", "--engine", "ray",
                          "--json"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not _workers():
        time.sleep(1)
    time.sleep(20)  # the first case is booting its VMs
    killed = _workers()
    assert killed, "no Ray worker ran a case"
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    out, err = p.communicate(timeout=1800)
    assert out, err[-3000:]
    data = json.loads(out)
    run = Path(data["path"])
    assert sorted(c["case"] for c in data["cases"]) == ["aoe", "iscsi", "nfs"]  # a local run's case ids
    assert all(c["verdict"] in ("recovered", "deadlocked", "livelocked", "stalled", "oom") for c in data["cases"])
    log = [json.loads(x) for x in (run / "engine.jsonl").read_text().splitlines()]
    lost = [e for e in log if e.get("lost")]
    assert len(lost) == 1 and lost[0]["attempt"] == 1, log
    retried = json.loads((run / lost[0]["case"] / "verdict.json").read_text())["engine"]
    assert retried["attempt"] == 2 and retried["engine"] == "ray"
    assert not leftovers()


def test_ctrl_c_of_the_driver_leaves_nothing(cluster: dict[str, str], results: dict[str, str]) -> None:
    env = {**cluster, **results}
    p = subprocess.Popen([sys.executable, "-m", "testbed", "matrix", "scenarios/matrix/smoke.yaml", "--engine", "ray"],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(n.startswith("qemu") for n in leftovers()):
        time.sleep(1)
    time.sleep(10)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, err[-2000:]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and leftovers():
        time.sleep(2)
    assert not leftovers(), leftovers()
