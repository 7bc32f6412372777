"""Local swap: a virtio disk in the client. The negative control: local block I/O has the kernel's
reserves (mempools, buffer heads), so a client swapping to it must recover."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from testbed import guests
from testbed.cleanup import Cleanup
from testbed.config.scenario import Scenario
from testbed.storage import Ends, use_block_device
from testbed.vm.argv import Disk
from testbed.vm.machine import VM

SERIAL = "tbswap"


class Local:
    name = "local"
    needs_nas = False

    def client_disks(self, sc: Scenario, rundir: Path, undo: Cleanup) -> tuple[Disk, ...]:
        path = rundir / "client-swap.img"
        with open(path, "wb") as f:
            f.truncate(sc.storage.swap_mb * 2**20)
        undo.push(f"client swap disk {path}", os.unlink, path)
        return (Disk(path, serial=SERIAL),)

    def export(self, nas: VM, sc: Scenario, ends: Ends) -> dict[str, Any]:
        return {}

    def attach(self, client: VM, sc: Scenario, ends: Ends) -> dict[str, Any]:
        return use_block_device(client, guests.storage_dev(client, SERIAL), sc)

    def counters(self, client: VM) -> dict[str, Any]:
        return {}

    def stop_service(self, nas: VM, sc: Scenario, ends: Ends) -> str:
        raise NotImplementedError("local storage has no service")

    def start_service(self, nas: VM, sc: Scenario, ends: Ends) -> str:
        raise NotImplementedError("local storage has no service")
