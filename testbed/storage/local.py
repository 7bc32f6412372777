"""Local swap: a virtio disk in the client. The negative control: local block I/O has the kernel's
reserves (mempools, buffer heads), so a client swapping to it must recover."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.host.cleanup import Cleanup
from testbed.errors import ConfigError
from testbed.storage.base import Ends, Storage, use_block_device
from testbed.vm.argv import Disk
from testbed.vm.machine import VM

if TYPE_CHECKING:  # type only: see testbed/storage/base.py
    from testbed.config.scenario import Scenario

SERIAL = "tbswap"


class Local(Storage):
    name = "local"
    title = "local"
    storage_kind = "local disk"
    needs_nas = False
    is_ip = False

    def validate(self, sc: Scenario, source: str) -> None:
        if not sc.workload.uses_swap:
            raise ConfigError(source, "workload.kind", f"{sc.workload.kind} needs network storage (nfs, iscsi or aoe), not local")

    def client_disks(self, sc: Scenario, rundir: Path, undo: Cleanup) -> tuple[Disk, ...]:
        path = rundir / "client-swap.img"
        with open(path, "wb") as f:
            f.truncate(sc.storage.swap_mb * 2**20)
        undo.push(f"client swap disk {path}", os.unlink, path)
        return (Disk(path, serial=SERIAL),)

    def attach(self, client: VM, sc: Scenario, ends: Ends) -> dict[str, Any]:
        return use_block_device(client, client.block_device(SERIAL), sc)
