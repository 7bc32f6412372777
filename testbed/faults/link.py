"""link: cut a node's link (its host-side tap down), random loss (nftables `numgen` on the bridge in
the run's namespace), or delay/jitter (netem: on the host tap where the host kernel has it, else
inside the NAS VM, egress plus ingress through ifb). The mechanism used is recorded."""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from typing import Literal

from pyroute2 import NetlinkError

from testbed import proc
from testbed.errors import ConfigError, TestbedError
from testbed.faults.base import BaseFault, Effect, FaultContext, FaultSpec, Step
from testbed.storage.base import Storage
from testbed.vm.shell import Try

NFT_TABLE = "tbfault_loss"


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
        if self.node != "client" and not storage.needs_nas:
            raise ConfigError(source, f"{path}.kind", f"link needs a NAS (storage.protocol is {storage.name})")


class Link(BaseFault):
    kind = "link"
    Spec = LinkSpec
    mechanism = ""
    where = ""

    def inject(self, ctx: FaultContext) -> Step:
        s, net = self.spec, ctx.net
        tap = net.port_of(s.node).tap
        if s.mode == "cut":
            net.set_up(s.node, False)
            self.mechanism = f"host-side tap {tap} set down"
        elif s.mode == "loss":
            rules = nft_loss_ruleset(NFT_TABLE, tap, s.loss_pct)
            proc.run(["ip", "netns", "exec", net.netns, "nft", "-f", "-"], input=rules, timeout=30)
            self.mechanism = f"nftables numgen {s.loss_pct}% drop on {tap}, bridge forward hook in namespace {net.netns}"
        else:
            self.mechanism = self._delay(ctx, tap)
        return Step({"mode": s.mode, "node": s.node, "mechanism": self.mechanism}, path_down=s.mode == "cut")

    def _delay(self, ctx: FaultContext, tap: str) -> str:
        s, net = self.spec, ctx.net
        delay, jitter = int(s.delay_ms * 1000), int(s.jitter_ms * 1000)
        try:
            idx = net.ns.link_lookup(ifname=tap)[0]
            net.ns.tc("add", "netem", index=idx, handle="1:", delay=delay, jitter=jitter)
            self.where = "host"
            return f"netem {s.delay_ms} ms +- {s.jitter_ms} ms on host tap {tap} (toward {s.node})"
        except NetlinkError as e:
            if e.code not in (errno.ENOENT, errno.EOPNOTSUPP):  # anything but "no sch_netem here" is real
                raise TestbedError(f"link delay: netem on host tap {tap} failed: {e}") from None
        if ctx.nas is None:
            raise TestbedError("link delay: the host has no netem and there is no NAS VM to shape in")
        dev = ctx.nas.net_devs[0]
        d, j = f"{s.delay_ms}ms", f"{s.jitter_ms}ms"
        ctx.nas.run_all(["modprobe", "-a", "sch_netem", "ifb"], Try(["ip", "link", "add", "ifb0", "type", "ifb"]),
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
            net.set_up(s.node, True)
        elif s.mode == "loss":
            listing = proc.run(["ip", "netns", "exec", net.netns, "nft", "list", "table", "bridge", NFT_TABLE], check=False).stdout
            dropped = sum(int(x) for x in re.findall(r"counter packets (\d+)", listing))
            out.effect = Effect(dropped > 0, {"dropped_packets": dropped})
            proc.run(["ip", "netns", "exec", net.netns, "nft", "delete", "table", "bridge", NFT_TABLE], check=False)
        elif self.where == "host":
            idx = net.ns.link_lookup(ifname=net.port_of(s.node).tap)[0]
            net.ns.tc("del", index=idx, handle="1:", root=True)
        elif ctx.nas is not None:
            dev = ctx.nas.net_devs[0]
            ctx.nas.run_all(Try(["tc", "qdisc", "del", "dev", dev, "root"]), Try(["tc", "qdisc", "del", "dev", dev, "ingress"]),
                            Try(["tc", "qdisc", "del", "dev", "ifb0", "root"]), timeout=30)
        return out
