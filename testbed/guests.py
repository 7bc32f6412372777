"""Booting a case's guests on the built network and giving them their static addresses."""

from __future__ import annotations

from pathlib import Path

from testbed.cleanup import Cleanup
from testbed.errors import GuestError
from testbed.images.cache import Image
from testbed.net.build import BuiltNet
from testbed.tags import vm_name
from testbed.vm.argv import Disk, VMSpec
from testbed.vm.machine import VM


def boot(
    *,
    role: str,
    node: str,
    tag: str,
    image: Image,
    net: BuiltNet,
    mem_mb: int,
    vcpus: int,
    accel: str,
    rundir: Path,
    logdir: Path,
    undo: Cleanup,
    boot_s: float,
    disks: tuple[Disk, ...] = (),
) -> VM:
    spec = VMSpec(
        name=vm_name(tag, role),
        kernel=image.kernel,
        initrd=image.initrd,
        root=image.root,
        rundir=rundir,
        mem_mb=mem_mb,
        vcpus=vcpus,
        accel=accel,
        netns=net.netns,
        nics=net.nics_of(node),
        disks=disks,
        console_log=logdir / f"console-{role}.log",
        qemu_log=logdir / f"qemu-{role}.log",
    )
    vm = VM(spec, undo)
    vm.start()
    vm.wait_ready(boot_s)
    configure_net(vm, net, node)
    return vm


def configure_net(vm: VM, net: BuiltNet, node: str) -> None:
    """Find each NIC by its MAC (no udev in the guest, so names are eth0, eth1 ...) and address it."""
    out = vm.exec(["ip", "-o", "link"], 15, check=True).stdout
    by_mac = {}
    for line in out.splitlines():
        parts = line.split()
        if "link/ether" in parts:
            by_mac[parts[parts.index("link/ether") + 1]] = parts[1].rstrip(":").split("@")[0]
    steps: list[list[str]] = []
    for port in net.ports_of(node):
        dev = by_mac.get(port.mac)
        if not dev:
            raise GuestError(f"{vm.name}: no interface with MAC {port.mac} (guest has {', '.join(by_mac) or 'none'})")
        vm.net_devs.append(dev)
        steps.append(["ip", "link", "set", dev, "mtu", str(port.mtu), "up"])
        steps.append(["ip", "addr", "add", str(port.address), "dev", dev])
    vm.run_all(*steps, timeout=15)
