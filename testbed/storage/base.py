"""What every storage protocol is: its declarations, the NAS and client steps, and defaults for
what most protocols do not need. The protocols themselves are testbed/storage/<name>.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from testbed.cleanup import Cleanup
from testbed.errors import TestbedError
from testbed.vm.argv import Disk
from testbed.vm.machine import VM

if TYPE_CHECKING:  # type only: the scenario holds the protocols' specs, so importing it here would be a cycle
    from testbed.config.scenario import Scenario

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


class Storage:
    """A protocol: exports on the NAS, attaches on the client, then swaps on what it got (the anon
    workload) or holds a filesystem at MOUNT (the file workloads).

    Declarations: `name` (as in scenario files), `spec` (its options dataclass under
    `storage.<name>`, or None), `needs_nas`, `is_ip` (whether its traffic is IP: IPsec can cover it,
    a DHCP lease carries its address), `ports` (the NAS's service ports), `client_processes` and
    `nas_processes` (the processes its path depends on, as their names appear to the kernel)."""

    name: ClassVar[str]
    title: ClassVar[str]  # as people write it: NFS, iSCSI, AoE
    spec: ClassVar[type | None] = None
    needs_nas: ClassVar[bool] = True
    is_ip: ClassVar[bool] = True
    ports: ClassVar[tuple[int, ...]] = ()
    client_processes: ClassVar[tuple[str, ...]] = ()
    nas_processes: ClassVar[tuple[str, ...]] = ()

    def validate(self, sc: Scenario, source: str) -> None:
        """Checks of the whole scenario that only this protocol knows (ConfigError naming the field)."""

    def backing_mb(self, sc: Scenario) -> int:
        """Size of what the NAS serves: the swap file, or room for the workload's file plus ext4."""
        if sc.workload.uses_swap:
            return sc.storage.swap_mb
        return sc.workload.total_mb(sc.client.mem_mb) * 5 // 4 + 64

    def client_disks(self, sc: Scenario, rundir: Path, undo: Cleanup) -> tuple[Disk, ...]:
        """Extra disks the client boots with (only local storage has any)."""
        return ()

    def export(self, nas: VM, sc: Scenario, ends: Ends) -> dict[str, Any]:
        """Prepare the NAS side; returns facts for the history."""
        return {}

    def attach(self, client: VM, sc: Scenario, ends: Ends) -> dict[str, Any]:
        """Attach on the client, then swapon or mount; returns facts (options, /proc/swaps ...)."""
        raise NotImplementedError

    def counters(self, client: VM) -> dict[str, Any]:
        """The protocol's own error counters (retransmits, session errors), read from the client."""
        return {}

    def stop_service(self, nas: VM, sc: Scenario, ends: Ends) -> str:
        """Stop serving (the NAS stays up); returns what was done."""
        raise TestbedError(f"{self.name} storage has no service to stop")

    def start_service(self, nas: VM, sc: Scenario, ends: Ends) -> str:
        raise TestbedError(f"{self.name} storage has no service to start")


def use_block_device(client: VM, dev: str, sc: Scenario) -> dict[str, Any]:
    """Swap on a network block device, or put ext4 on it and mount it at MOUNT."""
    if sc.workload.uses_swap:
        client.run_all(["mkswap", dev], ["swapon", dev], timeout=60)
        return {"device": dev, "proc_swaps": client.exec(["cat", "/proc/swaps"], 10, check=True).stdout.strip()}
    client.run_all(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", dev],
                   ["mkdir", "-p", MOUNT], ["mount", "-t", "ext4", dev, MOUNT], timeout=300)
    return {"device": dev, "mount": mounted(client)}


def mounted(client: VM) -> str:
    """The /proc/mounts line of MOUNT."""
    return client.exec(["grep", f" {MOUNT} ", "/proc/mounts"], 10, check=True).stdout.strip()
