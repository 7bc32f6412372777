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
from testbed.paths import repo_root


@dataclass(frozen=True)
class Node:
    kind: Literal["vm"] = "vm"
    role: Literal["client", "nas"] = "client"


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
class Link:
    node: str
    switch: str
    mtu: int = 1500
    rate_mbit: float | None = None  # shaped with TBF on the host side of the link
    address: str | None = None

    def validate(self, source: str, path: str) -> None:
        if not 576 <= self.mtu <= 9000:
            raise ConfigError(source, f"{path}.mtu", "must be between 576 and 9000")
        if self.rate_mbit is not None and self.rate_mbit <= 0:
            raise ConfigError(source, f"{path}.rate_mbit", "must be positive")


@dataclass(frozen=True)
class Topology:
    name: str
    nodes: dict[str, Node]
    switches: dict[str, Switch]
    links: tuple[Link, ...]
    description: str = ""
    path: str = ""

    def validate(self, source: str, path: str) -> None:
        for i, link in enumerate(self.links):
            if link.node not in self.nodes:
                raise ConfigError(source, f"links[{i}].node", f"no node named {link.node!r} (nodes: {', '.join(self.nodes)})")
            if link.switch not in self.switches:
                raise ConfigError(source, f"links[{i}].switch", f"no switch named {link.switch!r}")
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
        counters: dict[str, int] = {}
        for i, link in enumerate(self.links):
            net = ipaddress.ip_network(self.switches[link.switch].subnet)
            if link.address:
                try:
                    iface = ipaddress.ip_interface(link.address)
                except ValueError as e:
                    raise ConfigError(source or self.path, f"links[{i}].address", str(e)) from None
            else:
                counters[link.switch] = counters.get(link.switch, 0) + 1
                iface = ipaddress.ip_interface(f"{net.network_address + counters[link.switch]}/{net.prefixlen}")
            out[i] = iface  # type: ignore[assignment]
        return out

    def switch_address(self, switch: str) -> ipaddress.IPv4Interface:
        net = ipaddress.ip_network(self.switches[switch].subnet)
        return ipaddress.ip_interface(f"{net.broadcast_address - 1}/{net.prefixlen}")  # type: ignore[return-value]


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
