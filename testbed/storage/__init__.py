"""Storage protocols, one module each, behind one small interface, registered by scenario name."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from testbed.cleanup import Cleanup
from testbed.config.scenario import Scenario
from testbed.vm.argv import Disk
from testbed.vm.machine import VM


class Storage(Protocol):
    name: str
    needs_nas: bool

    def client_disks(self, sc: Scenario, rundir: Path, undo: Cleanup) -> tuple[Disk, ...]:
        """Extra disks the client boots with (only local storage has any)."""
        ...

    def export(self, nas: VM, sc: Scenario, client_ip: str) -> dict[str, Any]:
        """Prepare the NAS side (export, backing file, swap file); returns facts for the history."""
        ...

    def attach(self, client: VM, sc: Scenario, nas_ip: str) -> dict[str, Any]:
        """Attach on the client and `swapon`; returns facts (mount options, /proc/swaps)."""
        ...


def registry() -> dict[str, Storage]:
    from testbed.storage.local import Local
    from testbed.storage.nfs import Nfs

    return {s.name: s for s in (Nfs(), Local())}


def get(name: str) -> Storage:
    return registry()[name]
