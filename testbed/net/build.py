"""Building a Topology: a namespace named by the run tag, a bridge per switch, a tap per VM NIC (a
veth per NIC of a node hosted in a namespace of its own, e.g. a netns NAS).

Every object is registered for undo the moment it exists. Taps are deleted explicitly before the
namespace goes: a persistent tap must never be pushed into the host's namespace on teardown.
Shaping uses TBF on the host side of a link (toward the node); the mechanism is recorded.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute

from testbed.host import proc
from testbed.host.cleanup import Cleanup
from testbed.config.topology import Conditions, Topology
from testbed.errors import TestbedError
from testbed.net.netns import NetnsWorker, delete_netns
from testbed.host.tags import link_name
from testbed.vm.argv import Nic


@dataclass
class Port:
    node: str
    switch: str
    tap: str
    mac: str
    mtu: int
    address: ipaddress.IPv4Interface
    shaping: str = "none"


@dataclass
class BuiltNet:
    netns: str
    ns: Any = None  # the Netlink handle inside the namespace (faults change links through it)
    ports: list[Port] = field(default_factory=list)
    bridges: dict[str, str] = field(default_factory=dict)
    switch_addresses: dict[str, ipaddress.IPv4Interface] = field(default_factory=dict)
    trunks: list[dict[str, Any]] = field(default_factory=list)
    hosted: dict[str, str] = field(default_factory=dict)  # node -> its own namespace (veth instead of tap)

    def ports_of(self, node: str) -> list[Port]:
        return [p for p in self.ports if p.node == node]

    def nics_of(self, node: str) -> tuple[Nic, ...]:
        return tuple(Nic(p.tap, p.mac, p.mtu) for p in self.ports_of(node))

    def port_of(self, node: str) -> Port:
        return self.ports_of(node)[0]

    def set_mtu(self, node: str, mtu: int) -> None:
        self.ns.link("set", index=self.ns.link_lookup(ifname=self.port_of(node).tap)[0], mtu=mtu)

    def set_up(self, node: str, up: bool) -> None:
        """Cut or restore a node's link at the switch. A VM's tap going down is invisible to the guest; a
        hosted node's veth would drop carrier on its own end, so its port leaves the bridge instead."""
        port = self.port_of(node)
        idx = self.ns.link_lookup(ifname=port.tap)[0]
        if node in self.hosted:
            master = self.ns.link_lookup(ifname=self.bridges[port.switch])[0] if up else 0
            self.ns.link("set", index=idx, master=master)
            return
        self.ns.link("set", index=idx, state="up" if up else "down")

    def tap_bytes(self, node: str) -> dict[str, int]:
        """Bytes through the node's host-side tap: toward the node (the tap's tx) and from it (rx)."""
        link = self.ns.link("get", index=self.ns.link_lookup(ifname=self.port_of(node).tap)[0])[0]
        stats = link.get_attr("IFLA_STATS64")
        return {"to_node": int(stats["tx_bytes"]), "from_node": int(stats["rx_bytes"])}

    def address_of(self, node: str) -> str:
        return str(self.ports_of(node)[0].address.ip)

    def describe(self) -> dict[str, Any]:
        return {
            "netns": self.netns,
            "bridges": self.bridges,
            "ports": [
                {"node": p.node, "switch": p.switch, "tap": p.tap, "mac": p.mac, "mtu": p.mtu,
                 "address": str(p.address), "shaping": p.shaping}
                for p in self.ports
            ],
            "trunks": self.trunks,
            "hosted": self.hosted,
        }


def mac_for(tag: str, index: int) -> str:
    h = int(tag[2:], 16)
    return f"52:54:{(h >> 16) & 0xff:02x}:{(h >> 8) & 0xff:02x}:{h & 0xff:02x}:{index:02x}"


class Netlink:
    """pyroute2's IPRoute, created and always called inside the run's namespace (see NetnsWorker)."""

    def __init__(self, worker: NetnsWorker):
        self.worker = worker
        self.ipr = worker.call(IPRoute)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        fn = getattr(self.ipr, name)
        return lambda *a, **k: self.worker.call(fn, *a, **k)

    def close(self) -> None:
        self.worker.call(self.ipr.close)


def _delete_link(ns: Netlink, name: str) -> None:
    idx = ns.link_lookup(ifname=name)
    if idx:
        ns.link("del", index=idx[0])


def _delete_netns(name: str) -> None:
    """Registered before `ip netns add` runs (a stop to the process group can end that command, or us, right
    after it made the namespace): a namespace that was never made is nothing to undo."""
    if not os.path.exists(f"/run/netns/{name}"):
        return
    res = delete_netns(name)
    if res.returncode != 0:
        raise TestbedError(f"ip netns delete {name} failed: {res.stderr.strip()}")


def _hosted_end(ns: Netlink, run_ns: str, tap: str, host_ns: str, dev: str, undo: Cleanup) -> None:
    """A veth in place of a tap: `tap` stays in the run's namespace (for the bridge, shaping and
    faults, like a VM's tap), its peer `dev` goes into `host_ns`, the node's own namespace."""
    if not os.path.exists(f"/run/netns/{host_ns}"):  # a container's is there already (named by its owner)
        undo.push(f"network namespace {host_ns}", _delete_netns, host_ns)
        proc.run(["ip", "netns", "add", host_ns], timeout=30)
    proc.run(["ip", "-n", host_ns, "link", "set", "lo", "up"], timeout=30)
    proc.run(["ip", "-n", run_ns, "link", "add", tap, "type", "veth", "peer", "name", dev, "netns", host_ns], timeout=30)
    undo.push(f"veth {tap}", _delete_link, ns, tap)


def host_netns(tag: str, node: str) -> str:
    """The namespace of a node hosted on the host (a traffic host, a netns NAS): <tag>-<node>."""
    clean = re.sub(r"[^a-z0-9]", "", node.lower())[:16] or "node"
    return f"{tag}-{clean}"


def _shape(ns: Netlink, idx: int, c: Conditions, mtu: int, where: str) -> str:
    """A link's conditions on one interface's egress: TBF for a rate, netem for delay/jitter/loss."""
    if c.rate_mbit:
        rate = int(c.rate_mbit * 1_000_000 / 8)
        burst = max(rate // 100, 16 * 1024)
        if c.queue_packets:
            ns.tc("add", "tbf", index=idx, handle="1:", rate=rate, burst=burst, limit=c.queue_packets * mtu)
            return f"tbf {c.rate_mbit} Mbit/s, queue {c.queue_packets} packets on {where}"
        ns.tc("add", "tbf", index=idx, handle="1:", rate=rate, burst=burst, latency=50000)
        return f"tbf {c.rate_mbit} Mbit/s on {where}"
    if c.needs_netem:
        opts: dict[str, Any] = {"delay": int(c.delay_ms * 1000), "jitter": int(c.jitter_ms * 1000), "loss": c.loss_pct}
        if c.queue_packets:
            opts["limit"] = c.queue_packets
        ns.tc("add", "netem", index=idx, handle="1:", **opts)
        return f"netem delay {c.delay_ms} ms +- {c.jitter_ms} ms, loss {c.loss_pct} % on {where}"
    return "none"


def build(topo: Topology, tag: str, undo: Cleanup, hosted: dict[str, str] | None = None) -> BuiltNet:
    """`hosted`: nodes that are host processes in a namespace of their own (node -> namespace name),
    joined by a veth instead of a tap (a netns NAS); nodes of kind `host` (traffic hosts) always are."""
    hosted = {**{n: host_netns(tag, n) for n, node in topo.nodes.items() if node.kind == "host"}, **(hosted or {})}
    if os.path.exists(f"/run/netns/{tag}"):
        raise TestbedError(f"network namespace {tag} already exists: run `testbed clean`")
    undo.push(f"network namespace {tag}", _delete_netns, tag)  # before it is made: see _delete_netns
    proc.run(["ip", "netns", "add", tag], timeout=30)
    worker = NetnsWorker(tag)
    undo.push(f"thread in {tag}", worker.close)
    ns = Netlink(worker)
    undo.push(f"netlink socket in {tag}", ns.close)
    net = BuiltNet(netns=tag, ns=ns)
    lo = ns.link_lookup(ifname="lo")[0]
    ns.link("set", index=lo, state="up")
    for i, (sw, spec) in enumerate(topo.switches.items()):
        name = link_name(tag, f"s{i}")
        ns.link("add", ifname=name, kind="bridge")
        undo.push(f"bridge {name}", _delete_link, ns, name)
        idx = ns.link_lookup(ifname=name)[0]
        addr = topo.switch_address(sw)
        # The switch's own address lives only inside the run's namespace: monitors ping from here.
        ns.addr("add", index=idx, address=str(addr.ip), prefixlen=addr.network.prefixlen)
        ns.link("set", index=idx, state="up")
        net.bridges[sw] = name
        net.switch_addresses[sw] = addr
    addresses = topo.addresses()
    for i, link in enumerate(topo.links):
        tap = link_name(tag, f"{link.node[0]}{i}")
        port = Port(link.node, link.switch, tap, mac_for(tag, i), link.mtu, addresses[i])
        if link.node in hosted:
            dev = f"eth{sum(1 for p in net.ports if p.node == link.node)}"
            _hosted_end(ns, tag, tap, hosted[link.node], dev, undo)
            a = port.address
            proc.run(["ip", "-n", hosted[link.node], "link", "set", dev, "address", port.mac, "mtu", str(link.mtu), "up"], timeout=30)
            proc.run(["ip", "-n", hosted[link.node], "addr", "add", f"{a.ip}/{a.network.prefixlen}", "dev", dev], timeout=30)
        else:
            ns.link("add", ifname=tap, kind="tuntap", mode="tap")
            undo.push(f"tap {tap}", _delete_link, ns, tap)
        found = ns.link_lookup(ifname=tap)
        if not found:
            raise TestbedError(f"tap {tap} was not created in namespace {tag} (pyroute2 tuntap); see `ip -n {tag} link`")
        idx = found[0]
        bridge = ns.link_lookup(ifname=net.bridges[link.switch])[0]
        ns.link("set", index=idx, mtu=link.mtu, master=bridge, state="up")
        port.shaping = _shape(ns, idx, link, link.mtu, f"host tap {tap} (toward {link.node})")
        net.ports.append(port)
    for i, t in enumerate(topo.trunks):
        a, b = link_name(tag, f"t{i}a"), link_name(tag, f"t{i}b")
        ns.link("add", ifname=a, kind="veth", peer=b)
        undo.push(f"trunk {a}", _delete_link, ns, a)
        shaped = []
        for end, sw in ((a, t.a), (b, t.b)):
            idx = ns.link_lookup(ifname=end)[0]
            ns.link("set", index=idx, mtu=t.mtu, master=ns.link_lookup(ifname=net.bridges[sw])[0], state="up")
            shaped.append(_shape(ns, idx, t, t.mtu, f"{end} (toward the other switch)"))
        net.trunks.append({"a": t.a, "b": t.b, "veth": [a, b], "mtu": t.mtu, "shaping": shaped})
    net.hosted = hosted
    return net
