"""The guest workload program, compiled and run on the host: its pattern and progress lines are real,
and so is the never-read UDP sink the udp-flood fault fills."""

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from testbed.faults.traffic import udp_socket_on

SRC = Path(__file__).parents[3] / "guest"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("work") / "tb-work"
    subprocess.run([cc, "-O2", "-o", str(out), str(SRC / "work.c")], check=True)
    return out


def test_anon_writes_verifies_and_reports(work: Path) -> None:
    cp = subprocess.run([str(work), "anon", "8", "2", "5"], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stdout
    lines = [json.loads(x) for x in cp.stdout.splitlines()]
    assert lines[-1]["done"] is True and lines[-1]["pages"] == 8 * 256 and lines[-1]["passes"] == 2
    progress = [x for x in lines if "progress" in x]
    assert progress[-1]["progress"] == progress[-1]["total"] == 8 * 256 * 2 * 2
    assert {x["phase"] for x in progress} == {"write", "verify"}


def test_bad_arguments_are_refused(work: Path) -> None:
    cp = subprocess.run([str(work), "anon", "0", "1", "1"], capture_output=True, text=True)
    assert cp.returncode == 2 and "usage" in cp.stdout


@pytest.mark.parametrize("mode", ["mmap-shared", "write"])
def test_file_modes_write_sync_and_verify(work: Path, tmp_path: Path, mode: str) -> None:
    target = tmp_path / "data"
    cp = subprocess.run([str(work), mode, str(target), "4", "2", "9"], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stdout
    lines = [json.loads(x) for x in cp.stdout.splitlines()]
    assert lines[-1]["done"] is True
    phases = {x["phase"] for x in lines if "progress" in x}
    assert phases == {"write", "sync", "verify"}
    last = [x for x in lines if "progress" in x][-1]
    assert last["progress"] == last["total"] == 4 * 256 * 3 * 2
    data = target.read_bytes()
    assert len(data) == 4 * 2**20
    page7 = data[7 * 4096 : 7 * 4096 + 16]
    assert int.from_bytes(page7[:8], "little") == 7 and int.from_bytes(page7[8:], "little") == 9 + 1  # last pass's seed


def test_unwritable_file_is_an_error(work: Path) -> None:
    cp = subprocess.run([str(work), "write", "/nonexistent/dir/file", "1", "1", "1"], capture_output=True, text=True)
    assert cp.returncode == 2 and "open /nonexistent/dir/file" in cp.stdout


@pytest.fixture
def sink(work: Path):
    """tb-work udp-sink on a free port with a small buffer, killed afterwards."""
    p = subprocess.Popen([str(work), "udp-sink", "0", "16384"], stdout=subprocess.PIPE, text=True)
    try:
        yield p, json.loads(p.stdout.readline())
    finally:
        p.kill()
        p.wait(5)


def test_udp_sink_fills_and_never_reads(sink) -> None:
    proc, said = sink
    port, rcvbuf = said["listening"], said["rcvbuf"]
    assert port > 0 and rcvbuf >= 16384  # the kernel doubles what was asked (bookkeeping overhead)
    assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == "tb-udp-sink"  # not the workload in OOM reports
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(200):
        s.sendto(b"\0" * 1400, ("127.0.0.1", port))
    s.close()
    time.sleep(0.2)
    entry = udp_socket_on(Path("/proc/net/udp").read_text(), port)
    assert entry is not None and entry["drops"] > 0 and entry["rx_queue"] >= rcvbuf // 2
    assert proc.poll() is None  # still there, still not reading


def test_udp_sink_refuses_a_taken_port_and_bad_arguments(work: Path, sink) -> None:
    cp = subprocess.run([str(work), "udp-sink", str(sink[1]["listening"])], capture_output=True, text=True, timeout=10)
    assert cp.returncode == 2 and json.loads(cp.stdout)["error"].startswith("bind ")
    for args in (["70000"], ["x"], ["1", "2", "3"], []):
        cp = subprocess.run([str(work), "udp-sink", *args], capture_output=True, text=True, timeout=10)
        assert cp.returncode == 2 and "usage" in cp.stdout


def test_readers_share_the_mappings_and_verify_every_read(work: Path) -> None:
    cp = subprocess.run([str(work), "readers", "4", "8", "2", "3"], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stdout
    lines = [json.loads(x) for x in cp.stdout.splitlines()]
    assert lines[-1] | {"seconds": 0} == {"done": True, "pages": 8 * 256, "passes": 2, "processes": 4, "seconds": 0}
    last = [x for x in lines if "progress" in x][-1]
    assert last["progress"] == last["total"] == 8 * 256 * 3  # one write, two reads


def test_a_killed_reader_ends_the_readers(work: Path) -> None:
    proc = subprocess.Popen([str(work), "readers", "2", "64", "1000", "3"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(kids) == 2
        subprocess.run(["kill", "-9", kids[0]], check=True)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 4
    assert "killed by signal 9" in out.splitlines()[-1]


def test_run_needs_its_cgroup(work: Path, tmp_path: Path) -> None:
    # Not a cgroup v2 folder: the procs file cannot take the pid; the command never runs.
    cp = subprocess.run([str(work), "run", str(tmp_path / "none" / "g"), "true"], capture_output=True, text=True)
    assert cp.returncode == 2 and "mkdir" in json.loads(cp.stdout)["error"]


def test_run_joins_stderr_to_stdout(work: Path, tmp_path: Path) -> None:
    group = tmp_path / "g"  # a plain folder stands in for the cgroup: its procs file takes the pid
    group.mkdir()
    (group / "cgroup.procs").write_text("")
    cp = subprocess.run([str(work), "run", str(group), "sh", "-c", "echo out; echo err >&2; exit 3"],
                        capture_output=True, text=True)
    assert cp.returncode == 3 and cp.stdout == "out\nerr\n" and cp.stderr == ""
    assert (group / "cgroup.procs").read_text().strip().isdigit()
