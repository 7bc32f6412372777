"""Topologies: plain data (nodes, switches, links) with no side effects; net/ builds them.

Addresses are static for now: each switch has a subnet, nodes get host addresses in link order
unless a link names one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from testbed.config.assign import apply_assignments
from testbed.config.strict import from_dict, load_yaml
from testbed.errors import ConfigError
from testbed.host.paths import repo_root


@dataclass(frozen=True)
class Node:
    # vm: a QEMU guest (the client always; the NAS with nas.backend vm); host: a namespace of the
    # run on the host with a veth per link (a traffic host)
    kind: Literal["vm", "host"] = "vm"
    role: Literal["client", "nas", "traffic"] = "client"

    def validate(self, source: str, path: str) -> None:
        if self.role == "client" and self.kind != "vm":
            raise ConfigError(source, f"{path}.kind", "the client is always a VM (a host process shares the host's kernel)")
        if self.role == "traffic" and self.kind != "host":
            raise ConfigError(source, f"{path}.kind", "a traffic node is a host (kind: host)")


@dataclass(frozen=True)
class Conditions:
    """What a link does to every frame for the whole case (Mininet TCLink's options): delay, jitter
    and loss need netem, a rate TBF; recorded with the network."""

    rate_mbit: float | None = None  # shaped with TBF on the host side of the link
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    queue_packets: int | None = None  # the shaper's queue (Mininet's max_queue_size)

    def check(self, source: str, path: str) -> None:
        if self.rate_mbit is not None and self.rate_mbit <= 0:
            raise ConfigError(source, f"{path}.rate_mbit", "must be positive")
        for name in ("delay_ms", "jitter_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(source, f"{path}.{name}", "must be >= 0")
        if not 0 <= self.loss_pct <= 100:
            raise ConfigError(source, f"{path}.loss_pct", "must be between 0 and 100")
        if self.queue_packets is not None and self.queue_packets < 1:
            raise ConfigError(source, f"{path}.queue_packets", "must be at least 1")
        if self.jitter_ms and not self.delay_ms:
            raise ConfigError(source, f"{path}.jitter_ms", "jitter needs a delay")
        if self.rate_mbit is not None and self.needs_netem:
            raise ConfigError(source, f"{path}.rate_mbit", "a rate together with delay/loss on one link is not built yet "
                              "(TBF and netem would need stacking): put them on different links")

    @property
    def needs_netem(self) -> bool:
        return bool(self.delay_ms or self.jitter_ms or self.loss_pct)


@dataclass(frozen=True)
class Switch:
    subnet: str = "10.201.0.0/24"

    def validate(self, source: str, path: str) -> None:
        try:
            net = ipaddress.ip_network(self.subnet)
        except ValueError as e:
            raise ConfigError(source, f"{path}.subnet", str(e)) from None
        if net.num_addresses < 8:
            raise ConfigError(source, f"{path}.subnet", "needs room for at least 6 hosts")


@dataclass(frozen=True)
class Link(Conditions):
    node: str = ""
    switch: str = ""
    mtu: int = 1500
    address: str | None = None

    def validate(self, source: str, path: str) -> None:
        if not self.node or not self.switch:
            raise ConfigError(source, f"{path}.{'node' if not self.node else 'switch'}", "is required")
        if not 576 <= self.mtu <= 9000:
            raise ConfigError(source, f"{path}.mtu", "must be between 576 and 9000")
        self.check(source, path)


@dataclass(frozen=True)
class Trunk(Conditions):
    """A link between two switches (a veth between their bridges): one L2 segment, one subnet."""

    a: str = ""
    b: str = ""
    mtu: int = 1500

    def validate(self, source: str, path: str) -> None:
        if not self.a or not self.b or self.a == self.b:
            raise ConfigError(source, f"{path}.b", "a trunk joins two different switches (a, b)")
        if not 576 <= self.mtu <= 9000:
            raise ConfigError(source, f"{path}.mtu", "must be between 576 and 9000")
        self.check(source, path)


@dataclass(frozen=True)
class Topology:
    name: str
    nodes: dict[str, Node]
    switches: dict[str, Switch]
    links: tuple[Link, ...]
    trunks: tuple[Trunk, ...] = ()
    description: str = ""
    path: str = ""

    def validate(self, source: str, path: str) -> None:
        for i, link in enumerate(self.links):
            if link.node not in self.nodes:
                raise ConfigError(source, f"links[{i}].node", f"no node named {link.node!r} (nodes: {', '.join(self.nodes)})")
            if link.switch not in self.switches:
                raise ConfigError(source, f"links[{i}].switch", f"no switch named {link.switch!r} (switches: {', '.join(self.switches)})")
        for i, t in enumerate(self.trunks):
            for end in ("a", "b"):
                if getattr(t, end) not in self.switches:
                    raise ConfigError(source, f"trunks[{i}].{end}", f"no switch named {getattr(t, end)!r} (switches: {', '.join(self.switches)})")
            if self.switches[t.a].subnet != self.switches[t.b].subnet:
                raise ConfigError(source, f"trunks[{i}]", f"joins {t.a} and {t.b} into one segment: give them the same subnet")
        for name in self.nodes:
            if not self.links_of(name):
                raise ConfigError(source, f"nodes.{name}", "has no link")
        roles = [n.role for n in self.nodes.values()]
        for role in ("client", "nas"):
            if roles.count(role) != 1:
                raise ConfigError(source, "nodes", f"needs exactly one node with role {role} (has {roles.count(role)})")
        self.addresses(source)

    def node_for(self, role: str) -> str:
        return next(n for n, node in self.nodes.items() if node.role == role)

    def links_of(self, node: str) -> list[Link]:
        return [link for link in self.links if link.node == node]

    def addresses(self, source: str = "") -> dict[int, ipaddress.IPv4Interface]:
        """Link index -> interface address. The last usable host address of each subnet is the switch's."""
        out: dict[int, ipaddress.IPv4Interface] = {}
        counters: dict[str, int] = {}  # per subnet: trunked switches share one
        for i, link in enumerate(self.links):
            subnet = self.switches[link.switch].subnet
            net = ipaddress.ip_network(subnet)
            if link.address:
                try:
                    iface = ipaddress.ip_interface(link.address)
                except ValueError as e:
                    raise ConfigError(source or self.path, f"links[{i}].address", str(e)) from None
            else:
                counters[subnet] = counters.get(subnet, 0) + 1
                iface = ipaddress.ip_interface(f"{net.network_address + counters[subnet]}/{net.prefixlen}")
            out[i] = iface  # type: ignore[assignment]
        return out

    def switch_address(self, switch: str) -> ipaddress.IPv4Interface:
        """The k-th switch on a subnet has its (k)th-last usable address: trunked switches never share one."""
        subnet = self.switches[switch].subnet
        k = [n for n, sw in self.switches.items() if sw.subnet == subnet].index(switch) + 1
        net = ipaddress.ip_network(subnet)
        return ipaddress.ip_interface(f"{net.broadcast_address - k}/{net.prefixlen}")  # type: ignore[return-value]


def topology_path(ref: str, relative_to: Path | None = None) -> Path:
    """A topology reference: a name in topologies/ or a path (relative to the scenario file)."""
    if ref.endswith((".yaml", ".yml")) or "/" in ref:
        p = Path(ref)
        if not p.is_absolute() and relative_to is not None:
            cand = relative_to / p
            if cand.exists():
                return cand
        return p if p.is_absolute() else (repo_root() / p)
    return repo_root() / "topologies" / f"{ref}.yaml"


def load_topology(path: Path, assignments: dict[str, object] | None = None, via: str = "") -> Topology:
    """Load a topology file; `assignments` (path -> value, `*` for every element) edit it first."""

    data = load_yaml(path)
    source = str(path)
    if assignments and isinstance(data, dict):
        source = f"{path} (edited by {via or 'overrides'}: {', '.join(f'topology.{k}' for k in assignments)})"
        data = apply_assignments(data, {k: v for k, v in assignments.items()}, source)
    if isinstance(data, dict):
        data = {**data, "path": str(path)}
    return from_dict(Topology, data, source)
