"""What every storage protocol is: its declarations, the NAS and client steps, and defaults for
what most protocols do not need. The protocols themselves are testbed/storage/<name>.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from testbed.check.frames import FrameClass, ProtocolFrames
from testbed.host.cleanup import Cleanup
from testbed.errors import ConfigError, GuestError, TestbedError
from testbed.kernels.kconfig import Need
from testbed.nas import traits as backend_traits
from testbed.nas.base import PROCS_HEADER, Nas
from testbed.vm.agent import ExecResult
from testbed.vm.argv import Disk
from testbed.vm.machine import VM

if TYPE_CHECKING:  # type only: the scenario holds the protocols' specs, so importing it here would be a cycle
    from testbed.config.scenario import Scenario

MOUNT = "/mnt/nas"
WORKFILE = f"{MOUNT}/tb-work.dat"
# A service check is one short guest command: the guest kills it after this, and a monitor sampling
# at 1 Hz never waits longer than this for it.
SERVICE_TIMEOUT_S = 2.0


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


@dataclass(frozen=True)
class ServiceState:
    """Whether the NAS's storage service is up, as read back from the NAS itself.
    alive None: could not tell (the agent did not answer, the command did not run or timed out)."""

    alive: bool | None
    detail: str

    @property
    def flag(self) -> int | None:
        """1, 0 or None: the timeline's `nas_service`."""
        return None if self.alive is None else int(self.alive)


def parse_pgrep(text: str, comm: str) -> ServiceState:
    """`pgrep -x COMM`: one pid a line while the server runs, nothing once it is gone."""
    pids = [w for w in text.split() if w.isdigit()]
    if pids:
        return ServiceState(True, f"{comm} pid {','.join(pids)}")
    return ServiceState(False, f"no {comm} process")


SERVER_NAMES = {"kernel": "kernel nfsd", "ganesha": "nfs-ganesha", "lio": "LIO", "tgt": "tgt"}


def is_processes(text: str) -> bool:
    """Whether `text` is what a NAS's `processes_argv` printed."""
    return text.startswith(PROCS_HEADER + " ")


def parse_processes(text: str) -> ServiceState:
    """'procs COMM' then `pid state` lines (Nas.processes_argv) -> alive when one runs, not when all are
    stopped (SIGSTOP) or none is there."""
    comm = text.splitlines()[0].split(" ", 1)[1].strip() if is_processes(text) else "server"
    procs = [ln.split() for ln in text.splitlines() if len(ln.split()) == 2 and ln.split()[0].isdigit()]
    if not procs:
        return ServiceState(False, f"no {comm} process in the NAS")
    running = [p for p, state in procs if state not in ("T", "t")]
    if running:
        return ServiceState(True, f"{comm} pid {','.join(running)}")
    return ServiceState(False, f"{comm} pid {','.join(p for p, _ in procs)} stopped (SIGSTOP)")


class LinkProbe(Protocol):
    """A protocol's own NAS probe (testbed/monitor/probes.py samples it each second)."""

    column: str

    def query(self, timeout: float) -> float | None:
        """Round trip in ms, or None when no answer came in time; ProbeError when the probe itself broke."""

    def describe(self, timeout: float) -> str:
        """What the column measures, for the case's history."""

    def close(self) -> None: ...


class Storage:
    """A protocol: exports on the NAS, attaches on the client, then swaps on what it got (the anon
    workload) or holds a filesystem at MOUNT (the file workloads).

    Declarations: `name` (as in scenario files), `spec` (its options dataclass under
    `storage.<name>`, or None), `needs_nas`, `is_ip` (whether its traffic is IP: IPsec can cover it,
    a DHCP lease carries its address), `ports` (the NAS's service ports), `client_processes` and
    `nas_processes` (the processes its path depends on, as their names appear to the kernel).

    Whether the NAS serves is asked with one guest command, `service_argv`, whose output the pure
    function `parse_service` reads; `service_check` runs the pair (monitors may run the command
    without waiting for it: see testbed/monitor/probes.py)."""

    name: ClassVar[str]
    title: ClassVar[str]  # as people write it: NFS, iSCSI, AoE
    spec: ClassVar[type | None] = None
    needs_nas: ClassVar[bool] = True
    is_ip: ClassVar[bool] = True
    ports: ClassVar[tuple[int, ...]] = ()
    client_processes: ClassVar[tuple[str, ...]] = ()
    nas_processes: ClassVar[tuple[str, ...]] = ()
    # For the checker (testbed/check/frames.py): what a stalled task's waits on this storage go to, the
    # stack-frame classes of the protocol's kernel code, and the client daemons a case judged without a
    # `helpers` fact (an old folder) still names.
    # A NAS probe of its own where a TCP connect cannot say whether the server answers (a protocol that is no
    # IP): `link_probe` makes it for a case, and its round trips fill the timeline column it names.
    link_probe_column: ClassVar[str | None] = None
    # Host tools a NAS without a kernel of its own (nas.backend netns/docker) runs for it: (tool, Debian
    # package, needed for).
    host_tools: ClassVar[tuple[tuple[str, str, str], ...]] = ()
    storage_kind: ClassVar[str] = "block device"
    frame_classes: ClassVar[tuple[FrameClass, ...]] = ()
    stall_helpers: ClassVar[tuple[str, ...]] = ()

    def link_probe(self, netns: str, iface: str, nas_mac: str, sc: Scenario) -> LinkProbe | None:
        """The protocol's own NAS probe, sent from `iface` (the switch's bridge in namespace `netns`) to the
        NAS's `nas_mac`; None for a protocol a TCP connect probes. ProbeError when it cannot be made."""
        return None

    def service_ports(self, sc: Scenario) -> tuple[int, ...]:
        """The NAS's service ports in this case (the declared `ports`, unless an option moves them)."""
        return self.ports

    def variant(self, value: Callable[[str], Any]) -> str:
        """The case's storage as report pivots name it, from `value` (a scenario field's value by its path):
        the protocol, and what of its options makes a variant of it (NFS: the version)."""
        return self.name

    def read_state(self, dump: Any, sockets: list[dict[str, Any]]) -> dict[str, Any]:
        """The protocol's own kernel state in a memory dump (testbed/forensics: `dump` offers symbols,
        kernel and module struct layouts and reads), given the dump's TCP sockets; {} when it reads none."""
        return {}

    def for_checker(self) -> ProtocolFrames:
        return ProtocolFrames(self.name, self.storage_kind, self.frame_classes, self.stall_helpers)

    def validate(self, sc: Scenario, source: str) -> None:
        """Checks of the whole scenario that only this protocol knows (ConfigError naming the field)."""

    def warnings(self, sc: Scenario) -> tuple[str, ...]:
        """What to expect of a scenario that runs but is expected to fail (validation refuses only what
        cannot be set up): printed by `validate` and `run`, and recorded in the case's history."""
        return ()

    def client_kernel_needs(self, sc: Scenario) -> tuple[Need, ...]:
        """Kernel options the client needs for this protocol (testbed/kernels/kconfig.py checks them)."""
        return ()

    def nas_kernel_needs(self, sc: Scenario) -> tuple[Need, ...]:
        """Kernel options a NAS VM needs to serve this protocol."""
        return ()

    def backing_mb(self, sc: Scenario) -> int:
        """Size of what the NAS serves: the swap file, or room for the workload's file plus ext4."""
        if sc.workload.uses_swap:
            return sc.storage.swap_mb
        return sc.workload.total_mb(sc.client.mem_mb) * 5 // 4 + 64

    def check_backend(self, sc: Scenario, source: str) -> None:
        """ConfigError when the NAS backend cannot run this protocol's chosen server."""

    @staticmethod
    def default_server(sc: Scenario, kernel: str, userspace: str) -> str:
        """The server a NAS backend runs by default: the kernel one where it has a kernel of its own."""
        return kernel if backend_traits(sc.nas.backend).own_kernel else userspace

    @staticmethod
    def check_server(sc: Scenario, source: str, field: str, server: str, kernel: str, userspace: str) -> None:
        """A server (`field`'s value) must be the one its NAS backend runs: kernel servers live in the
        NAS VM's kernel, userspace ones on the host (where a kernel server would be the host's)."""
        backend = backend_traits(sc.nas.backend)
        want = kernel if backend.own_kernel else userspace
        if server != want:
            names = SERVER_NAMES
            why = (f"the NAS image has {names[kernel]}, not {names.get(server, server)}" if backend.own_kernel else
                   f"{names.get(server, server)} in a {backend.name} NAS would be the host's kernel's: use {want}")
            raise ConfigError(source, field, f"{server} cannot run on nas.backend {backend.name} ({why})")

    def client_disks(self, sc: Scenario, rundir: Path, undo: Cleanup) -> tuple[Disk, ...]:
        """Extra disks the client boots with (only local storage has any)."""
        return ()

    def export(self, nas: Nas, sc: Scenario, ends: Ends) -> dict[str, Any]:
        """Prepare the NAS side; returns facts for the history."""
        return {}

    def attach(self, client: VM, sc: Scenario, ends: Ends) -> dict[str, Any]:
        """Attach on the client, then swapon or mount; returns facts (options, /proc/swaps ...)."""
        raise NotImplementedError

    def counters(self, client: VM) -> dict[str, Any]:
        """The protocol's own error counters (retransmits, session errors), read from the client."""
        return {}

    def stop_service(self, nas: Nas, sc: Scenario, ends: Ends) -> str:
        """Stop serving (the NAS stays up); returns what was done."""
        raise TestbedError(f"{self.name} storage has no service to stop")

    def start_service(self, nas: Nas, sc: Scenario, ends: Ends) -> str:
        raise TestbedError(f"{self.name} storage has no service to start")

    def service_argv(self, nas: Nas, sc: Scenario, ends: Ends) -> list[str] | None:
        """The one NAS command (argv, or /bin/sh -c with a constant script) whose stdout says whether
        the service is up; None when the protocol has no service on a NAS."""
        return None

    def parse_service(self, text: str) -> ServiceState:
        """What `service_argv` printed -> ServiceState (a pure function of the text)."""
        raise NotImplementedError

    def service_result(self, res: ExecResult) -> ServiceState:
        """ServiceState from the finished command: a command that timed out or could not run tells nothing."""
        what = (res.argv[2] if res.argv[:2] == ["/bin/sh", "-c"] else " ".join(res.argv))[:100]
        if res.timed_out:
            return ServiceState(None, f"`{what}` timed out in the NAS")
        if res.status < 0 or res.status >= 126:  # killed by a signal, or sh could not run a tool
            return ServiceState(None, f"`{what}` could not run (status {res.status}): {res.stderr.strip()[:120]}")
        return self.parse_service(res.stdout)

    def service_check(self, nas: Nas, sc: Scenario, ends: Ends,
                      timeout: float = SERVICE_TIMEOUT_S) -> ServiceState | None:
        """Ask the NAS whether it serves; None when there is no service. Waits at most `timeout` (+0.5 s
        for the channel): nas.exec would wait 15 s more for a stuck agent."""
        argv = self.service_argv(nas, sc, ends)
        if argv is None:
            return None
        try:
            res = nas.agent.start(argv, timeout=timeout).wait(timeout + 0.5)
        except GuestError as e:
            return ServiceState(None, f"no answer from the NAS agent: {e}")
        return self.service_result(res)


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
