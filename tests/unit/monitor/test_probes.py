"""The NAS and link probes: service parsers on what the NAS prints, AoE frames, TCP connects on
loopback, the loss window, and NasProbe's sampling with a fake NAS agent."""

from __future__ import annotations

import ipaddress
import math
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from testbed.config.scenario import load_scenario
from testbed.errors import GuestError
from testbed.monitor import probes
from testbed.monitor.probes import NasProbe, ProbeError, loss_window, tcp_connect
from testbed.nas import vm as nas_vm
from testbed.net.build import Port
from testbed.storage import aoe
from testbed.storage.aoe import (AOE_CMD_CONFIG, ETH_P_AOE, Aoe, AoeQuerier, build_aoe_query, is_reply, parse_aoe_frame,
                                 parse_vblade_pids)
from testbed.storage.base import Ends, ServiceState
from testbed.storage.iscsi import Iscsi, parse_tpg_enable
from testbed.storage.local import Local
from testbed.storage.nfs import SERVICE, Nfs
from testbed.storage.nfs import parse_service as parse_nfs
from testbed.vm.agent import ExecResult

ENDS = Ends("tb3bf120", "10.201.0.3", "10.201.0.2")
SC = load_scenario(Path(__file__).parents[3] / "scenarios/nfs-swap.yaml").scenario  # a VM NAS: kernel servers


# -- service parsers ------------------------------------------------------------------------------
# What SERVICE prints: `cat /proc/fs/nfsd/threads` gives "8\n" while nfsd serves, "0\n" after
# `rpc.nfsd 0`, nothing when the nfsd filesystem is not mounted; pgrep gives rpc.mountd's pid.
def nfs_output(threads_file: str | None, mountd_pids: str) -> str:
    threads = "" if threads_file is None else threads_file.strip()
    return f"threads {threads}".rstrip() + "\n" + f"mountd {' '.join(mountd_pids.split())}".rstrip() + "\n"


def test_nfs_serving() -> None:
    st = parse_nfs(nfs_output("8\n", "412\n"))
    assert st == ServiceState(True, "nfsd threads 8, rpc.mountd pid 412")
    assert st.flag == 1


def test_nfs_threads_stopped() -> None:
    st = parse_nfs(nfs_output("0\n", "412\n"))
    assert st.alive is False and st.flag == 0 and "nfsd threads 0" in st.detail


def test_nfs_mountd_gone_is_down() -> None:
    st = parse_nfs(nfs_output("8\n", ""))
    assert st.alive is False and st.detail == "nfsd threads 8, rpc.mountd not running"


def test_nfs_two_mountd_processes() -> None:
    assert parse_nfs(nfs_output("8\n", "412\n413\n")).detail == "nfsd threads 8, rpc.mountd pid 412,413"


def test_nfs_no_nfsd_filesystem() -> None:
    st = parse_nfs(nfs_output(None, "412\n"))
    assert st.alive is False and st.detail.startswith("no nfsd")


def test_nfs_garbage_tells_nothing() -> None:
    assert parse_nfs("").alive is None
    assert parse_nfs("sh: out of memory\n").alive is None


@pytest.mark.skipif(os.path.exists("/proc/fs/nfsd/threads") or not shutil.which("pgrep"),
                    reason="needs a host without nfsd and with pgrep")
def test_nfs_script_output_parses() -> None:
    # The real script on this host (no nfsd, no rpc.mountd): its output format is what the parser reads.
    out = subprocess.run(["/bin/sh", "-c", SERVICE], capture_output=True, text=True, timeout=10).stdout
    assert out == "threads\nmountd\n"
    assert parse_nfs(out) == ServiceState(False, "no nfsd (/proc/fs/nfsd/threads unreadable), rpc.mountd not running")


def test_tpg_enable() -> None:
    assert parse_tpg_enable("1\n") == ServiceState(True, "LIO TPG 1 enabled")
    assert parse_tpg_enable("0\n") == ServiceState(False, "LIO TPG 1 disabled")
    assert parse_tpg_enable("").alive is False  # cat found no file: no target
    assert parse_tpg_enable("-1\n").alive is None


def vm_processes_argv(comm: str) -> list[str]:
    return nas_vm.VmNas.processes_argv(None, comm)  # type: ignore[arg-type]  # it reads nothing of the NAS


def test_iscsi_service_argv_names_the_target() -> None:
    nas = SimpleNamespace(processes_argv=vm_processes_argv)
    assert Iscsi().service_argv(nas, SC, ENDS) == [  # type: ignore[arg-type]
        "cat", "/sys/kernel/config/target/iscsi/iqn.2026-11.org.netswap:tb3bf120-target/tpgt_1/enable"]
    assert Aoe().service_argv(nas, SC, ENDS) == vm_processes_argv("vblade")  # type: ignore[arg-type]


def test_a_nas_vms_process_list_says_running_and_stopped(tmp_path: Path) -> None:
    """The NAS VM's process listing (a guest's sh and pgrep, run here on the host's) and its parser: a
    server that runs, one stopped by SIGSTOP, none."""
    exe = tmp_path / "tbprocsvblade"
    shutil.copy("/bin/sleep", exe)
    argv = vm_processes_argv(exe.name)
    aoe_ = Aoe()
    assert aoe_.parse_service(subprocess.run(argv, capture_output=True, text=True).stdout) == \
        ServiceState(False, "no tbprocsvblade process in the NAS")
    p = subprocess.Popen([str(exe), "30"])
    try:
        time.sleep(0.2)
        got = aoe_.parse_service(subprocess.run(argv, capture_output=True, text=True).stdout)
        assert got == ServiceState(True, f"tbprocsvblade pid {p.pid}")
        p.send_signal(19)  # SIGSTOP
        time.sleep(0.2)
        got = aoe_.parse_service(subprocess.run(argv, capture_output=True, text=True).stdout)
        assert got.alive is False and got.detail == f"tbprocsvblade pid {p.pid} stopped (SIGSTOP)"
    finally:
        p.kill()
        p.wait()


def test_vblade_pgrep() -> None:
    assert parse_vblade_pids("523\n") == ServiceState(True, "vblade pid 523")
    assert parse_vblade_pids("523\n611\n").detail == "vblade pid 523,611"
    assert parse_vblade_pids("") == ServiceState(False, "no vblade process")


def test_service_result_that_tells_nothing() -> None:
    aoe = Aoe()
    argv = ["pgrep", "-x", "vblade"]
    assert aoe.service_result(ExecResult(argv, 1, "", "")) == ServiceState(False, "no vblade process")
    assert aoe.service_result(ExecResult(argv, -9, "", "", timed_out=True)).alive is None
    assert aoe.service_result(ExecResult(argv, -9, "", "")).alive is None  # killed
    nfs = Nfs()
    # sh could not find pgrep: status 127, and the missing mountd pid means nothing
    res = ExecResult(["/bin/sh", "-c", SERVICE, "sh"], 127, "threads 8\nmountd\n", "pgrep: not found")
    got = nfs.service_result(res)
    assert got.alive is None and "status 127" in got.detail


class FakeJob:
    def __init__(self, res: ExecResult | None, error: str = ""):
        self.res, self.error = res, error

    def done(self) -> bool:
        return self.res is not None or bool(self.error)

    def wait(self, timeout: float | None = None) -> ExecResult:
        if self.error:
            raise GuestError(self.error)
        if self.res is None:
            time.sleep(timeout or 0)
            raise GuestError("nas: no answer")
        return self.res


class FakeAgent:
    def __init__(self, stdout: str | None = "", rtt: float | None = 0.004, closed: bool = False):
        self.stdout, self.rtt, self.closed = stdout, rtt, closed
        self.started: list[tuple[list[str], float]] = []

    def start(self, argv: list[str], *, timeout: float = 0, on_line: Any = None) -> FakeJob:
        if self.closed:
            raise GuestError("nas: agent channel is closed (did the VM die?)")
        self.started.append((argv, timeout))
        return FakeJob(None if self.stdout is None else ExecResult(argv, 0, self.stdout, ""))

    def ping(self, timeout: float = 5) -> float | None:
        if self.closed:
            raise GuestError("nas: agent channel is closed (did the VM die?)")
        if self.rtt is None:
            time.sleep(timeout)
        return self.rtt


def test_service_check_runs_one_short_command() -> None:
    agent = FakeAgent("1\n")
    st = Iscsi().service_check(SimpleNamespace(agent=agent, processes_argv=vm_processes_argv), SC, ENDS)  # type: ignore[arg-type]
    assert st == ServiceState(True, "LIO TPG 1 enabled")
    assert len(agent.started) == 1 and agent.started[0][1] == 2.0


def test_service_check_closed_agent_is_unknown() -> None:
    nas = SimpleNamespace(agent=FakeAgent(closed=True), processes_argv=vm_processes_argv)
    st = Aoe().service_check(nas, SC, ENDS)  # type: ignore[arg-type]
    assert st is not None and st.alive is None and "channel is closed" in st.detail


def test_local_has_no_service() -> None:
    assert Local().service_argv(None, SC, ENDS) is None  # type: ignore[arg-type]
    assert Local().service_check(None, SC, ENDS) is None  # type: ignore[arg-type]


# -- AoE frames -----------------------------------------------------------------------------------
NAS_MAC = "52:54:3b:f1:20:01"
BRIDGE_MAC = "be:31:6a:0c:d2:77"
# vblade's answer to our query for e0.1 (aoe.c confcmd/doaoe: addresses swapped, Resp set, bufcnt 16,
# firmware 0x4019, scnt (1500 - 36) / 512 = 2, AoE v1 read, no config string): 32 bytes, unpadded.
VBLADE_REPLY = bytes.fromhex(
    "be316a0cd277" "52543bf12001" "88a2"   # Ethernet: to the bridge, from the NAS, AoE
    "18" "00" "0000" "01" "01" "c0ffee01"  # ver 1 + response, no error, e0.1, query config, our tag
    "0010" "4019" "02" "10" "0000")        # bufcnt 16, firmware, 2 sectors, v1/read, no config


def test_query_frame_round_trip() -> None:
    frame = build_aoe_query(NAS_MAC, BRIDGE_MAC, 7, 3, 0xC0FFEE01)
    assert len(frame) == 60 and frame[12:14] == b"\x88\xa2" and frame[14] == 0x10
    f = parse_aoe_frame(frame)
    assert f is not None
    assert (f.dst, f.src, f.shelf, f.slot, f.command, f.tag) == (NAS_MAC, BRIDGE_MAC, 7, 3, AOE_CMD_CONFIG, 0xC0FFEE01)
    assert not f.response and f.error == 0 and f.buffers == 0 and f.config == b""
    assert not is_reply(f, 0xC0FFEE01)  # our own request is no reply


def test_recorded_vblade_reply() -> None:
    f = parse_aoe_frame(VBLADE_REPLY)
    assert f is not None and f.response
    assert (f.dst, f.src, f.shelf, f.slot, f.tag) == (BRIDGE_MAC, NAS_MAC, 0, 1, 0xC0FFEE01)
    assert (f.buffers, f.firmware, f.sectors) == (16, 0x4019, 2)
    assert is_reply(f, 0xC0FFEE01, NAS_MAC)
    assert is_reply(f, 0xC0FFEE01, NAS_MAC.upper())


def test_reply_with_another_tag_or_from_another_mac_is_ignored() -> None:
    f = parse_aoe_frame(VBLADE_REPLY)
    assert not is_reply(f, 0xC0FFEE02, NAS_MAC)
    assert not is_reply(f, 0xC0FFEE01, "52:54:3b:f1:20:00")


def test_not_aoe() -> None:
    assert parse_aoe_frame(VBLADE_REPLY[:20]) is None
    assert parse_aoe_frame(VBLADE_REPLY[:12] + b"\x08\x00" + VBLADE_REPLY[14:]) is None  # IPv4
    assert parse_aoe_frame(VBLADE_REPLY[:14] + b"\x28" + VBLADE_REPLY[15:]) is None  # AoE version 2
    assert not is_reply(None, 0xC0FFEE01)


def packet_socket_or_skip(iface: str) -> socket.socket:
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_AOE))
    except PermissionError:
        pytest.skip("packet sockets need CAP_NET_RAW")
    s.bind((iface, ETH_P_AOE))
    return s


def fake_vblade(sock: socket.socket, mac: str, tag_delta: int = 0) -> threading.Thread:
    """Answers the first query-config seen on sock as vblade would (optionally with a wrong tag)."""
    def run() -> None:
        sock.settimeout(2)
        while True:
            try:
                data, addr = sock.recvfrom(2048)
            except TimeoutError:
                return
            f = parse_aoe_frame(data)
            if addr[2] == aoe.PACKET_OUTGOING or f is None or f.response:
                continue
            reply = bytearray(VBLADE_REPLY)
            reply[0:6], reply[6:12] = data[6:12], bytes.fromhex(mac.replace(":", ""))
            reply[20:24] = ((f.tag + tag_delta) & 0xFFFFFFFF).to_bytes(4, "big")
            sock.send(bytes(reply))
            return
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_aoe_query_over_loopback() -> None:
    responder = packet_socket_or_skip("lo")
    q = AoeQuerier(None, "lo")
    try:
        t = fake_vblade(responder, NAS_MAC)
        ms = q.query(NAS_MAC, 0, 1, 1.0)
        t.join(3)
        assert ms is not None and 0 <= ms < 1000
        t = fake_vblade(responder, NAS_MAC, tag_delta=1)  # a reply to someone else's query
        assert q.query(NAS_MAC, 0, 1, 0.3) is None
        t.join(3)
        assert q.query(NAS_MAC, 0, 1, 0.1) is None  # nobody answers
    finally:
        q.close()
        responder.close()


def test_aoe_socket_on_a_missing_interface_is_a_probe_error() -> None:
    packet_socket_or_skip("lo").close()
    with pytest.raises(ProbeError, match="tb-no-such-if"):
        AoeQuerier(None, "tb-no-such-if")


# -- TCP connect ----------------------------------------------------------------------------------
@pytest.fixture
def listener() -> Any:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s
    s.close()


def test_connect_to_a_listener(listener: socket.socket) -> None:
    got = tcp_connect(None, "127.0.0.1", listener.getsockname()[1], 1.0)
    assert isinstance(got, float) and 0 <= got < 1000
    conn, _ = listener.accept()  # the probe's connection was made, then reset
    conn.settimeout(1)
    with pytest.raises(ConnectionResetError):
        conn.recv(1)
    conn.close()


def test_connect_refused() -> None:
    held = socket.socket()  # bound, not listening: the port is ours and answers with a reset
    held.bind(("127.0.0.1", 0))
    try:
        assert tcp_connect(None, "127.0.0.1", held.getsockname()[1], 1.0) == "ECONNREFUSED"
    finally:
        held.close()


def test_connect_timeout_on_a_full_backlog() -> None:
    # A listener that never accepts, with its queue full: the kernel drops further SYNs, as a silent NAS does.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            fillers.append(c)
        time.sleep(0.1)
        t = time.monotonic()
        assert tcp_connect(None, "127.0.0.1", port, 0.2) == "timeout"
        assert 0.15 < time.monotonic() - t < 0.6
    finally:
        for c in fillers:
            c.close()
        srv.close()


# -- the loss window ------------------------------------------------------------------------------
ROWS = [{"t": float(t), "ping_ms": None if t in (3, 4, 5) else 0.4} for t in range(10)]


def test_loss_window() -> None:
    assert loss_window(ROWS, 0, 10) == pytest.approx(0.3)
    assert loss_window(ROWS, 3, 6) == 1.0  # a path-down
    assert loss_window(ROWS, 2.5, 4) == 1.0
    assert loss_window(ROWS, 6, 10) == 0.0
    assert loss_window(ROWS, 2, 4) == 0.5  # until is excluded: t=2 and t=3
    assert math.isnan(loss_window(ROWS, 20, 30))
    assert loss_window([*ROWS, {"t": None, "ping_ms": None}], 0, 10) == pytest.approx(0.3)


# -- NasProbe -------------------------------------------------------------------------------------
def probe_for(port: int, agent: FakeAgent, **kw: Any) -> NasProbe:
    class LoopbackNfs(Nfs):
        ports = (port,)

    nas_port = Port("nas", "storage", "tbtap1", NAS_MAC, 1500, ipaddress.IPv4Interface("127.0.0.1/8"))
    net = SimpleNamespace(netns=None, bridges={"storage": "tbs0"}, ports=[nas_port])
    ends = Ends("tb3bf120", "127.0.0.3", "127.0.0.1")
    return NasProbe(SimpleNamespace(agent=agent, traits=nas_vm.VmNas.traits, processes_argv=vm_processes_argv), LoopbackNfs(), SC, ends, net, **kw)  # type: ignore[arg-type]


def test_sample_of_a_serving_nas(listener: socket.socket) -> None:
    agent = FakeAgent("threads 8\nmountd 412\n")
    p = probe_for(listener.getsockname()[1], agent)
    row = p.sample()
    assert row["nas_agent_ms"] == 4.0 and row["nas_service"] == 1 and row["nas_connect_error"] == ""
    assert isinstance(row["nas_connect_ms"], float) and row["nas_connect_ms"] < 250
    assert set(p.columns) == {"nas_agent_ms", "nas_service", "nas_connect_ms", "nas_connect_error"}
    assert set(p.columns) <= set(row) and set(p.columns) <= set(NasProbe.all_columns())
    assert agent.started == [(["/bin/sh", "-c", SERVICE], 2.0)]
    assert "127.0.0.1:" in p.facts()["nas_connect_ms"] and "nfsd/threads" in p.facts()["nas_service"]


def test_sample_of_a_stopped_service() -> None:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    try:
        row = probe_for(held.getsockname()[1], FakeAgent("threads 0\nmountd 412\n")).sample()
    finally:
        held.close()
    assert row["nas_service"] == 0 and row["nas_connect_ms"] is None and row["nas_connect_error"] == "ECONNREFUSED"
    assert row["nas_agent_ms"] == 4.0


def test_a_stuck_nas_costs_the_budget_once_and_one_job(listener: socket.socket) -> None:
    agent = FakeAgent(stdout=None, rtt=None)  # the agent never answers
    p = probe_for(listener.getsockname()[1], agent, timeout_s=0.1, budget_s=0.3)
    for _ in range(2):
        t = time.monotonic()
        row = p.sample()
        assert time.monotonic() - t < 0.45
        assert row["nas_agent_ms"] is None and row["nas_service"] is None
        assert row["nas_service_detail"].startswith("answer pending")
    assert len(agent.started) == 1  # the outstanding check is waited for, not sent again


def test_a_dead_nas(listener: socket.socket) -> None:
    row = probe_for(listener.getsockname()[1], FakeAgent(closed=True)).sample()
    assert row["nas_agent_ms"] is None and row["nas_service"] is None and "closed" in row["nas_service_detail"]


def test_broken_machinery_raises_once(listener: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    p = probe_for(listener.getsockname()[1], FakeAgent("threads 8\nmountd 412\n"))

    def no_socket(*a: Any) -> socket.socket:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(probes, "socket_at", no_socket)
    with pytest.raises(ProbeError, match="Too many open files"):
        p.sample()
    row = p.sample()
    assert row["nas_connect_ms"] is None and row["nas_connect_error"] == "probe broken"
    assert row["nas_service"] == 1  # the other probes go on
    assert "connect" in p.facts()["broken"]


def test_local_storage_has_no_nas_probe() -> None:
    with pytest.raises(ProbeError):
        NasProbe(None, Local(), SC, ENDS, SimpleNamespace(netns=None, ports=[], bridges={}))  # type: ignore[arg-type]
