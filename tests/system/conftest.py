import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.host.leftovers import remaining

REPO = Path(__file__).parents[2]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    why = None
    if os.geteuid() != 0:
        why = "system tests need root (namespaces, taps)"
    elif not shutil.which("qemu-system-x86_64") or not shutil.which("mmdebstrap"):
        why = "system tests need qemu-system-x86_64 and mmdebstrap (run ./bootstrap)"
    for item in items:
        if "tests/system" in str(item.fspath):
            item.add_marker(pytest.mark.system)
            if why:
                item.add_marker(pytest.mark.skip(reason=why))


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "testbed", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, env={**os.environ, **(env or {})})


def leftovers() -> list[str]:
    return remaining()


@pytest.fixture
def results(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """Each test writes its results to its own folder: under TESTBED_TEST_RESULTS when set (kept, so a
    surprising case can be read and committed after the run), else in pytest's temporary folders
    (rotated away after three sessions)."""
    keep = os.environ.get("TESTBED_TEST_RESULTS")
    if not keep:
        return {"TESTBED_RESULTS": str(tmp_path / "results")}
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in request.node.name)
    return {"TESTBED_RESULTS": str(Path(keep) / name)}


@pytest.fixture(autouse=True)
def nothing_left_behind():
    before = leftovers()
    yield
    after = [x for x in leftovers() if x not in before]
    assert not after, f"left behind: {after}"


# Swap to network storage at 128 MB can really deadlock (seen here on NFS and on AoE): the tests
# demand a judged verdict backed by its evidence, not a particular outcome of that race.
PRODUCT_VERDICTS = ("recovered", "deadlocked", "livelocked")


def check_judged(out: dict, case: Path) -> None:
    """A product verdict (never corrupted, io-error or unknown), and a deadlock proven by its evidence:
    evidence.json with a classified blocked task on the memory/storage path."""
    assert out["verdict"] in PRODUCT_VERDICTS, out["reasons"]
    if out["verdict"] == "recovered":
        assert out["figures"]["swap_out_mb"] > 50
    else:
        assert "Show Blocked State" in (case / "sysrq-client.txt").read_text()
        assert "NAS was healthy" in " ".join(out["reasons"])
    if out["verdict"] == "deadlocked":
        evidence = json.loads((case / "evidence.json").read_text())["evidence"]
        assert any(set(t["classes"]) - {"lock", "page-lock", "virtio-console"} for t in evidence["blocked"]), evidence
