"""fragmentation: change the client's link MTU mid-run (host tap and guest NIC together), or flood
the client with incomplete fragment trains (first fragments only) so reassembly queues hold memory
until they time out. Records ipfrag_high_thresh and the Ip Reasm*/Frag* counters around it."""

from __future__ import annotations

import random
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any, Literal

from testbed.errors import ConfigError
from testbed.faults.base import STALE, BaseFault, Effect, FaultContext, FaultSpec, Step, deltas, paced_send
from testbed.net.netns import socket_in


@dataclass(frozen=True)
class FragmentationSpec(FaultSpec):
    kind: Literal["fragmentation"]
    at_s: float
    duration_s: float | None = 30
    optional: bool = False  # the case may end before its time (else a fault that never started: unknown)
    mode: Literal["mtu-change", "flood"] = "flood"
    mtu: int = 1000  # mtu-change: the client's link MTU during the fault
    rate_pps: int = 2000  # flood: incomplete fragment trains per second

    def validate(self, source: str, path: str) -> None:
        self.check_times(source, path)
        if not 576 <= self.mtu <= 9000:
            raise ConfigError(source, f"{path}.mtu", "must be between 576 and 9000")
        if not 1 <= self.rate_pps <= 100000:
            raise ConfigError(source, f"{path}.rate_pps", "must be between 1 and 100000")


def first_fragment(src: str, dst: str, ident: int, payload: int = 1200) -> bytes:
    """An IPv4 UDP first fragment (MF set, offset 0) whose rest never comes."""
    total = 20 + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident, 0x2000, 64, socket.IPPROTO_UDP, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    return header + b"\xa5" * payload


def ip_counters(ctx: FaultContext) -> dict[str, Any] | None:
    tel = ctx.client.agent.fresh_telemetry()
    if tel is None:
        return None
    ip = tel.get("snmp", {}).get("Ip", {})
    return {k: ip.get(k) for k in ("ReasmReqds", "ReasmFails", "ReasmTimeout", "ReasmOKs", "FragFails")}


class Fragmentation(BaseFault):
    kind = "fragmentation"
    Spec = FragmentationSpec

    def __init__(self, spec: Any):
        super().__init__(spec)
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.sent = 0
        self.before: dict[str, Any] | None = None
        self.old_mtu = 0

    def setup(self, ctx: FaultContext) -> Step:
        res = ctx.client.exec(["cat", "/proc/sys/net/ipv4/ipfrag_high_thresh", "/proc/sys/net/ipv4/ipfrag_time"], 10, check=True)
        thresh, ftime = (res.stdout.split() + ["", ""])[:2]
        return Step({"ipfrag_high_thresh": thresh, "ipfrag_time": ftime})

    def inject(self, ctx: FaultContext) -> Step:
        s, net = self.spec, ctx.net
        self.before = ip_counters(ctx)
        if s.mode == "mtu-change":
            port = net.port_of("client")
            self.old_mtu = port.mtu
            self._set_mtu(ctx, s.mtu)
            return Step({"mode": s.mode, "from_mtu": self.old_mtu, "to_mtu": s.mtu})
        sock = socket_in(net.netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        src = str(net.switch_addresses[net.port_of("client").switch].ip)
        self.thread = threading.Thread(target=self._flood, args=(sock, src, ctx.ends.client_ip), daemon=True)
        self.thread.start()
        ctx.undo.push("fragment flood", self._stop_flood)
        return Step({"mode": "flood", "rate_pps": s.rate_pps, **{f"before_{k}": v for k, v in (self.before or {}).items()}})

    def _stop_flood(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join(5)

    def _set_mtu(self, ctx: FaultContext, mtu: int) -> None:
        # Lowering: guest first (so it never sends frames the tap drops); raising: tap first.
        port = ctx.net.port_of("client")
        dev = ctx.client.net_devs[0]
        if mtu < port.mtu:
            ctx.client.exec(["ip", "link", "set", dev, "mtu", str(mtu)], 15, check=True)
            ctx.net.set_mtu("client", mtu)
        else:
            ctx.net.set_mtu("client", mtu)
            ctx.client.exec(["ip", "link", "set", dev, "mtu", str(mtu)], 15, check=True)
        port.mtu = mtu

    def _flood(self, sock: socket.socket, src: str, dst: str) -> None:
        packet = lambda: first_fragment(src, dst, random.randrange(65536))  # noqa: E731
        self.sent = paced_send(sock, packet, (dst, 0), self.spec.rate_pps, self.stop)

    def heal(self, ctx: FaultContext) -> Step:
        out: dict[str, Any] = {"mode": self.spec.mode}
        if self.spec.mode == "mtu-change":
            self._set_mtu(ctx, self.old_mtu)
            out["restored_mtu"] = self.old_mtu
            return Step(out, effect=Effect(True))
        self._stop_flood()
        counters: dict[str, Any] = {"fragments_sent": self.sent}
        delta = deltas(self.before, ip_counters(ctx))
        if delta is None:
            return Step(out, effect=Effect(None, counters, unmeasured=STALE))
        counters.update({f"delta_{k}": v for k, v in delta.items()})
        return Step(out, effect=Effect(bool(delta.get("ReasmReqds")), counters))
