"""`testbed node-resources`: what this host can offer a Ray cluster, as JSON for `ray start --resources`."""

from __future__ import annotations

import argparse
import json


def cmd_node_resources(args: argparse.Namespace) -> int:
    from testbed.engine.ray_engine import node_resources  # its KVM probe may boot a VM: only on this verb

    print(json.dumps(node_resources()))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("node-resources", help="this host's Ray resources (cases at once, kvm) as JSON",
                       description="Prints e.g. {\"testbed_case\": 1.0} for `ray start --head --resources "
                                   "\"$(testbed node-resources)\"`: cases this host can hold at once (by cores and "
                                   "memory), and `kvm` when the accelerator probe finds real KVM.")
    p.set_defaults(func=cmd_node_resources)
