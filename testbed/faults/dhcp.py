"""dhcp: the client's storage address comes from dnsmasq running on the switch (the run's namespace),
a fixed lease for the client's MAC on its usual address, so the storage path stays the same.
busybox udhcpc on the client applies it with the lease as the address lifetime
(images/client/overlay/usr/local/sbin/tb-udhcpc): when renewals fail, the kernel itself drops the
address at expiry, as networkd does.

mode renew: forced renewals (SIGUSR1 to udhcpc) every renew_s inside the window, besides udhcpc's
own at lease/2. mode server-stop: dnsmasq is stopped at at_s and started at the heal, so renewals go
unanswered and the lease expires lease_s after the last ACK: the path is down from then on.

A sniffer on the client's host-side tap sees every exchange, whatever state the client is in: each
renewal with its latency (first REQUEST to ACK) and how many REQUESTs it took.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from testbed.host import proc
from testbed.errors import ConfigError, GuestError, TestbedError
from testbed.faults.base import BaseFault, Effect, FaultContext, FaultSpec, Step
from testbed.net.netns import socket_in
from testbed.storage.base import Storage

DNSMASQ_MIN_LEASE_S = 120
SCRIPT = "/usr/local/sbin/tb-udhcpc"
# busybox's udhcpc started through a link of that name: the kernel's name for it (what an OOM kill
# line shows) is then udhcpc, not busybox, which any other applet would share.
APPLET = "/run/udhcpc"
PIDFILE = "/run/tb-udhcpc.pid"
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
# `tcpdump -dd 'ip and udp and (port 67 or port 68)'`: the kernel hands us DHCP only, not the storage
# traffic that shares the tap.
DHCP_BPF = [(0x28, 0, 0, 0x0C), (0x15, 0, 12, 0x800), (0x30, 0, 0, 0x17), (0x15, 0, 10, 0x11), (0x28, 0, 0, 0x14),
            (0x45, 8, 0, 0x1FFF), (0xB1, 0, 0, 0x0E), (0x48, 0, 0, 0x0E), (0x15, 4, 0, 0x43), (0x15, 3, 0, 0x44),
            (0x48, 0, 0, 0x10), (0x15, 1, 0, 0x43), (0x15, 0, 1, 0x44), (0x06, 0, 0, 0x40000), (0x06, 0, 0, 0)]
MAGIC = b"\x63\x82\x53\x63"
TYPES = {1: "discover", 2: "offer", 3: "request", 4: "decline", 5: "ack", 6: "nak", 7: "release", 8: "inform"}


@dataclass(frozen=True)
class DhcpSpec(FaultSpec):
    """The client's storage address from dnsmasq on the switch with a short lease. renew: forced
    renewals every `renew_s` inside the window (udhcpc also renews at lease/2); server-stop: the
    server is stopped at at_s (and started at the heal) so the lease expires."""

    kind: Literal["dhcp"]
    at_s: float = 0
    duration_s: float | None = None
    optional: bool = False  # the case may end before its time (else a fault that never started: unknown)
    mode: Literal["renew", "server-stop"] = "renew"
    lease_s: int = DNSMASQ_MIN_LEASE_S
    renew_s: float | None = None  # mode renew: 10 when omitted

    def validate(self, source: str, path: str) -> None:
        self.check_times(source, path)
        if self.lease_s < DNSMASQ_MIN_LEASE_S:
            raise ConfigError(source, f"{path}.lease_s", f"dnsmasq grants no lease shorter than {DNSMASQ_MIN_LEASE_S} s; "
                              "use renew_s for renewals more often than lease_s / 2")
        if self.mode == "server-stop" and self.renew_s is not None:
            raise ConfigError(source, f"{path}.renew_s", "only for mode renew (server-stop leaves udhcpc's own renewals)")
        if self.renew_s is not None and self.renew_s < 2:
            raise ConfigError(source, f"{path}.renew_s", "must be at least 2 s")

    def check_storage(self, storage: Storage, source: str, path: str) -> None:
        if not storage.needs_nas:
            raise ConfigError(source, f"{path}.kind", "dhcp needs network storage (the lease is the storage address)")

    def path_processes(self) -> tuple[str, ...]:
        return ("udhcpc",)  # started through an applet link named udhcpc, so the kernel calls it that

    @property
    def renew_every_s(self) -> float:
        return self.renew_s if self.renew_s is not None else 10.0


@dataclass(frozen=True)
class DhcpMessage:
    type: str
    xid: int
    ciaddr: str
    yiaddr: str
    to_client: bool
    broadcast: bool
    lease_s: int | None = None


def attach_dhcp_filter(sock: socket.socket) -> None:
    code = b"".join(struct.pack("HBBI", *ins) for ins in DHCP_BPF)
    buf = ctypes.create_string_buffer(code)
    prog = struct.pack("HL", len(DHCP_BPF), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)


def parse_frame(frame: bytes) -> DhcpMessage | None:
    """A DHCP message from an Ethernet frame, or None for anything else."""
    if len(frame) < 14 + 20 + 8 + 240 or frame[12:14] != b"\x08\x00" or frame[23] != socket.IPPROTO_UDP:
        return None
    ihl = (frame[14] & 0x0F) * 4
    udp = 14 + ihl
    sport, dport = struct.unpack("!HH", frame[udp : udp + 4])
    if {sport, dport} != {67, 68}:
        return None
    b = frame[udp + 8 :]
    if len(b) < 240 or b[236:240] != MAGIC:
        return None
    xid = struct.unpack("!I", b[4:8])[0]
    mtype, lease, i = None, None, 240
    while i < len(b) and b[i] != 255:
        if b[i] == 0:
            i += 1
            continue
        if i + 1 >= len(b):
            break
        code, n = b[i], b[i + 1]
        val = b[i + 2 : i + 2 + n]
        if code == 53 and n == 1:
            mtype = val[0]
        elif code == 51 and n == 4:
            lease = struct.unpack("!I", val)[0]
        i += 2 + n
    if mtype not in TYPES:
        return None
    return DhcpMessage(TYPES[mtype], xid, socket.inet_ntoa(b[12:16]), socket.inet_ntoa(b[16:20]),
                       to_client=dport == 68, broadcast=frame[30:34] == b"\xff\xff\xff\xff", lease_s=lease)


@dataclass
class Exchanges:
    """Pairs the client's REQUESTs with the server's answers; each completed exchange is one event."""

    pending: dict[int, tuple[float, int, str]] = field(default_factory=dict)  # xid -> first t, count, kind
    last_ack_t: float | None = None
    lease_s: int | None = None
    requests: int = 0
    acks: int = 0

    def feed(self, t: float, m: DhcpMessage) -> list[tuple[str, dict[str, Any]]]:
        if m.type == "request" and not m.to_client:
            self.requests += 1
            kind = "request" if m.ciaddr == "0.0.0.0" else ("rebind" if m.broadcast else "renew")
            first, count, _ = self.pending.get(m.xid, (t, 0, kind))
            self.pending[m.xid] = (first, count + 1, kind)
            return [("request", {"xid": hex(m.xid), "exchange": kind, "attempt": count + 1})]
        if m.type == "discover" and not m.to_client:
            return [("discover", {"xid": hex(m.xid)})]
        if m.type in ("ack", "nak") and m.to_client:
            first, count, kind = self.pending.pop(m.xid, (None, 0, "unsolicited"))
            data: dict[str, Any] = {"xid": hex(m.xid), "exchange": kind, "requests": count,
                                    "latency_s": round(t - first, 3) if first is not None else None}
            if m.type == "nak":
                return [("nak", data)]
            self.acks += 1
            self.last_ack_t, self.lease_s = t, m.lease_s
            data.update(address=m.yiaddr, lease_s=m.lease_s)
            return [("renewal" if kind in ("renew", "rebind") else "bound", data)]
        return []


class Dhcp(BaseFault):
    kind = "dhcp"
    host_tools = (("dnsmasq", "dnsmasq-base", "dhcp faults"),)
    Spec = DhcpSpec

    def __init__(self, spec: Any):
        super().__init__(spec)
        self.server: subprocess.Popen[bytes] | None = None
        self.server_argv: list[str] = []
        self.client_job: Any = None
        self.ex = Exchanges()
        self.stop = threading.Event()
        self.renew_stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()
        self.expired_at: float | None = None  # since when the client has had no address (None: it has one)
        self.address_losses = 0
        self.applied_t: float | None = None  # when the client last applied a lease (its script said so)
        self.awaiting_renewal = False
        self.window_start = (0, 0)  # requests, acks when the window opened
        self.forced = 0

    # -- the server ----------------------------------------------------------------------------
    def _start_server(self, ctx: FaultContext) -> None:
        log = ctx.case_dir / "dnsmasq.out"
        with open(log, "ab") as out:
            # No PDEATHSIG: a heal starts it from the short-lived scheduler thread, whose exit would kill it.
            # It lives in the run's namespace, and deleting the namespace ends it (net/netns.delete_netns).
            self.server = subprocess.Popen(self.server_argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            code = self.server.wait(0.5)
        except subprocess.TimeoutExpired:
            return
        text = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise TestbedError(f"dnsmasq exited with status {code}: {' | '.join(text)} (argv: {' '.join(self.server_argv)})")

    def _stop_server(self) -> int | None:
        if self.server is None:
            return None
        if self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(5)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait(5)
        code, self.server = self.server.returncode, None
        return code

    # -- watching the wire -----------------------------------------------------------------------
    def _sniff(self, ctx: FaultContext) -> None:
        h, sock = ctx.history, self.sock
        assert sock is not None
        pcap = open(ctx.case_dir / "dhcp.pcap", "wb")  # the exchanges, for wireshark/tcpdump -r
        pcap.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        try:
            self._sniff_loop(ctx, h, sock, pcap)
        finally:
            pcap.close()

    def _sniff_loop(self, ctx: FaultContext, h: Any, sock: socket.socket, pcap: Any) -> None:
        while not self.stop.is_set():
            try:
                frame = sock.recv(4096)
            except socket.timeout:
                frame = b""
            except OSError:
                return
            msg = parse_frame(frame) if frame else None
            if msg:
                now = time.time()
                pcap.write(struct.pack("<IIII", int(now), int(now % 1 * 1e6), len(frame), len(frame)) + frame)
                pcap.flush()
            with self.lock:
                if msg:
                    for name, data in self.ex.feed(h.now(), msg):
                        self.note(ctx, name, **data)
                self._check_expiry(ctx)

    def _check_expiry(self, ctx: FaultContext) -> None:
        """The address goes when the lease the client last applied runs out, whatever udhcpc's state:
        the kernel enforces its lifetime. (An ACK seen on the wire that the client never applied
        does not count.)"""
        if self.expired_at is not None or self.applied_t is None or not self.ex.lease_s:
            return
        if ctx.history.now() < self.applied_t + self.ex.lease_s:
            return
        self._address_gone(ctx, self.applied_t + self.ex.lease_s, "the lease the client last applied ran out")

    def _address_gone(self, ctx: FaultContext, t: float, cause: str) -> None:
        """The client has no storage address from `t` on. While the server is stopped that is the
        fault doing its work (path down: the client is not to blame); with the server there, the
        client lost it by itself, and not getting it back is the client's own failure."""
        self.expired_at = t
        self.address_losses += 1
        withheld = self.server is None
        path_down = withheld and ctx.storage.is_ip  # a storage path that is not IP does not use the address
        finding = (f"the client lost its storage address at t={t:.0f} s ({cause})"
                   + ("" if withheld else " while the DHCP server was answering"))
        self.note(ctx, "path-down" if path_down else "address-lost", Step(path_down=path_down, finding=finding),
                  since_t=round(t, 3), cause=cause,
                  last_ack_t=round(self.ex.last_ack_t, 3) if self.ex.last_ack_t is not None else None)

    def _on_client_line(self, ctx: FaultContext, line: str) -> None:
        line = line.strip()
        if not line:
            return
        self.note(ctx, "client", line=line[:300])
        with self.lock:
            if line.startswith(("tb-udhcpc: bound:", "tb-udhcpc: renew:")):
                # The path is back when the client has applied a lease, not when an ACK crossed the wire.
                now = ctx.history.now()
                self.applied_t = now
                self.awaiting_renewal = False
                if self.expired_at is not None:
                    self.note(ctx, "path-up", Step(finding=f"the client had its address again {now - self.expired_at:.0f} s later"),
                              address_lost_t=round(self.expired_at, 3))
                    self.expired_at = None
            elif "deconfig: removed" in line and self.expired_at is None:  # udhcpc gave the lease up early
                self._address_gone(ctx, ctx.history.now(), f"udhcpc dropped the lease: {line[:120]}")

    # -- the fault -------------------------------------------------------------------------------
    def setup(self, ctx: FaultContext) -> Step:
        proc.need("dnsmasq")
        net = ctx.net
        port = net.port_of("client")
        bridge = net.bridges[port.switch]
        lease = self.spec.lease_s
        case_dir = ctx.case_dir
        self.server_argv = [
            "ip", "netns", "exec", net.netns, "dnsmasq", "--conf-file=/dev/null", "--keep-in-foreground",
            "--port=0", f"--interface={bridge}", "--bind-interfaces", "--except-interface=lo", "--no-ping",
            "--no-resolv", "--no-hosts", "--dhcp-authoritative", "--user=root", "--group=root", "--pid-file=",
            f"--dhcp-range={port.address.network.network_address},static,{port.address.netmask},{lease}s",
            f"--dhcp-host={port.mac},{port.address.ip},{lease}s",
            f"--dhcp-leasefile={case_dir / 'dnsmasq.leases'}", f"--log-facility={case_dir / 'dnsmasq.log'}", "--log-dhcp",
        ]
        dev = ctx.client.net_devs[0]
        ctx.client.exec(["ln", "-sf", "/bin/busybox", APPLET], 10, check=True)
        udhcpc = [APPLET, "-f", "-i", dev, "-s", SCRIPT, "-r", str(port.address.ip), "-p", PIDFILE, "-T", "2"]
        # udhcpc tells its story on stderr; the agent streams stdout: one stream, every line an event.
        argv = ["/bin/sh", "-c", 'exec "$@" 2>&1', "udhcpc", *udhcpc]
        t0 = ctx.history.now()
        # Each piece registers its undo as it comes up: a setup that fails half-way leaves nothing.
        self.sock = socket_in(net.netns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        ctx.undo.push(f"DHCP sniffer socket on {port.tap}", self.sock.close)
        attach_dhcp_filter(self.sock)
        self.sock.bind((port.tap, 0))
        self.sock.settimeout(0.5)
        ctx.undo.push("dnsmasq (stop)", self._stop_server)
        self._start_server(ctx)
        sniffer = threading.Thread(target=self._sniff, args=(ctx,), name="dhcp-sniff", daemon=True)
        sniffer.start()
        self.threads.append(sniffer)
        ctx.undo.push("DHCP sniffer and renewer threads", self._stop_threads)
        self.client_job = ctx.client.agent.start(argv, on_line=lambda line: self._on_client_line(ctx, line))
        ctx.undo.push("udhcpc in the client", self.client_job.kill)
        while self.applied_t is None:
            if self.client_job.done() or ctx.history.now() - t0 > 30:
                raise TestbedError(f"dhcp: the client got no lease from dnsmasq within 30 s; see dnsmasq.log and "
                                   f"the dhcp:client events (udhcpc argv: {' '.join(argv)})")
            self.stop.wait(0.1)
        version = proc.run(["dnsmasq", "--version"], check=False).stdout.splitlines()[:1]
        return Step({"server": f"{' '.join(version)[:40]} in namespace {net.netns} on {bridge}", "client": " ".join(argv),
                     "address": str(port.address), "lease_s": self.ex.lease_s, "bound_in_s": round(ctx.history.now() - t0, 2),
                     "watching": f"DHCP on host tap {port.tap}"})

    def _stop_threads(self) -> None:
        self.renew_stop.set()
        self.stop.set()
        for t in self.threads:
            t.join(5)

    def inject(self, ctx: FaultContext) -> Step:
        with self.lock:
            self.window_start = (self.ex.requests, self.ex.acks)
        if self.spec.mode == "renew":
            self.renew_stop.clear()
            t = threading.Thread(target=self._renewer, args=(ctx,), name="dhcp-renew", daemon=True)
            t.start()
            self.threads.append(t)
            return Step({"mode": "renew", "forced_every_s": self.spec.renew_every_s})
        code = self._stop_server()
        with self.lock:
            expires = (self.applied_t or 0) + (self.ex.lease_s or 0)
        return Step({"mode": "server-stop", "server_exit": code, "lease_expires_t": round(expires, 3)})

    def _renewer(self, ctx: FaultContext) -> None:
        """SIGUSR1 to udhcpc every renew_s, but never while the last forced renewal is unfinished:
        busybox treats a second USR1 then as "impatient, square 1" and drops the lease itself."""
        h = ctx.history
        while not self.renew_stop.is_set():
            begun = h.now()
            with self.lock:
                busy = self.awaiting_renewal
                self.awaiting_renewal = True
            if busy:
                self.note(ctx, "renew-skipped", reason="the last forced renewal has not completed")
            else:
                try:
                    res = ctx.client.sh('kill -USR1 "$(cat "$1")"', 30, check=False, args=[PIDFILE])
                    ok, err = res.ok, res.stderr.strip()[:200]
                except GuestError as e:  # a starved guest may not even start `sh`: recorded, and go on
                    ok, err = False, str(e)
                self.forced += 1
                if not self.stop.is_set():
                    self.note(ctx, "renew-forced", started_t=round(begun, 3), took_s=round(h.now() - begun, 3), ok=ok, error=err)
            if self.renew_stop.wait(max(0.0, self.spec.renew_every_s - (h.now() - begun))):
                return

    def heal(self, ctx: FaultContext) -> Step:
        out: dict[str, Any] = {"mode": self.spec.mode}
        if self.spec.mode == "renew":
            self.renew_stop.set()
            out["forced"] = self.forced
        else:
            self._start_server(ctx)
            out["server"] = "started again"
        with self.lock:
            counters = {"delta_requests": self.ex.requests - self.window_start[0],
                        "delta_acks": self.ex.acks - self.window_start[1]}
            out["unanswered_xids"] = len(self.ex.pending)
            out["address_losses"] = self.address_losses
        return Step(out, effect=Effect(bool(counters["delta_requests"]) or bool(self.address_losses), counters))

    def teardown(self, ctx: FaultContext) -> Step:
        """What the whole case saw; the server, the sniffer and udhcpc go by their own undo."""
        return Step({"requests": self.ex.requests, "acks": self.ex.acks})
