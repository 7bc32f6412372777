"""Before any VM boots: the kernels a scenario names are prepared (fetched, or copied from a path) and
their configs checked against what the scenario needs; a missing option is a ConfigError on the
scenario's `client.kernel` (or `nas.kernel`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from testbed.images.build import kernel_for
from testbed.images.recipe import load_recipe
from testbed.kernels import kconfig
from testbed.kernels.kconfig import Need
from testbed.kernels.ref import parse
from testbed.kernels.source import KernelTree

if TYPE_CHECKING:
    from testbed.config.scenario import Scenario

Say = Callable[[str], None]


def client_needs(sc: Scenario) -> tuple[Need, ...]:
    faults = tuple(n for f in sc.faults for n in f.kernel_needs())
    return (*kconfig.BASE_NEEDS, *kconfig.CLIENT_NEEDS, *sc.storage.role.client_kernel_needs(sc), *faults)


def nas_needs(sc: Scenario) -> tuple[Need, ...]:
    faults = tuple(n for f in sc.faults for n in f.kernel_needs())
    return (*kconfig.BASE_NEEDS, *sc.storage.role.nas_kernel_needs(sc), *faults)


@dataclass(frozen=True)
class Kernels:
    client: KernelTree
    nas: KernelTree | None  # None: no NAS VM in this scenario


def prepare(sc: Scenario, source: str, say: Say) -> Kernels:
    """The scenario's kernels, prepared and checked (ConfigError naming the field and the option)."""
    ref = parse(sc.client.kernel, source, "client.kernel")
    client = kernel_for(load_recipe("client"), ref, say)
    kconfig.check(kconfig.read_config(client.config), client_needs(sc), source, "client.kernel",
                  f"kernel {ref} ({client.release})")
    nas = None
    if sc.storage.role.needs_nas and sc.nas.backend == "vm":
        nref = parse(sc.nas.kernel, source, "nas.kernel")
        nas = kernel_for(load_recipe("nas"), nref, say)
        kconfig.check(kconfig.read_config(nas.config), nas_needs(sc), source, "nas.kernel",
                      f"kernel {nref} ({nas.release})")
    return Kernels(client, nas)
