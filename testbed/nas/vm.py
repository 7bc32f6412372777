"""The VM NAS: boots the nas image with a data disk (a sparse file formatted on the host, no mounts)
mounted at /srv inside the guest, where protocol modules put their exports."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from testbed.vm import guests

from testbed.host import proc
from testbed.host.cleanup import Cleanup
from testbed.config.scenario import Scenario
from testbed.images.cache import Image
from testbed.net.build import BuiltNet
from testbed.vm.argv import Disk
from testbed.vm.machine import VM

DATA_SERIAL = "tbnasdata"


def make_data_disk(path: Path, size_mb: int, undo: Cleanup) -> None:
    with open(path, "wb") as f:
        f.truncate(size_mb * 2**20)
    undo.push(f"NAS data disk {path}", os.unlink, path)
    proc.run(["mkfs.ext4", "-q", "-F", "-L", "tbnasdata", "-E", "lazy_itable_init=1,lazy_journal_init=1", str(path)])


def start(sc: Scenario, image: Image, net: BuiltNet, node: str, tag: str, accel: str,
          rundir: Path, logdir: Path, undo: Cleanup, say: Callable[[str], None] = lambda m: None) -> VM:
    disk = rundir / "nas-data.img"
    make_data_disk(disk, sc.nas.data_disk_mb, undo)
    vm = guests.boot(role="nas", node=node, tag=tag, image=image, net=net, mem_mb=sc.nas.mem_mb,
                     vcpus=sc.nas.vcpus, accel=accel, rundir=rundir, logdir=logdir, undo=undo,
                     boot_s=sc.deadlines.boot_s, disks=(Disk(disk, serial=DATA_SERIAL),),
                     mode=sc.nas.boot, say=say)
    dev = vm.block_device(DATA_SERIAL)
    vm.run_all(["mkdir", "-p", "/srv"], ["mount", "-t", "ext4", dev, "/srv"], timeout=30)
    return vm
