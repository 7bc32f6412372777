"""Storage protocols, one module each, behind one small interface, registered by scenario name.

Each protocol exports on the NAS, attaches on the client, and then either swaps on what it got
(the anon workload) or holds a filesystem at MOUNT for the file workloads (mmap-shared, write).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from testbed.cleanup import Cleanup
from testbed.config.scenario import Scenario
from testbed.vm.argv import Disk
from testbed.vm.machine import VM

MOUNT = "/mnt/nas"
WORKFILE = f"{MOUNT}/tb-work.dat"


@dataclass(frozen=True)
class Ends:
    """Who talks to whom: addresses on the storage network and the run tag (for IQNs)."""

    tag: str
    client_ip: str
    nas_ip: str

    @property
    def target_iqn(self) -> str:
        return f"iqn.2026-11.org.netswap:{self.tag}-target"

    @property
    def initiator_iqn(self) -> str:
        return f"iqn.2026-11.org.netswap:{self.tag}-client"


class Storage(Protocol):
    name: str
    needs_nas: bool

    def client_disks(self, sc: Scenario, rundir: Path, undo: Cleanup) -> tuple[Disk, ...]:
        """Extra disks the client boots with (only local storage has any)."""
        ...

    def export(self, nas: VM, sc: Scenario, ends: Ends) -> dict[str, Any]:
        """Prepare the NAS side; returns facts for the history."""
        ...

    def attach(self, client: VM, sc: Scenario, ends: Ends) -> dict[str, Any]:
        """Attach on the client, then swapon or mount; returns facts (options, /proc/swaps ...)."""
        ...

    def counters(self, client: VM) -> dict[str, Any]:
        """The protocol's own error counters (retransmits, session errors), read from the client."""
        ...

    def stop_service(self, nas: VM, sc: Scenario, ends: Ends) -> str:
        """Stop serving (the NAS stays up); returns what was done."""
        ...

    def start_service(self, nas: VM, sc: Scenario, ends: Ends) -> str:
        ...


def use_block_device(client: VM, dev: str, sc: Scenario) -> dict[str, Any]:
    """Swap on a network block device, or put ext4 on it and mount it at MOUNT."""
    q = shlex.quote(dev)
    if sc.workload.uses_swap:
        client.sh(f"mkswap {q} >/dev/null && swapon {q}", 60)
        return {"device": dev, "proc_swaps": client.sh("cat /proc/swaps", 10).stdout.strip()}
    client.sh(f"mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 {q} && mkdir -p {MOUNT} && mount -t ext4 {q} {MOUNT}", 300)
    return {"device": dev, "mount": client.sh(f"grep ' {MOUNT} ' /proc/mounts", 10).stdout.strip()}


def registry() -> dict[str, Storage]:
    from testbed.storage.aoe import Aoe
    from testbed.storage.iscsi import Iscsi
    from testbed.storage.local import Local
    from testbed.storage.nfs import Nfs

    return {s.name: s for s in (Nfs(), Iscsi(), Aoe(), Local())}


def get(name: str) -> Storage:
    return registry()[name]
