"""Independent probes of the NAS and of the link, cheap enough for the 1 Hz timeline.

Each answers one question from outside the client, whatever state the client is in:
- nas_agent_ms: does the NAS guest answer at all (a ping through its agent over virtio-serial: no
  network on the way)?
- nas_service: does the NAS say its storage service is up (the protocol's `service_argv`, run by the
  NAS agent and read by its pure `parse_service`)?
- nas_connect_ms / nas_connect_error (IP protocols): does the service port accept a TCP connection
  from the switch (the run's namespace)? ECONNREFUSED: the NAS's stack answers, nothing listens;
  timeout: the NAS or the link is silent.
- a protocol's own probe where a connect cannot tell (one that is no IP, e.g. AoE's query-config, column
  nas_aoe_ms): the protocol declares and makes it (Storage.link_probe), this module samples it.
The link itself is the Pinger's ping_ms (switch -> client); `loss_window` sums it up for the checker.

Every probe has its own timeout and a sample takes at most `budget_s` (0.6 s by default): the NAS
command is sent first and read last, and only one is ever outstanding, so a stuck NAS costs its
time once and never piles jobs up in its agent (which runs at most 8).
"""

from __future__ import annotations

import errno
import math
import socket
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from testbed.errors import GuestError, ProbeError
from testbed.net.netns import socket_at
from testbed.storage import PROTOCOLS
from testbed.storage.base import SERVICE_TIMEOUT_S, Ends, LinkProbe, ServiceState, Storage
from testbed.nas.base import Nas, NasJob

if TYPE_CHECKING:  # type only: the scenario imports the storage package
    from testbed.config.scenario import Scenario
    from testbed.net.build import BuiltNet

T = TypeVar("T")

__all__ = ["NasProbe", "ProbeError", "loss_window", "tcp_connect"]



# -- the link ------------------------------------------------------------------------------------
def loss_window(rows: Iterable[Mapping[str, Any]], since: float, until: float, column: str = "ping_ms") -> float:
    """Fraction of the timeline rows with since <= t < until whose `column` is empty (no reply):
    1.0 over a window is a path-down. NaN when no row falls in the window (nothing to judge)."""
    window = [r for r in rows if r.get("t") is not None and since <= r["t"] < until]
    if not window:
        return math.nan
    return sum(r.get(column) is None for r in window) / len(window)


# -- TCP connect ----------------------------------------------------------------------------------
def tcp_connect(netns: str | None, ip: str, port: int, timeout: float) -> float | str:
    """Connect time in ms, or why it failed: an errno name (ECONNREFUSED, EHOSTUNREACH ...) or
    "timeout". The connection is reset at once (no FIN exchange, no TIME_WAIT). ProbeError when the
    socket itself cannot be made."""
    try:
        s = socket_at(netns, socket.AF_INET, socket.SOCK_STREAM)
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


# -- the NAS probe --------------------------------------------------------------------------------
def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


class NasProbe:
    """The NAS's probes for one case; `sample()` gives the timeline's nas_* columns (`columns`).

    A sub-probe whose own machinery fails raises ProbeError once (at construction for the AoE
    socket, or in the sample where it first fails); afterwards its columns stay empty."""

    COMMON = ("nas_agent_ms", "nas_service", "nas_connect_ms", "nas_connect_error")

    @staticmethod
    def all_columns() -> tuple[str, ...]:
        """Every column a NAS probe may fill: the common ones, then the protocols' own probes' (a timeline
        has every column, empty where the case's protocol has no such probe)."""
        return (*NasProbe.COMMON, *dict.fromkeys(s.link_probe_column for s in PROTOCOLS.values() if s.link_probe_column))

    def __init__(self, nas: Nas, storage: Storage, sc: Scenario, ends: Ends, net: BuiltNet, *,
                 timeout_s: float = 0.25, budget_s: float = 0.6):
        if not storage.needs_nas:
            raise ProbeError(f"{storage.name} storage has no NAS to probe")
        port = next((p for p in net.ports if str(p.address.ip) == ends.nas_ip), None)
        if port is None:
            raise ProbeError(f"no port of namespace {net.netns} has the NAS address {ends.nas_ip}")
        self.nas, self.storage, self.netns = nas, storage, net.netns
        self.timeout_s, self.budget_s = timeout_s, budget_s
        self.argv = storage.service_argv(nas, sc, ends)
        ports = storage.service_ports(sc)
        self.target = (ends.nas_ip, ports[0]) if storage.is_ip and ports else None
        self.link: LinkProbe | None = storage.link_probe(net.netns, net.bridges[port.switch], port.mac, sc)
        self.columns = ["nas_agent_ms", "nas_service"]
        self.columns += ["nas_connect_ms", "nas_connect_error"] if self.target else []
        self.columns += [self.link.column] if self.link else []
        self.last_service = ServiceState(None, "not asked yet")
        self._job: NasJob | None = None
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
        if self.link:
            link = self.link
            row[link.column] = _ms(self._guarded(link.column, lambda: link.query(self.timeout_s)))
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
        vm = self.nas.traits.own_kernel
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
        if self.link:
            f[self.link.column] = self.link.describe(self.timeout_s)
        if self._broken:
            f["broken"] = dict(self._broken)
        return f

    def close(self) -> None:
        if self.link:
            self.link.close()
