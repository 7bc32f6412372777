"""competing-traffic: the switch's own namespace (the run's netns, a host on the switch) sends to the
client: iperf3 TCP or UDP at a rate and parallelism, or a UDP flood to a closed port or to an open one
whose reader is stopped. The point is receive memory spent on sockets that are not memalloc."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from testbed import proc
from testbed.cleanup import Undo
from testbed.errors import ConfigError, TestbedError
from testbed.faults.base import STALE, BaseFault, Effect, FaultContext, FaultSpec, Step, deltas, paced_send
from testbed.net.netns import socket_in

FLOOD_PORT_OPEN = 9999
FLOOD_PORT_CLOSED = 9


@dataclass(frozen=True)
class CompetingTrafficSpec(FaultSpec):
    kind: Literal["competing-traffic"]
    at_s: float
    duration_s: float | None = 30
    mode: Literal["tcp", "udp", "udp-flood"] = "udp"
    rate_mbit: float = 200.0
    parallel: int = 2
    port_open: bool = False  # udp-flood: to a port something listens on (queues fill) or a closed one

    def validate(self, source: str, path: str) -> None:
        self.check_times(source, path)
        if self.duration_s is None:
            raise ConfigError(source, f"{path}.duration_s", "competing traffic needs a duration")
        if not 0 < self.rate_mbit <= 10000 or not 1 <= self.parallel <= 16:
            raise ConfigError(source, f"{path}.rate_mbit", "rate_mbit in (0, 10000], parallel in 1..16")


def client_counters(ctx: FaultContext) -> dict[str, Any] | None:
    """The client's receive counters from fresh telemetry; None when the agent has gone quiet."""
    tel = ctx.client.agent.fresh_telemetry()
    if tel is None:
        return None
    devs = {k: v for k, v in tel.get("netdev", {}).items() if k != "lo"}
    udp = tel.get("snmp", {}).get("Udp", {})
    return {
        "PFMemallocDrop": tel.get("netstat", {}).get("TcpExt", {}).get("PFMemallocDrop"),
        "rx_bytes": sum(d.get("rx_bytes", 0) for d in devs.values()),
        "rx_drop": sum(d.get("rx_drop", 0) for d in devs.values()),
        "udp_rcvbuf_errors": udp.get("RcvbufErrors"),
        "udp_no_ports": udp.get("NoPorts"),
    }


class CompetingTraffic(BaseFault):
    kind = "competing-traffic"
    Spec = CompetingTrafficSpec

    def __init__(self, spec: Any):
        super().__init__(spec)
        self.iperf: subprocess.Popen[str] | None = None
        self.iperf_undo: Undo | None = None
        self.flood_stop = threading.Event()
        self.flood_thread: threading.Thread | None = None
        self.sent = 0
        self.before: dict[str, Any] | None = None
        self.tap_before: dict[str, int] = {}

    def setup(self, ctx: FaultContext) -> Step:
        if self.spec.mode in ("tcp", "udp"):
            proc.need("iperf3")
            # Its reports go to /dev/null, not through the agent (a stalled agent would stall it).
            job = ctx.client.agent.start(["iperf3", "-s", "--logfile", "/dev/null"], on_line=lambda line: None)
            ctx.undo.push("iperf3 server in the client", job.kill)
            time.sleep(1.0)
            if job.done():
                res = job.wait(5)
                raise TestbedError(f"iperf3 -s in the client exited {res.status}: {(res.stderr or res.stdout).strip()[-200:]}")
            return Step({"server": "iperf3 -s on the client"})
        if self.spec.port_open:
            # A UDP socket nobody reads: its receive queue fills with non-memalloc buffers.
            job = ctx.client.agent.start(["busybox", "nc", "-u", "-l", "-p", str(FLOOD_PORT_OPEN)], on_line=lambda line: None)
            ctx.undo.push("UDP listener in the client", job.kill)
            time.sleep(0.3)
            ctx.client.exec(["pkill", "-STOP", "-f", "nc -u -l"], 10)
            return Step({"listener": f"udp/{FLOOD_PORT_OPEN}, stopped (never reads)"})
        return Step()

    def inject(self, ctx: FaultContext) -> Step:
        s, net = self.spec, ctx.net
        self.before = client_counters(ctx)
        self.tap_before = net.tap_bytes("client")
        client_ip = ctx.ends.client_ip
        if s.mode in ("tcp", "udp"):
            argv = ["ip", "netns", "exec", net.netns, "iperf3", "-c", client_ip, "-P", str(s.parallel),
                    "-t", str(int(s.duration_s) + 5), "-b", f"{s.rate_mbit}M", "--json"]
            if s.mode == "udp":
                argv.append("-u")
            # Same session as the testbed: a Ctrl-C reaches iperf3 too, and the undo stack kills it.
            self.iperf = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.iperf_undo = ctx.undo.push(f"iperf3 client (pid {self.iperf.pid})", self.iperf.kill)
            return Step({"mode": s.mode, "argv": argv, **{f"before_{k}": v for k, v in (self.before or {}).items()}})
        port = FLOOD_PORT_OPEN if s.port_open else FLOOD_PORT_CLOSED
        sock = socket_in(net.netns, socket.AF_INET, socket.SOCK_DGRAM)
        self.flood_thread = threading.Thread(target=self._flood, args=(sock, client_ip, port), daemon=True)
        self.flood_thread.start()
        ctx.undo.push("UDP flood", self._stop_flood)
        return Step({"mode": "udp-flood", "port": port, "open": s.port_open,
                     **{f"before_{k}": v for k, v in (self.before or {}).items()}})

    def _stop_flood(self) -> None:
        self.flood_stop.set()
        if self.flood_thread:
            self.flood_thread.join(5)

    def _flood(self, sock: socket.socket, ip: str, port: int) -> None:
        payload = b"\0" * 1400
        rate = self.spec.rate_mbit * 1e6 / 8 / len(payload)
        self.sent = paced_send(sock, lambda: payload, (ip, port), rate, self.flood_stop)

    def heal(self, ctx: FaultContext) -> Step:
        out: dict[str, Any] = {"mode": self.spec.mode}
        if self.iperf:
            if self.iperf.poll() is None:
                self.iperf.send_signal(signal.SIGINT)
            try:
                stdout, _ = self.iperf.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                self.iperf.kill()
                stdout, _ = self.iperf.communicate()
            self.iperf = None
            if self.iperf_undo:
                ctx.undo.discard(self.iperf_undo)
            out["iperf3_tail"] = stdout[-300:]
        counters: dict[str, Any] = {}
        if self.flood_thread:
            self._stop_flood()
            counters["datagrams_sent"] = self.sent
        # What the switch delivered toward the client is measured on the host, whatever the guest's state.
        tap = ctx.net.tap_bytes("client")
        counters["delta_switch_to_client_bytes"] = tap["to_node"] - self.tap_before.get("to_node", 0)
        delta = deltas(self.before, client_counters(ctx))
        if delta is None:
            return Step(out, effect=Effect(None, counters, unmeasured=STALE))
        counters.update({f"delta_{k}": v for k, v in delta.items()})
        return Step(out, effect=Effect((delta.get("rx_bytes") or 0) > 1_000_000, counters))
