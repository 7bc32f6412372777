"""Independent probes of the NAS and of the link, cheap enough for the 1 Hz timeline.

Each answers one question from outside the client, whatever state the client is in:
- nas_agent_ms: does the NAS guest answer at all (a ping through its agent over virtio-serial: no
  network on the way)?
- nas_service: does the NAS say its storage service is up (the protocol's `service_argv`, run by the
  NAS agent and read by its pure `parse_service`)?
- nas_connect_ms / nas_connect_error (IP protocols): does the service port accept a TCP connection
  from the switch (the run's namespace)? ECONNREFUSED: the NAS's stack answers, nothing listens;
  timeout: the NAS or the link is silent.
- nas_aoe_ms (AoE, instead of a connect): does vblade answer an AoE query-config sent from the switch?
The link itself is the Pinger's ping_ms (switch -> client); `loss_window` sums it up for the checker.

Every probe has its own timeout and a sample takes at most `budget_s` (0.6 s by default): the NAS
command is sent first and read last, and only one is ever outstanding, so a stuck NAS costs its
time once and never piles jobs up in its agent (which runs at most 8).
"""

from __future__ import annotations

import errno
import math
import random
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from testbed.errors import GuestError, TestbedError
from testbed.net.netns import socket_in
from testbed.storage.aoe import Aoe
from testbed.storage.base import SERVICE_TIMEOUT_S, Ends, ServiceState, Storage
from testbed.vm.agent import Job
from testbed.vm.machine import VM

if TYPE_CHECKING:  # type only: the scenario imports the storage package
    from testbed.config.scenario import Scenario
    from testbed.net.build import BuiltNet

T = TypeVar("T")

ETH_P_AOE = 0x88A2
AOE_VERSION = 1
AOE_FLAG_RESPONSE = 0x08
AOE_FLAG_ERROR = 0x04
AOE_CMD_CONFIG = 1
ETH_MIN_FRAME = 60  # without the FCS; a packet socket does not pad what it sends
PACKET_OUTGOING = 4  # sockaddr_ll pkttype of a frame this host sent
# Ethernet header + AoE common header (ver/flags, error, major, minor, command, tag): 24 bytes.
_HEADER = struct.Struct("!6s6sHBBHBBI")
# Query-config arguments: buffer count, firmware version, sector count, AoE version/ccmd, config length.
_CONFIG = struct.Struct("!HHBBH")


class ProbeError(TestbedError):
    """A probe's own machinery failed (its socket cannot be made or used): nothing about the NAS."""


# -- the link ------------------------------------------------------------------------------------
def loss_window(rows: Iterable[Mapping[str, Any]], since: float, until: float, column: str = "ping_ms") -> float:
    """Fraction of the timeline rows with since <= t < until whose `column` is empty (no reply):
    1.0 over a window is a path-down. NaN when no row falls in the window (nothing to judge)."""
    window = [r for r in rows if r.get("t") is not None and since <= r["t"] < until]
    if not window:
        return math.nan
    return sum(r.get(column) is None for r in window) / len(window)


# -- TCP connect ----------------------------------------------------------------------------------
def _socket(netns: str | None, family: int, type_: int, proto: int = 0) -> socket.socket:
    """A socket in the run's namespace, or in ours when netns is None."""
    return socket.socket(family, type_, proto) if netns is None else socket_in(netns, family, type_, proto)


def tcp_connect(netns: str | None, ip: str, port: int, timeout: float) -> float | str:
    """Connect time in ms, or why it failed: an errno name (ECONNREFUSED, EHOSTUNREACH ...) or
    "timeout". The connection is reset at once (no FIN exchange, no TIME_WAIT). ProbeError when the
    socket itself cannot be made."""
    try:
        s = _socket(netns, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as e:
        raise ProbeError(f"TCP probe: cannot make a socket in namespace {netns or '(ours)'}: {e}") from e
    try:
        s.settimeout(timeout)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        start = time.monotonic()
        try:
            s.connect((ip, port))
        except OSError as e:
            if e.errno is None:  # Python's own timeout
                return "timeout"
            return errno.errorcode.get(e.errno, f"errno {e.errno}")
        return (time.monotonic() - start) * 1000
    finally:
        s.close()


# -- AoE query-config -----------------------------------------------------------------------------
def mac_bytes(mac: str) -> bytes:
    b = bytes.fromhex(mac.replace(":", ""))
    if len(b) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return b


def mac_text(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


@dataclass(frozen=True)
class AoeFrame:
    dst: str
    src: str
    flags: int  # the low nibble of the ver/flags byte: AOE_FLAG_RESPONSE, AOE_FLAG_ERROR
    error: int
    shelf: int
    slot: int
    command: int
    tag: int
    buffers: int | None = None  # the query-config arguments, when the frame carries them
    firmware: int | None = None
    sectors: int | None = None
    config: bytes = b""

    @property
    def response(self) -> bool:
        return bool(self.flags & AOE_FLAG_RESPONSE)


def build_aoe_query(dst: str, src: str, shelf: int, slot: int, tag: int) -> bytes:
    """An AoE query-config request (read the config string) from src to dst for shelf.slot, padded
    to Ethernet's minimum."""
    frame = _HEADER.pack(mac_bytes(dst), mac_bytes(src), ETH_P_AOE, AOE_VERSION << 4, 0, shelf, slot,
                         AOE_CMD_CONFIG, tag) + _CONFIG.pack(0, 0, 0, 0, 0)
    return frame.ljust(ETH_MIN_FRAME, b"\0")


def parse_aoe_frame(frame: bytes) -> AoeFrame | None:
    """Any AoE (version 1) frame -> its header, and its config arguments for a query-config; None
    for anything else."""
    if len(frame) < _HEADER.size:
        return None
    dst, src, etype, verflags, error, shelf, slot, command, tag = _HEADER.unpack_from(frame)
    if etype != ETH_P_AOE or verflags >> 4 != AOE_VERSION:
        return None
    f = AoeFrame(mac_text(dst), mac_text(src), verflags & 0x0F, error, shelf, slot, command, tag)
    end = _HEADER.size + _CONFIG.size
    if command == AOE_CMD_CONFIG and len(frame) >= end:
        buffers, firmware, sectors, _, length = _CONFIG.unpack_from(frame, _HEADER.size)
        return AoeFrame(f.dst, f.src, f.flags, error, shelf, slot, command, tag, buffers, firmware, sectors,
                        frame[end : end + length])
    return f


def is_reply(f: AoeFrame | None, tag: int, src: str | None = None) -> bool:
    """Whether f answers our query-config `tag` (from `src`, when given)."""
    return (f is not None and f.response and f.command == AOE_CMD_CONFIG and f.tag == tag
            and (src is None or f.src == src.lower()))


class AoeQuerier:
    """A packet socket for AoE on one interface (the switch's bridge in the run's namespace): frames
    go out with the interface's own MAC, and vblade's replies to that MAC come up the bridge."""

    def __init__(self, netns: str | None, iface: str):
        self.iface = iface
        try:
            self.sock = _socket(netns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_AOE))
        except OSError as e:
            raise ProbeError(f"AoE probe: cannot open a packet socket in namespace {netns or '(ours)'}: {e}") from e
        try:
            self.sock.bind((iface, ETH_P_AOE))
            self.sock.setblocking(False)
            if len(self.sock.getsockname()[4]) != 6:
                raise OSError(f"{iface} has no Ethernet address")
        except OSError as e:
            self.sock.close()
            raise ProbeError(f"AoE probe: cannot bind a packet socket to {iface}: {e}") from e
        self.tag = random.getrandbits(32)

    @property
    def mac(self) -> str:
        """The interface's current MAC (a bridge's follows its ports)."""
        return mac_text(self.sock.getsockname()[4])

    def query(self, nas_mac: str, shelf: int, slot: int, timeout: float) -> float | None:
        """Round trip in ms of a query-config to nas_mac, or None when no reply came in time."""
        self.tag = (self.tag + 1) & 0xFFFFFFFF
        try:
            for _ in range(1000):  # what came since the last query (late replies, other traffic)
                self.sock.recv(2048)
        except BlockingIOError:
            pass
        except OSError as e:
            raise ProbeError(f"AoE probe: reading {self.iface}: {e}") from e
        frame = build_aoe_query(nas_mac, self.mac, shelf, slot, self.tag)
        start = time.monotonic()
        try:
            self.sock.send(frame)
        except OSError as e:
            if e.errno in (errno.ENETDOWN, errno.ENOBUFS, errno.EAGAIN, errno.ENXIO):
                return None  # the interface is down or full: no reply, as far as the NAS is concerned
            raise ProbeError(f"AoE probe: sending on {self.iface}: {e}") from e
        deadline = start + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                return None
            try:
                data, addr = self.sock.recvfrom(2048)
            except BlockingIOError:
                continue
            if addr[2] != PACKET_OUTGOING and is_reply(parse_aoe_frame(data), self.tag, nas_mac):
                return (time.monotonic() - start) * 1000
        return None

    def close(self) -> None:
        self.sock.close()


def aoe_query(netns: str | None, iface: str, nas_mac: str, shelf: int, slot: int, timeout: float) -> float | None:
    """One query-config from iface to nas_mac for shelf.slot: ms, or None without a reply."""
    q = AoeQuerier(netns, iface)
    try:
        return q.query(nas_mac, shelf, slot, timeout)
    finally:
        q.close()


# -- the NAS probe --------------------------------------------------------------------------------
def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


class NasProbe:
    """The NAS's probes for one case; `sample()` gives the timeline's nas_* columns (`columns`).

    A sub-probe whose own machinery fails raises ProbeError once (at construction for the AoE
    socket, or in the sample where it first fails); afterwards its columns stay empty."""

    COLUMNS = ("nas_agent_ms", "nas_service", "nas_connect_ms", "nas_connect_error", "nas_aoe_ms")

    def __init__(self, nas: VM, storage: Storage, sc: Scenario, ends: Ends, net: BuiltNet, *,
                 timeout_s: float = 0.25, budget_s: float = 0.6):
        if not storage.needs_nas:
            raise ProbeError(f"{storage.name} storage has no NAS to probe")
        port = next((p for p in net.ports if str(p.address.ip) == ends.nas_ip), None)
        if port is None:
            raise ProbeError(f"no port of namespace {net.netns} has the NAS address {ends.nas_ip}")
        self.nas, self.storage, self.netns = nas, storage, net.netns
        self.timeout_s, self.budget_s = timeout_s, budget_s
        self.argv = storage.service_argv(sc, ends)
        self.target = (ends.nas_ip, storage.ports[0]) if storage.is_ip and storage.ports else None
        self.aoe: AoeQuerier | None = None
        self.aoe_args: tuple[str, int, int] = ("", 0, 0)
        if isinstance(storage, Aoe):
            self.aoe = AoeQuerier(net.netns, net.bridges[port.switch])
            self.aoe_args = (port.mac, sc.storage.aoe.shelf, sc.storage.aoe.slot)
        self.columns = ["nas_agent_ms", "nas_service"]
        self.columns += ["nas_connect_ms", "nas_connect_error"] if self.target else []
        self.columns += ["nas_aoe_ms"] if self.aoe else []
        self.last_service = ServiceState(None, "not asked yet")
        self._job: Job | None = None
        self._job_t = 0.0
        self._broken: dict[str, str] = {}

    def _guarded(self, name: str, fn: Callable[[], T]) -> T | None:
        if name in self._broken:
            return None
        try:
            return fn()
        except ProbeError as e:
            self._broken[name] = str(e)
            raise

    def sample(self) -> dict[str, Any]:
        """One row's nas_* values (plus nas_service_detail); at most budget_s, whatever the NAS does."""
        start = time.monotonic()
        row: dict[str, Any] = {}
        unreachable: ServiceState | None = None
        if self.argv and self._job is None:
            try:
                self._job, self._job_t = self.nas.agent.start(self.argv, timeout=SERVICE_TIMEOUT_S), start
            except GuestError as e:  # the channel is closed: the VM is gone
                unreachable = ServiceState(None, f"no answer from the NAS agent: {e}")
        if self.target:
            ip, port = self.target
            got = self._guarded("connect", lambda: tcp_connect(self.netns, ip, port, self.timeout_s))
            row["nas_connect_ms"] = _ms(got) if isinstance(got, float) else None
            row["nas_connect_error"] = got if isinstance(got, str) else ("" if got is not None else "probe broken")
        if self.aoe:
            aoe = self.aoe
            row["nas_aoe_ms"] = _ms(self._guarded("aoe", lambda: aoe.query(*self.aoe_args, self.timeout_s)))
        try:
            rtt = self.nas.agent.ping(self.timeout_s)
        except GuestError:
            rtt = None
        row["nas_agent_ms"] = _ms(rtt * 1000 if rtt is not None else None)
        if self.argv:
            self.last_service = unreachable or self._collect(start + self.budget_s)
            row["nas_service"] = self.last_service.flag
            row["nas_service_detail"] = self.last_service.detail
        return row

    def _collect(self, deadline: float) -> ServiceState:
        """The outstanding service check's answer if it comes before the deadline. It is never given
        up while the agent may still answer: one job at most is queued in a stuck NAS."""
        job = self._job
        assert job is not None
        try:
            res = job.wait(max(0.0, deadline - time.monotonic()))
        except GuestError as e:
            if job.done():  # an agent error, or the channel closed under it
                self._job = None
                return ServiceState(None, str(e))
            age = time.monotonic() - self._job_t
            if age > SERVICE_TIMEOUT_S:
                return ServiceState(None, f"no answer for {age:.1f} s")
            return ServiceState(None, f"answer pending ({age:.1f} s)")
        self._job = None
        return self.storage.service_result(res)

    def facts(self) -> dict[str, Any]:
        """What each column measures, for the case history."""
        vm = getattr(self.nas, "backend", "vm") == "vm"
        f: dict[str, Any] = {
            "nas_agent_ms": (f"ping through the NAS agent (virtio-serial, no network): round trip; empty after {self.timeout_s} s"
                             if vm else "a userspace NAS has no guest to ping: time to see its server processes "
                             "running; empty while one is stopped (service-freeze) or gone"),
            "budget_s": self.budget_s,
        }
        if self.argv:
            cmd = self.argv[2] if self.argv[:2] == ["/bin/sh", "-c"] else " ".join(self.argv)
            f["nas_service"] = (f"1/0: the NAS's own answer to `{cmd}` (run by {'its agent' if vm else 'the host in its namespace'}, killed after "
                                f"{SERVICE_TIMEOUT_S:.0f} s; one at a time); empty while it does not answer")
        if self.target:
            f["nas_connect_ms"] = (f"TCP connect from namespace {self.netns} to {self.target[0]}:{self.target[1]}, "
                                   f"reset at once; empty after {self.timeout_s} s or on an error")
            f["nas_connect_error"] = ("why a connect failed: ECONNREFUSED = the NAS answers, nothing listens; "
                                      "timeout = NAS or link silent")
        if self.aoe:
            mac, shelf, slot = self.aoe_args
            f["nas_aoe_ms"] = (f"AoE query-config (ethertype 0x88a2, command 1) from {self.aoe.iface} ({self.aoe.mac}) "
                               f"to {mac} for e{shelf}.{slot}: round trip; empty after {self.timeout_s} s")
        if self._broken:
            f["broken"] = dict(self._broken)
        return f

    def close(self) -> None:
        if self.aoe:
            self.aoe.close()
