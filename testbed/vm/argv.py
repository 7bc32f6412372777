"""The QEMU command line as a list, built by small functions, one per concern.

`-name` comes first so `ps` shows which run a QEMU belongs to; `testbed clean` finds ours by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from testbed.vm.caps import QEMU, QemuCaps

AGENT_PORT = "tb.agent"
ROOT_SERIAL = "tbroot"


@dataclass(frozen=True)
class Nic:
    tap: str  # host-side tap name, created by net/ inside the run's namespace
    mac: str
    mtu: int = 1500


@dataclass(frozen=True)
class Disk:
    path: Path
    snapshot: bool = False  # copy-on-write: writes go to a temporary overlay, the file never changes
    serial: str = ""


@dataclass(frozen=True)
class VMSpec:
    name: str  # tb<run>-<role>: the tag
    kernel: Path
    initrd: Path
    root: Path
    rundir: Path  # sockets and logs of this VM
    mem_mb: int = 128
    vcpus: int = 1
    accel: str = "tcg"
    netns: str = ""  # run QEMU inside this namespace so its taps are there, never in the host's
    nics: tuple[Nic, ...] = ()
    disks: tuple[Disk, ...] = ()
    cmdline: tuple[str, ...] = ()
    console_log: Path | None = None
    qemu_log: Path | None = None
    extra: tuple[str, ...] = field(default=())
    hostname: str = ""  # the guest's hostname at boot; the VM's name when empty
    root_format: str = "raw"  # "qcow2" for an overlay of a ready snapshot's disk
    root_snapshot: bool = True  # writes to a temporary overlay (a cold boot); False for our own qcow2 overlays
    incoming: str = ""  # a migration source to restore from (QEMU -incoming), e.g. "exec:zstd -dc FILE"

    @property
    def qmp_socket(self) -> Path:
        return self.rundir / f"{self.name}.qmp"

    @property
    def agent_socket(self) -> Path:
        return self.rundir / f"{self.name}.agent"

    @property
    def console(self) -> Path:
        return self.console_log or self.rundir / f"console-{self.name}.log"


def machine_args(spec: VMSpec) -> list[str]:
    cpu = ["-cpu", "host"] if spec.accel == "kvm" else ["-cpu", "max"]
    return [
        "-machine", "pc",
        "-accel", spec.accel,
        *cpu,
        "-m", str(spec.mem_mb),
        "-smp", str(spec.vcpus),
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-no-reboot",  # a guest panic (panic=-1) or poweroff ends QEMU instead of rebooting
        # The guest's VMCOREINFO (release, KASLR offset, kallsyms) reaches QEMU's memory dumps through
        # this device once the guest's qemu_fw_cfg module is loaded (tb-init): testbed/vm/dump.py.
        "-device", "vmcoreinfo",
        # pvpanic: a guest whose pvpanic-mmio driver is loaded (tb-init) tells QEMU it panicked; the runner
        # sets `set-action panic=pause` for the workload (testbed/engine/runner.py), so a panicked client
        # stays in memory to be dumped; at boot QEMU's default stands (the guest reboots, -no-reboot exits).
        "-device", "pvpanic",
    ]


def kernel_args(spec: VMSpec) -> list[str]:
    cmdline = [
        "console=ttyS0",
        "quiet",
        "panic=-1",
        "sysrq_always_enabled",
        "hung_task_timeout_secs=30",
        f"tb.hostname={spec.hostname or spec.name}",
        *spec.cmdline,
    ]
    return ["-kernel", str(spec.kernel), "-initrd", str(spec.initrd), "-append", " ".join(cmdline)]


def disk_args(spec: VMSpec) -> list[str]:
    # The initramfs finds the root disk by its serial, whatever the PCI order.
    snap = ",snapshot=on" if spec.root_snapshot else ""
    out = [
        "-drive", f"file={spec.root},format={spec.root_format},if=none,id=root{snap},cache=unsafe",
        "-device", f"virtio-blk-pci,drive=root,serial={ROOT_SERIAL}",
    ]
    for i, d in enumerate(spec.disks):
        opts = f"file={d.path},format=raw,if=none,id=disk{i},cache=none,aio=threads"
        if d.snapshot:
            opts += ",snapshot=on"
        out += ["-drive", opts, "-device", f"virtio-blk-pci,drive=disk{i}" + (f",serial={d.serial}" if d.serial else "")]
    return out


def net_args(spec: VMSpec) -> list[str]:
    out = []
    for i, nic in enumerate(spec.nics):
        out += [
            "-netdev", f"tap,id=net{i},ifname={nic.tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=net{i},mac={nic.mac},host_mtu={nic.mtu}",
        ]
    return out


def rng_args(spec: VMSpec) -> list[str]:
    # A VM generation ID, new at every QEMU start: a guest restored from a snapshot reseeds its CRNG
    # (it would otherwise repeat the saved one's TCP sequence numbers, ports and XIDs in every case).
    return ["-device", "vmgenid,guid=auto"]


def serial_args(spec: VMSpec) -> list[str]:
    return ["-serial", f"file:{spec.console}"]


def qmp_args(spec: VMSpec) -> list[str]:
    return ["-qmp", f"unix:{spec.qmp_socket},server=on,wait=off"]


def agent_args(spec: VMSpec) -> list[str]:
    return [
        "-chardev", f"socket,id=agent,path={spec.agent_socket},server=on,wait=off",
        "-device", "virtio-serial-pci,id=vser0",
        "-device", f"virtserialport,bus=vser0.0,chardev=agent,name={AGENT_PORT}",
    ]


def incoming_args(spec: VMSpec) -> list[str]:
    return ["-incoming", spec.incoming] if spec.incoming else []


def build(spec: VMSpec, caps: QemuCaps | None = None) -> list[str]:
    """The full argv; checked against `caps` (the host QEMU's help output) when given."""
    argv = [QEMU, "-name", f"{spec.name},process={spec.name}"]
    argv += machine_args(spec) + kernel_args(spec) + disk_args(spec) + net_args(spec) + rng_args(spec)
    argv += serial_args(spec) + qmp_args(spec) + agent_args(spec) + incoming_args(spec) + list(spec.extra)
    if caps:
        for a in argv:
            if a.startswith("-") and not a.startswith("--"):
                caps.require_option(a)
        for i, a in enumerate(argv[:-1]):
            if a == "-device":
                caps.require_device(argv[i + 1].split(",")[0])
    if spec.netns:
        argv = ["ip", "netns", "exec", spec.netns, *argv]
    return argv
