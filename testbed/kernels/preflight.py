"""Before any VM boots: the kernels a scenario names are prepared (fetched, or copied from a path) and
their configs checked against what the scenario needs; a missing option is a ConfigError on the
scenario's `client.kernel` (or `nas.kernel`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.images.build import kernel_for
from testbed.images.recipe import load_recipe
from testbed import nas as nas_backends
from testbed.kernels import kconfig
from testbed.kernels.kconfig import Need
from testbed.kernels.ref import parse, release_moddir
from testbed.kernels.source import KernelTree

if TYPE_CHECKING:
    from testbed.config.scenario import Scenario

Say = Callable[[str], None]


def client_needs(sc: Scenario) -> tuple[Need, ...]:
    faults = tuple(n for f in sc.faults for n in f.kernel_needs())
    command = (kconfig.Need("CONFIG_CGROUPS", "workload.kind command (its CPU time is read from its cgroup)"),) \
        if sc.workload.kind == "command" else ()
    return (*kconfig.BASE_NEEDS, *kconfig.CLIENT_NEEDS, *sc.storage.role.client_kernel_needs(sc), *faults, *command)


def nas_needs(sc: Scenario) -> tuple[Need, ...]:
    faults = tuple(n for f in sc.faults for n in f.kernel_needs())
    return (*kconfig.BASE_NEEDS, *sc.storage.role.nas_kernel_needs(sc), *faults)


@dataclass(frozen=True)
class Kernels:
    client: KernelTree
    nas: KernelTree | None  # None: no NAS VM in this scenario


def _checked(role: str, field: str, text: str, needs: tuple[Need, ...], source: str, say: Say) -> KernelTree:
    ref = parse(text, source, field)
    if ref.kind == "path":  # its own .config is at hand: refuse it before copying the tree in
        folder = Path(ref.path)
        moddir = release_moddir(folder)
        release = moddir.name if moddir else "?"
        kconfig.check(kconfig.read_config(folder / ".config"), needs, source, field, f"kernel {ref} ({release})")
    tree = kernel_for(load_recipe(role), ref, say)
    kconfig.check(kconfig.read_config(tree.config), needs, source, field, f"kernel {ref} ({tree.release})")
    return tree


def prepare(sc: Scenario, source: str, say: Say) -> Kernels:
    """The scenario's kernels, prepared and checked (KernelError naming the field and the option)."""
    client = _checked("client", "client.kernel", sc.client.kernel, client_needs(sc), source, say)
    nas = None
    if sc.storage.role.needs_nas and nas_backends.traits(sc.nas.backend).own_kernel:
        nas = _checked("nas", "nas.kernel", sc.nas.kernel, nas_needs(sc), source, say)
    return Kernels(client, nas)
