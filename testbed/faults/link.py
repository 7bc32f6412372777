"""link: cut a node's link (its host-side tap down), random loss (nftables `numgen` on the bridge in
the run's namespace), or delay/jitter (netem: on the host tap where the host kernel has it, else
inside the NAS VM, egress plus ingress through ifb). The mechanism used is recorded."""

from __future__ import annotations

import errno
import re

from pyroute2 import NetlinkError

from testbed import proc
from testbed.errors import TestbedError
from testbed.faults import BaseFault, FaultContext

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


class Link(BaseFault):
    mechanism = ""

    def inject(self, ctx: FaultContext) -> dict[str, object]:
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
        return {"mode": s.mode, "node": s.node, "mechanism": self.mechanism, "path_down": s.mode == "cut"}

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
        ctx.nas.sh(
            f"modprobe -a sch_netem ifb && ip link add ifb0 type ifb 2>/dev/null; ip link set ifb0 up"
            f" && tc qdisc add dev {dev} root netem delay {d} {j}"
            f" && tc qdisc add dev {dev} handle ffff: ingress"
            f" && tc filter add dev {dev} parent ffff: matchall action mirred egress redirect dev ifb0"
            f" && tc qdisc add dev ifb0 root netem delay {d} {j}", 30)
        self.where = "nas"
        return f"netem {d} +- {j} inside the NAS VM on {dev} egress and ingress (via ifb0); the host has no netem"

    def heal(self, ctx: FaultContext) -> dict[str, object]:
        s, net = self.spec, ctx.net
        out: dict[str, object] = {"mode": s.mode, "mechanism": self.mechanism}
        if s.mode == "cut":
            net.set_up(s.node, True)
        elif s.mode == "loss":
            listing = proc.run(["ip", "netns", "exec", net.netns, "nft", "list", "table", "bridge", NFT_TABLE], check=False).stdout
            out["dropped_packets"] = sum(int(x) for x in re.findall(r"counter packets (\d+)", listing))
            out["visible"] = out["dropped_packets"] > 0
            proc.run(["ip", "netns", "exec", net.netns, "nft", "delete", "table", "bridge", NFT_TABLE], check=False)
        elif getattr(self, "where", "") == "host":
            idx = net.ns.link_lookup(ifname=net.port_of(s.node).tap)[0]
            net.ns.tc("del", index=idx, handle="1:", root=True)
        elif ctx.nas is not None:
            dev = ctx.nas.net_devs[0]
            ctx.nas.sh(f"tc qdisc del dev {dev} root; tc qdisc del dev {dev} ingress; tc qdisc del dev ifb0 root; true", 30)
        return out
