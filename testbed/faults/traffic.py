"""competing-traffic: the switch's own namespace (the run's netns, a host on the switch) sends to the
client: iperf3 TCP or UDP at a rate and parallelism, or a UDP flood to a closed port or to an open one
whose socket is never read (tb-work udp-sink). The point is receive memory spent on sockets that are
not memalloc. What each mode must be seen doing at the heal:
  udp-flood, open port: the sink's queue filled: Udp RcvbufErrors rose (NoPorts did not), and where the
    client answers, the sink's /proc/net/udp line shows its queue at the limit and drops;
  udp-flood, closed port: the datagrams were dropped as Udp NoPorts;
  tcp/udp: bytes reached the client (rx_bytes; for UDP, RcvbufErrors counts the server's overflow)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from testbed.host import proc
from testbed.host.cleanup import Undo
from testbed.errors import ConfigError, GuestError, TestbedError
from testbed.faults.base import STALE, BaseFault, Effect, FaultContext, FaultSpec, Step, deltas, paced_send
from testbed.net.netns import socket_in

FLOOD_PORT_OPEN = 9999
FLOOD_PORT_CLOSED = 9
SINK_ARGV = ["/usr/bin/tb-work", "udp-sink", str(FLOOD_PORT_OPEN)]  # binds, prints one line, never reads


@dataclass(frozen=True)
class CompetingTrafficSpec(FaultSpec):
    kind: Literal["competing-traffic"]
    at_s: float
    duration_s: float | None = 30
    optional: bool = False  # the case may end before its time (else a fault that never started: unknown)
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


def udp_sockets(text: str) -> list[dict[str, int]]:
    """/proc/net/udp -> one dict per socket: its local port, tx_queue and rx_queue (bytes of buffer
    charged to it, hex in the file), inode and drops (the last column, decimal)."""
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) < 13 or not f[0].endswith(":") or not f[0][:-1].isdigit():
            continue  # the header, or a line cut short
        try:
            tx, rx = f[4].split(":")
            out.append({"port": int(f[1].rsplit(":", 1)[1], 16), "tx_queue": int(tx, 16), "rx_queue": int(rx, 16),
                        "inode": int(f[9]), "drops": int(f[12])})
        except ValueError:
            continue
    return out


def udp_socket_on(text: str, port: int, inode: int | None = None) -> dict[str, int] | None:
    """The socket bound on `port` (and with `inode`, when given) in a /proc/net/udp listing, else None."""
    return next((s for s in udp_sockets(text) if s["port"] == port and inode in (None, s["inode"])), None)


def sink_filled(delta: dict[str, Any], sink: dict[str, int] | None, rcvbuf: int | None) -> tuple[bool, str]:
    """Did the flood fill the never-read socket? From the client's Udp counter deltas and the sink's
    /proc/net/udp entry read after the flood (`sink`: its entry; {} when the listing was read and it
    was not in it; None when the listing could not be read). Its queue is full when rx_queue is at
    least half the receive buffer it reported (`rcvbuf`): the kernel admits datagrams until rx_queue
    passes rcvbuf, so a flooded, unread socket sits just above it."""
    rcv, noports = delta.get("udp_rcvbuf_errors") or 0, delta.get("udp_no_ports") or 0
    if sink == {}:
        return False, f"no socket on udp/{FLOOD_PORT_OPEN} after the flood: the sink was gone"
    if noports > rcv // 10:
        return False, f"NoPorts rose by {noports} against {rcv} RcvbufErrors: the flood found no socket listening"
    if rcv <= 0:
        return False, "RcvbufErrors did not rise: no socket's receive queue overflowed"
    if sink is None:
        return True, f"RcvbufErrors rose by {rcv}, NoPorts by {noports} (the sink's /proc/net/udp line was not read)"
    if sink["drops"] <= 0:
        return False, f"RcvbufErrors rose by {rcv} but the sink's socket dropped nothing: another socket overflowed"
    if rcvbuf and sink["rx_queue"] < rcvbuf // 2:
        return False, f"the sink's queue held {sink['rx_queue']} of {rcvbuf} bytes: it never filled"
    return True, (f"the sink's queue held {sink['rx_queue']} of {rcvbuf or '?'} bytes with {sink['drops']} drops;"
                  f" RcvbufErrors rose by {rcv}, NoPorts by {noports}")


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
        "udp_mem_errors": udp.get("MemErrors"),
        "udp_no_ports": udp.get("NoPorts"),
    }


class CompetingTraffic(BaseFault):
    kind = "competing-traffic"
    host_tools = (("iperf3", "iperf3", "competing-traffic faults, bench"),)
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
        self.sink_rcvbuf: int | None = None  # the never-read socket: its receive buffer and inode
        self.sink_inode: int | None = None

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
            return self._start_sink(ctx)
        return Step()

    def _start_sink(self, ctx: FaultContext) -> Step:
        """A UDP socket nobody reads: its receive queue fills with non-memalloc buffers. Started as
        an agent job (killed with the faults' helpers), then found in /proc/net/udp."""
        lines: list[str] = []
        job = ctx.client.agent.start(SINK_ARGV, on_line=lines.append)
        ctx.undo.push("UDP sink in the client (tb-udp-sink)", job.kill)
        deadline = time.monotonic() + 10
        while not lines and not job.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            said = json.loads(lines[0]) if lines else {}
        except ValueError:
            said = {}
        if not isinstance(said, dict) or said.get("listening") != FLOOD_PORT_OPEN:
            why = " | ".join(lines[-3:]) or "no line in 10 s"
            if job.done():
                res = job.wait(5)
                why = f"exited {res.status}: {(' | '.join(lines[-3:]) or res.stderr).strip()[-200:]}"
            raise TestbedError(f"{' '.join(SINK_ARGV)} in the client: {why}")
        listing = ctx.client.exec(["cat", "/proc/net/udp"], 10, check=True).stdout
        sock = udp_socket_on(listing, FLOOD_PORT_OPEN)
        if sock is None:
            raise TestbedError(f"{' '.join(SINK_ARGV)} said it listens, but /proc/net/udp has no udp/{FLOOD_PORT_OPEN}")
        self.sink_rcvbuf, self.sink_inode = int(said.get("rcvbuf") or 0) or None, sock["inode"]
        return Step({"listener": f"udp/{FLOOD_PORT_OPEN}, tb-udp-sink (bound, never reads)",
                     "sink_rcvbuf": self.sink_rcvbuf, "sink_inode": self.sink_inode})

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
        s = self.spec
        if s.mode != "udp-flood":
            out["shown_by"] = ("delta_rx_bytes (every client NIC, storage traffic included)"
                               + (", delta_udp_rcvbuf_errors (datagrams the iperf3 server's sockets could not queue)"
                                  if s.mode == "udp" else ""))
            return Step(out, effect=Effect((delta.get("rx_bytes") or 0) > 1_000_000, counters))
        if not s.port_open:
            no_ports = delta.get("udp_no_ports") or 0
            out["shown_by"] = "delta_udp_no_ports (datagrams to a port with no socket)"
            return Step(out, effect=Effect(no_ports > 0, counters))
        sink = self._sink_socket(ctx, out)
        if sink is not None:
            counters["sink_found"] = bool(sink)
        if sink:
            counters.update({"sink_rx_queue": sink["rx_queue"], "sink_drops": sink["drops"]})
        counters["sink_rcvbuf"] = self.sink_rcvbuf
        visible, out["why"] = sink_filled(delta, sink, self.sink_rcvbuf)
        out["shown_by"] = "delta_udp_rcvbuf_errors up, delta_udp_no_ports flat; the sink's rx_queue and drops"
        return Step(out, effect=Effect(visible, counters))

    def _sink_socket(self, ctx: FaultContext, out: dict[str, Any]) -> dict[str, int] | None:
        """The sink's /proc/net/udp entry after the flood ({} when gone), with one bounded exec; None
        (and why, in `out`) when the client could not say."""
        try:
            res = ctx.client.exec(["cat", "/proc/net/udp"], 5)
        except GuestError as e:
            out["sink_socket"] = f"not read: {e}"
            return None
        if not res.ok:
            out["sink_socket"] = "not read: " + ("timed out" if res.timed_out else f"cat exited {res.status}")
            return None
        return udp_socket_on(res.stdout, FLOOD_PORT_OPEN, self.sink_inode) or {}
