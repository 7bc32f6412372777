"""The testbed's own faults (issue 18), on real guests: a QEMU killed under a case is `unknown` naming the
VM and the signal, and the teardown completes; the orchestrator SIGKILLed mid-case leaves a partial case
that never counts, `testbed clean` removes what it left, and the next run works; two runs at once stay
apart. Nothing of ours is left after any of them."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, cli, leftovers

from testbed.host.leftovers import find_our_qemus

pytestmark = [pytest.mark.system, pytest.mark.slow]


def start(results: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "testbed", "run", *args], cwd=REPO, env={**os.environ, **results},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def until_workload(p: subprocess.Popen) -> list[str]:
    seen = []
    assert p.stdout
    for line in p.stdout:
        seen.append(line)
        if "workload" in line and "pages" in line:
            return seen
    raise AssertionError("the case never reached its workload:\n" + "".join(seen[-30:]))


def verdicts(results: dict[str, str]) -> list[dict]:
    run = (Path(results["TESTBED_RESULTS"]) / "latest").resolve()
    return [json.loads(f.read_text()) for f in sorted(run.glob("*/verdict.json"))]


@pytest.mark.parametrize("role", ["client", "nas"])
def test_qemu_killed_under_a_case_is_unknown_naming_it(role: str, results: dict[str, str]) -> None:
    p = start(results, "scenarios/nfs-swap.yaml")
    until_workload(p)
    ours = [pid for pid, name in find_our_qemus() if name.endswith(f"-{role}")]
    assert len(ours) == 1, find_our_qemus()
    os.kill(ours[0], signal.SIGKILL)
    p.communicate(timeout=600)
    assert p.returncode == 2  # a testbed failure
    (case,) = verdicts(results)
    assert case["verdict"] == "unknown", case["reasons"]
    assert f"the {role} VM's QEMU was killed by SIGKILL" in case["reasons"][0]
    assert leftovers() == []


def test_orchestrator_sigkilled_mid_case(results: dict[str, str]) -> None:
    p = start(results, "scenarios/soak.yaml")
    until_workload(p)
    p.kill()
    p.wait(30)
    run = (Path(results["TESTBED_RESULTS"]) / "latest").resolve()
    assert [d.name for d in run.iterdir() if d.is_dir() and d.name != "html"] == ["soak.incomplete"]
    cp = cli("report", str(run), env=results)
    assert cp.returncode == 3 and "has no complete case" in cp.stderr  # the partial case never counts
    cp = cli("clean", env=results)
    assert cp.returncode == 0, cp.stderr
    assert leftovers() == []
    cp = cli("run", "scenarios/soak.yaml", "--json", env=results)  # the next run works
    assert json.loads(cp.stdout)["cases"][0]["verdict"] in ("recovered", "deadlocked"), cp.stderr[-2000:]
    assert leftovers() == []


def test_two_runs_at_once_stay_apart(results: dict[str, str], tmp_path: Path) -> None:
    """On 2 cores four TCG vCPUs starve each other: an unknown naming the starvation is acceptable,
    a product verdict caused by it is not (the judge's starvation rule turns it into unknown)."""
    other = {"TESTBED_RESULTS": str(tmp_path / "other")}
    a = start(results, "scenarios/soak.yaml", "--json")
    time.sleep(2)
    b = start(other, "scenarios/soak.yaml", "--json")
    outs = [p.communicate(timeout=900)[0] for p in (a, b)]
    tags = set()
    for out in outs:
        case = json.loads(out[out.index("{"):])["cases"][0]
        tags.add(case["tag"])
        assert case["verdict"] in ("recovered", "deadlocked", "unknown"), case["reasons"]
        if case["verdict"] == "unknown":
            assert "host CPU" in " ".join(case["reasons"]), case["reasons"]
    assert len(tags) == 2
    assert leftovers() == []


def test_results_disk_full(tmp_path: Path) -> None:
    """TESTBED_RESULTS on a small filesystem of its own (a size-limited tmpfs): the first case is recorded;
    once the disk is full, the next case ends with one clear line (exit 2), is never counted, and the
    earlier case and the index stay readable."""
    disk = tmp_path / "results"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)], check=True)
    try:
        env = {"TESTBED_RESULTS": str(disk)}
        first = cli("run", "scenarios/soak.yaml", "--json", "--no-html", env=env)
        assert first.returncode in (0, 1), first.stderr[-2000:]
        filler = disk / "filler"
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        with open(filler, "wb") as f:  # leave two pages: the next case's folder cannot fit
            f.write(b"\0" * max(0, free - 8 * 1024))
        second = cli("run", "scenarios/soak.yaml", "--no-html", env=env)
        assert second.returncode == 2, second.stderr[-2000:]
        line = second.stderr.strip().splitlines()[-1]
        assert "disk full" in line and "recorded" in line and "Traceback" not in second.stderr, second.stderr[-3000:]
        filler.unlink()
        runs = sorted(p for p in disk.iterdir() if p.is_dir() and not p.is_symlink())
        assert len(runs) == 2
        assert (runs[0] / "soak" / "verdict.json").is_file()  # the earlier case intact
        assert not (runs[1] / "soak" / "verdict.json").exists()  # the full disk's case never counts
        cp = cli("report", str(runs[0]), "--json", env=env)
        assert cp.returncode == 0, cp.stderr
        cp = cli("index", "--rebuild", env=env)
        assert cp.returncode == 0 and "indexed 1 case(s)" in cp.stdout, cp.stdout + cp.stderr
        assert leftovers() == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)
