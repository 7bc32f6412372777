"""link: cut a node's link (its host-side tap down), random loss (nftables `numgen` on the bridge in
the run's namespace), or delay/jitter (netem: on the host tap where the host kernel has it, else
inside the NAS VM, egress plus ingress through ifb). The mechanism used is recorded, and each mode
is checked from the switch (the run's namespace), never from the starved client:
  cut: no echo reply from the node and no byte through its tap toward it while the link is down;
  loss: the nft drop counter;
  delay: ICMP round trips to the shaped node before the injection and during it. Inside the NAS the
    delay is on both of its directions (a request waits in ifb0's netem on the way in, the reply in
    eth0's on the way out), so every round trip through the NAS, a ping from the switch or an NFS
    call from the client alike, gains about 2 x delay_ms; on the host tap only frames toward the node
    are delayed (about 1 x). Seen when the median RTT rose by at least half that (so at least
    delay_ms inside the NAS)."""

from __future__ import annotations

import errno
import re
import statistics
from dataclasses import dataclass
from typing import Any, Literal

from pyroute2 import NetlinkError

from testbed.host import proc
from testbed.errors import ConfigError, TestbedError
from testbed.faults.base import BaseFault, Effect, FaultContext, FaultSpec, Step
from testbed.monitor.ping import Pinger
from testbed.storage.base import Storage
from testbed.vm.shell import Try

NFT_TABLE = "tbfault_loss"
NAS_SHAPING_MODULES = ["sch_netem", "sch_ingress", "cls_matchall", "act_mirred", "ifb"]  # in the NAS image's recipe
PINGS = 5  # echo requests per measurement


def ping_times(netns: str, address: str, count: int, timeout: float) -> list[float | None]:
    """`count` round trips in ms (None for each lost) from the run's namespace; [] when no ping could be sent."""
    try:
        p = Pinger(netns, address)
    except OSError:
        return []
    p.ident = (p.ident + 0x5A5A) & 0xFFFF  # not the timeline's pinger's (same process, same address at times)
    try:
        return [p.ping(timeout) for _ in range(count)]
    except OSError:
        return []
    finally:
        p.close()


def _median(samples: list[float | None]) -> float | None:
    got = [x for x in samples if x is not None]
    return round(statistics.median(got), 1) if got else None


def delay_effect(before: list[float | None], during: list[float | None], delay_ms: float, directions: int) -> Effect:
    """Was the delay there? Median RTT before the injection against during it: seen when it rose by at
    least half the expected rise (`directions` x delay_ms: 2 when both of the node's directions are
    shaped, 1 for the host tap's egress only); the half allows for jitter and a busy guest's noise."""
    expected = directions * delay_ms
    rtt_before, rtt_during = _median(before), _median(during)
    counters: dict[str, Any] = {"rtt_before_ms": rtt_before, "rtt_during_ms": rtt_during, "expected_rise_ms": expected,
                                "pings_answered_before": f"{sum(x is not None for x in before)}/{len(before)}",
                                "pings_answered_during": f"{sum(x is not None for x in during)}/{len(during)}"}
    if expected <= 0:
        return Effect(None, counters, unmeasured="a delay of 0 ms cannot be told from none by round trips")
    if rtt_before is None or rtt_during is None:
        side = "before the injection" if rtt_before is None else "during the delay"
        return Effect(None, counters, unmeasured=f"no echo reply from the shaped node {side}: no round trip to compare")
    counters["rtt_rise_ms"] = round(rtt_during - rtt_before, 1)
    return Effect(rtt_during - rtt_before >= expected / 2, counters)


def cut_effect(during: list[float | None], to_node_bytes: int, rtt_before: float | None) -> Effect:
    """Was the link cut? No echo reply from the node while its tap was down and no byte through the
    tap toward it (`to_node_bytes` since the cut). The round trip just before the cut (`rtt_before`)
    shows the node answered then; without it, the failed pings alone prove little, the tap's bytes do."""
    answered = sum(x is not None for x in during)
    counters = {"rtt_before_cut_ms": None if rtt_before is None else round(rtt_before, 1),
                "pings_answered_during_cut": f"{answered}/{len(during)}", "bytes_to_node_during_cut": to_node_bytes}
    return Effect(answered == 0 and to_node_bytes == 0, counters)


def nft_loss_ruleset(table: str, tap: str, pct: float) -> str:
    """Drop `pct` % of frames to and from `tap`, counted, in the bridge's forward hook."""
    threshold = int(round(pct * 100))  # numgen over 0..9999
    return (
        f"table bridge {table} {{\n"
        f"  chain forward {{\n"
        f"    type filter hook forward priority 0; policy accept;\n"
        f'    iifname "{tap}" numgen random mod 10000 < {threshold} counter drop\n'
        f'    oifname "{tap}" numgen random mod 10000 < {threshold} counter drop\n'
        f"  }}\n"
        f"}}\n"
    )


@dataclass(frozen=True)
class LinkSpec(FaultSpec):
    kind: Literal["link"]
    at_s: float
    duration_s: float | None = None
    optional: bool = False  # the case may end before its time (else a fault that never started: unknown)
    mode: Literal["cut", "loss", "delay"] = "cut"
    node: str = "client"  # whose link
    loss_pct: float = 5.0
    delay_ms: float = 50.0
    jitter_ms: float = 0.0

    def validate(self, source: str, path: str) -> None:
        self.check_times(source, path)
        if not 0 < self.loss_pct <= 100:
            raise ConfigError(source, f"{path}.loss_pct", "must be in (0, 100]")
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ConfigError(source, f"{path}.delay_ms", "delay and jitter must be >= 0")

    def check_storage(self, storage: Storage, source: str, path: str) -> None:
        self.check_node_has_nas(self.node, storage, source, path)


class Link(BaseFault):
    kind = "link"
    Spec = LinkSpec

    def __init__(self, spec: Any):
        super().__init__(spec)
        self.mechanism = ""
        self.where = ""  # delay: "host" (the tap) or "nas" (inside the NAS VM)
        self.target = ""  # the address whose round trips are measured
        self.rtt_before: list[float | None] = []
        self.rtt_during: list[float | None] = []
        self.tap_at_cut: dict[str, int] = {}

    def inject(self, ctx: FaultContext) -> Step:
        s, net = self.spec, ctx.net
        tap = net.port_of(s.node).tap
        facts: dict[str, Any] = {}
        if s.mode == "cut":
            self.target = net.address_of(s.node)
            self.rtt_before = ping_times(net.netns, self.target, 1, 0.5)
            net.set_up(s.node, False)
            self.tap_at_cut = net.tap_bytes(s.node)
            self.mechanism = f"host-side tap {tap} set down"
        elif s.mode == "loss":
            rules = nft_loss_ruleset(NFT_TABLE, tap, s.loss_pct)
            proc.run(["ip", "netns", "exec", net.netns, "nft", "-f", "-"], input=rules, timeout=30)
            self.mechanism = f"nftables numgen {s.loss_pct}% drop on {tap}, bridge forward hook in namespace {net.netns}"
        else:
            self.mechanism = self._delay(ctx, tap)
            self.rtt_during = ping_times(net.netns, self.target, PINGS, self._ping_timeout())
            facts = {"rtt_before_ms": _median(self.rtt_before), "rtt_at_inject_ms": _median(self.rtt_during)}
        return Step({"mode": s.mode, "node": s.node, "mechanism": self.mechanism, **facts}, path_down=s.mode == "cut" or (s.mode == "loss" and s.loss_pct >= 100))  # all lost: the path is down

    def _directions(self) -> int:
        return 2 if self.where == "nas" else 1

    def _ping_timeout(self) -> float:
        s = self.spec
        return 1.0 + self._directions() * (s.delay_ms + 2 * s.jitter_ms) / 1000

    def _delay(self, ctx: FaultContext, tap: str) -> str:
        """Shape, after measuring the round trips to what will be shaped (the node behind the host tap,
        else the NAS)."""
        s, net = self.spec, ctx.net
        delay, jitter = int(s.delay_ms * 1000), int(s.jitter_ms * 1000)
        self.target = net.address_of(s.node)
        self.rtt_before = ping_times(net.netns, self.target, PINGS, 1.0)
        try:
            idx = net.ns.link_lookup(ifname=tap)[0]
            net.ns.tc("add", "netem", index=idx, handle="1:", delay=delay, jitter=jitter)
            self.where = "host"
            return f"netem {s.delay_ms} ms +- {s.jitter_ms} ms on host tap {tap} (toward {s.node})"
        except NetlinkError as e:
            if e.code not in (errno.ENOENT, errno.EOPNOTSUPP):  # anything but "no sch_netem here" is real
                raise TestbedError(f"link delay: netem on host tap {tap} failed: {e}") from None
        if ctx.nas is None or not ctx.nas.traits.own_kernel:
            raise TestbedError("link delay: the host has no netem and there is no NAS VM to shape in"
                               + (f" (a {ctx.nas.traits.name} NAS shares the host's kernel)" if ctx.nas is not None else ""))
        if self.target != ctx.ends.nas_ip:  # the NAS's link is shaped instead: its round trips are the measure
            self.target = ctx.ends.nas_ip
            self.rtt_before = ping_times(net.netns, self.target, PINGS, 1.0)
        dev = ctx.nas.net_devs[0]
        d, j = f"{s.delay_ms}ms", f"{s.jitter_ms}ms"
        # ifb creates ifb0 as it loads; ingress, matchall and mirred carry the NAS's incoming frames to it.
        ctx.nas.run_all(["modprobe", "-a", *NAS_SHAPING_MODULES], Try(["ip", "link", "add", "ifb0", "type", "ifb"]),
                        ["ip", "link", "set", "ifb0", "up"],
                        ["tc", "qdisc", "add", "dev", dev, "root", "netem", "delay", d, j],
                        ["tc", "qdisc", "add", "dev", dev, "handle", "ffff:", "ingress"],
                        ["tc", "filter", "add", "dev", dev, "parent", "ffff:", "matchall", "action", "mirred", "egress",
                         "redirect", "dev", "ifb0"],
                        ["tc", "qdisc", "add", "dev", "ifb0", "root", "netem", "delay", d, j], timeout=30)
        self.where = "nas"
        return f"netem {d} +- {j} inside the NAS VM on {dev} egress and ingress (via ifb0); the host has no netem"

    def heal(self, ctx: FaultContext) -> Step:
        s, net = self.spec, ctx.net
        out = Step({"mode": s.mode, "mechanism": self.mechanism})
        if s.mode == "cut":
            if self.tap_at_cut:  # (not after a cut that failed)
                # Our own pings would cross the tap if it were up: its bytes are read after them.
                during = ping_times(net.netns, self.target, 2, 0.25)
                to_node = net.tap_bytes(s.node)["to_node"] - self.tap_at_cut["to_node"]
                out.effect = cut_effect(during, to_node, _median(self.rtt_before))
            net.set_up(s.node, True)
        elif s.mode == "loss":
            listing = proc.run(["ip", "netns", "exec", net.netns, "nft", "list", "table", "bridge", NFT_TABLE], check=False).stdout
            dropped = sum(int(x) for x in re.findall(r"counter packets (\d+)", listing))
            out.effect = Effect(dropped > 0, {"dropped_packets": dropped})
            proc.run(["ip", "netns", "exec", net.netns, "nft", "delete", "table", "bridge", NFT_TABLE], check=False)
        else:
            self._heal_delay(ctx, out)
        return out

    def _heal_delay(self, ctx: FaultContext, out: Step) -> None:
        """Round trips once more while the delay is in place, then unshaped; the effect is judged on all
        taken during it (at the injection and now) against those before."""
        s, net = self.spec, ctx.net
        at_heal = ping_times(net.netns, self.target, PINGS, self._ping_timeout()) if self.where else []
        if self.where == "host":
            idx = net.ns.link_lookup(ifname=net.port_of(s.node).tap)[0]
            net.ns.tc("del", index=idx, handle="1:", root=True)
        elif ctx.nas is not None:
            dev = ctx.nas.net_devs[0]
            ctx.nas.run_all(Try(["tc", "qdisc", "del", "dev", dev, "root"]), Try(["tc", "qdisc", "del", "dev", dev, "ingress"]),
                            Try(["tc", "qdisc", "del", "dev", "ifb0", "root"]), timeout=30)
        if not self.where:  # a rollback of a delay never applied: nothing to measure
            return
        effect = delay_effect(self.rtt_before, self.rtt_during + at_heal, s.delay_ms, self._directions())
        after = _median(ping_times(net.netns, self.target, 3, 1.0))
        out.facts.update(shaped=self.where, measured_to=self.target)
        out.effect = Effect(effect.visible, {**effect.counters, "rtt_at_heal_ms": _median(at_heal), "rtt_after_ms": after},
                            effect.unmeasured)
