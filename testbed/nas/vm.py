"""The VM NAS: boots the nas image with a data disk (a sparse file formatted on the host, no mounts)
mounted at /srv inside the guest, where protocol modules put their exports. Its servers are the
guest's: kernel ones (nfsd, LIO) and daemons run by its agent (vblade, nbd-server)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.errors import GuestError, TestbedError
from testbed.host import proc
from testbed.host.cleanup import Cleanup
from testbed.images.build import ensure
from testbed.images.cache import Image
from testbed.kernels import ref as kernel_ref
from testbed.nas.base import PROCS_HEADER, Backend, NasAgent, NasSetup, NasStatus, Say, Traits
from testbed.vm import guests, shell
from testbed.vm.agent import ExecResult, Job
from testbed.vm.argv import Disk
from testbed.vm.machine import VM

if TYPE_CHECKING:
    from testbed.config.scenario import Scenario

DATA_SERIAL = "tbnasdata"
# A guest's processes named $1: the header, then `pid state` (state from /proc/PID/stat) a line.
PROCS = (f'echo "{PROCS_HEADER} $1"; for p in $(pgrep -x "$1"); do '
         'echo "$p $(cut -d")" -f2 /proc/$p/stat | cut -d" " -f2)"; done; true')


def make_data_disk(path: Path, size_mb: int, undo: Cleanup) -> None:
    with open(path, "wb") as f:
        f.truncate(size_mb * 2**20)
    undo.push(f"NAS data disk {path}", os.unlink, path)
    proc.run(["mkfs.ext4", "-q", "-F", "-L", "tbnasdata", "-E", "lazy_itable_init=1,lazy_journal_init=1", str(path)])


class VmNas:
    """A NAS VM as the `Nas` face: commands go to its agent; a server is an agent job, seen by pgrep."""

    traits = Traits("vm", "NAS VM", own_kernel=True, detached_servers=True, shares_host_run=False)

    def __init__(self, vm: VM):
        self.vm = vm
        self.srv = "/srv"
        self.scratch: dict[str, Any] = {}
        self._servers: dict[str, tuple[Job, str]] = {}  # name -> (its agent job, its comm)

    @property
    def name(self) -> str:
        return self.vm.name

    @property
    def net_devs(self) -> list[str]:
        return self.vm.net_devs

    @property
    def agent(self) -> NasAgent:
        return self.vm.agent

    @property
    def qmp(self) -> NasStatus:
        return self.vm.qmp

    @property
    def boot(self) -> dict[str, Any]:
        return self.vm.boot

    def alive(self) -> bool:
        return self.vm.alive()

    def exec(self, argv: list[str], timeout: float = 60, check: bool = False) -> ExecResult:
        return self.vm.exec(argv, timeout, check)

    def sh(self, script: str, timeout: float = 60, check: bool = True, args: Sequence[str] = ()) -> ExecResult:
        return self.vm.sh(script, timeout, check, args)

    def run_all(self, *steps: shell.Step, timeout: float = 60, check: bool = True) -> ExecResult:
        return self.vm.run_all(*steps, timeout=timeout, check=check)

    def serve(self, name: str, argv: list[str], *, ready: Callable[[], bool] | None = None, timeout: float = 20,
              settle_s: float = 0.0, log: Path | None = None) -> None:
        if log is not None:
            raise TestbedError(f"{self.name}: a NAS VM's server writes no host file ({log})")
        lines: list[str] = []
        comm = Path(argv[0]).name[:15]
        job = self.vm.agent.start(argv, on_line=lines.append)  # for the case: it dies with the VM
        self._servers[name] = (job, comm)
        deadline = time.monotonic() + timeout
        while ready is not None and not ready():
            if job.done() or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        time.sleep(settle_s)
        if job.done() or not self.vm.exec(["pgrep", "-x", comm], 10).ok:
            raise GuestError(f"NAS: {' '.join(argv)} exited: {' | '.join(lines[-3:])}")

    def stop_server(self, name: str) -> str:
        job, comm = self._servers.pop(name, (None, name))
        self.vm.exec(["pkill", "-x", comm], 10)
        if job is not None:
            job.kill()
        return f"pkill -x {comm}"

    def signal_servers(self, sig: int) -> str:
        raise TestbedError(f"{self.name}: a NAS VM's servers are stopped with it (nas-outage freeze), not one by one")

    def processes_argv(self, comm: str) -> list[str]:
        return ["/bin/sh", "-c", PROCS, "sh", comm]

    def host_dir(self) -> Path | None:
        return None

    def host_path(self, path: str) -> Path:
        raise TestbedError(f"{self.name}: the host does not see a NAS VM's files ({path})")

    def machine(self) -> VM:
        return self.vm

    def on_undo(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        self.vm.cleanup.push(what, fn, *args)


class VmBackend(Backend):
    traits = VmNas.traits

    def __init__(self, sc: Scenario, tag: str):
        super().__init__(sc, tag)
        self._image: Image | None = None

    def image(self, say: Say) -> Image:
        if self._image is None:
            self._image = ensure("nas", kernel_ref.parse(self.sc.nas.kernel, self.sc.path, "nas.kernel"), say=say)
        return self._image

    def describe(self) -> str:
        return f"{self.sc.nas.mem_mb} MB, {self.sc.storage.protocol} export"

    def start(self, s: NasSetup) -> VmNas:
        sc = self.sc
        image = self.image(s.say)  # the runner asked for it with the kernels
        disk = s.rundir / "nas-data.img"
        make_data_disk(disk, sc.nas.data_disk_mb, s.undo)
        vm = guests.boot(role="nas", node=s.node, tag=self.tag, image=image, net=s.net, mem_mb=sc.nas.mem_mb,
                         vcpus=sc.nas.vcpus, accel=s.accel, rundir=s.rundir, logdir=s.logdir, undo=s.undo,
                         boot_s=sc.deadlines.boot_s, disks=(Disk(disk, serial=DATA_SERIAL),),
                         mode=sc.nas.boot, say=s.say)
        dev = vm.block_device(DATA_SERIAL)
        vm.run_all(["mkdir", "-p", "/srv"], ["mount", "-t", "ext4", dev, "/srv"], timeout=30)
        return VmNas(vm)
