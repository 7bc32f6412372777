"""Issue 2 on real guests: boot, exec through the agent, telemetry, accelerator, Ctrl-C while booting."""

import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, leftovers, cli

pytestmark = pytest.mark.system

from testbed.host.cleanup import Cleanup
from testbed.host.leftovers import find_our_qemus
from testbed.images.build import ensure
from testbed.host.paths import runtime_dir
from testbed.host.tags import new_tag, vm_name
from testbed.vm import accel
from testbed.vm.argv import VMSpec
from testbed.vm.machine import VM


def test_image_build_second_call_is_cached() -> None:
    cli("image", "build", "all", timeout=1200)
    t = time.monotonic()
    cp = cli("image", "build", "all")
    assert cp.returncode == 0, cp.stderr
    assert time.monotonic() - t < 5  # the target is 2 s; this bounds a broken cache, not speed
    assert cp.stdout.count("cached") == 2


@pytest.mark.slow  # every case boots both VMs; this one alone, in the slow tier
def test_boot_exec_and_telemetry() -> None:
    image = ensure("client", say=lambda m: None)
    tag = new_tag()
    choice = accel.choose("auto", image, say=lambda m: None)
    with Cleanup() as undo:
        rundir = runtime_dir() / tag
        rundir.mkdir(parents=True)
        undo.push("rundir", shutil.rmtree, rundir, True)
        vm = VM(VMSpec(name=vm_name(tag, "client"), kernel=image.kernel, initrd=image.initrd, root=image.root,
                       rundir=rundir, mem_mb=128, accel=choice.accel), undo)
        vm.start()
        vm.wait_ready(90)
        assert vm.agent.ready_msg["kernel"] == image.kernel_version
        assert vm.agent.ready_msg["mlocked"] is True
        res = vm.exec(["uname", "-r"], 10)
        assert res.ok and res.stdout.strip() == image.kernel_version
        status = vm.exec(["sh", "-c", "echo out; echo err >&2; exit 7"], 10)
        assert (status.status, status.stdout, status.stderr) == (7, "out\n", "err\n")
        slow = vm.exec(["sleep", "30"], 1)
        assert slow.timed_out
        deadline = time.monotonic() + 10
        while vm.agent.telemetry is None and time.monotonic() < deadline:
            time.sleep(0.2)
        tel = vm.agent.telemetry
        assert tel and 70000 < tel["meminfo"]["MemTotal"] < 90000
        assert "PFMemallocDrop" in tel["netstat"]["TcpExt"]
        assert "pswpout" in tel["vmstat"] and "Tcp" in tel["snmp"] and isinstance(tel["swaps"], list)
        rss = vm.exec(["sh", "-c", "grep VmRSS /proc/1/status; cat /proc/1/oom_score_adj"], 10).stdout.split()
        assert int(rss[1]) < 2048, f"agent RSS {rss[1]} kB"
        assert rss[-1] == "-1000"
        assert vm.qmp.status() == "running"


@pytest.mark.slow  # every case boots both VMs; this one alone, in the slow tier
def test_vm_exec_cli_prints_kernel_and_memtotal() -> None:
    cp = cli("vm", "exec", "client", "--mem", "128", "--", "sh", "-c", "uname -r; grep MemTotal /proc/meminfo; lsmod | grep -c .")
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.split("\n")
    assert lines[0] == ensure("client", say=lambda m: None).kernel_version
    assert 70000 < int(lines[1].split()[1]) < 90000
    assert "accelerator:" in cp.stderr
    assert cli("vm", "exec", "client", "--", "sh", "-c", "exit 5").returncode == 5


@pytest.mark.slow  # every case boots both VMs; this one alone, in the slow tier
def test_nas_loads_nfsd() -> None:
    cp = cli("vm", "exec", "nas", "--", "modprobe", "nfsd")
    assert cp.returncode == 0, cp.stderr


@pytest.mark.slow  # every case boots both VMs; this one alone, in the slow tier
def test_forced_kvm_either_works_or_says_why() -> None:
    cp = cli("vm", "exec", "client", "--accel", "kvm", "--", "true")
    if cp.returncode != 0:
        assert "--accel kvm" in cp.stderr and "use --accel tcg" in cp.stderr
        assert len(cp.stderr.strip().splitlines()) == 1


def test_show_command_runs_nothing() -> None:
    cp = cli("vm", "exec", "client", "--show-command")
    assert cp.returncode == 0 and cp.stdout.startswith("qemu-system-x86_64 -name tb000000-client")
    assert not find_our_qemus()


@pytest.mark.slow  # every case boots both VMs; this one alone, in the slow tier
def test_sigint_while_booting_leaves_nothing() -> None:
    p = subprocess.Popen([sys.executable, "-m", "testbed", "vm", "exec", "client", "--", "sleep", "60"], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not find_our_qemus() and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [pid for pid, _ in find_our_qemus()]
    assert pids, "QEMU never started"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted" in err
    assert not find_our_qemus() and not leftovers()
    assert "nothing of ours to clean" in cli("clean").stdout
