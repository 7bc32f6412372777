"""What a NAS is to everyone else, whichever backend runs it.

`Nas` is the face protocols (testbed/storage), probes (testbed/monitor) and faults see: run a command
in it, serve a daemon for the case, list a server's processes, where its exports live. `Backend` is how
a case makes one (testbed/nas/vm.py, host.py, container.py): its `Traits`, which scenario checks read
before anything runs, then the steps the runner calls in order. Nothing outside testbed/nas/ asks which
backend a NAS is: it asks the traits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from testbed.host.cleanup import Cleanup
from testbed.vm import shell
from testbed.vm.agent import ExecResult

if TYPE_CHECKING:  # types only: the scenario and the VM modules import far more than a NAS's face needs
    from testbed.config.scenario import Scenario
    from testbed.images.cache import Image
    from testbed.net.build import BuiltNet
    from testbed.vm.machine import VM

Say = Callable[[str], None]
# The first line of `Nas.processes_argv`'s output; then one `pid state` line per process (state: the
# letter of /proc/PID/stat, T while stopped).
PROCS_HEADER = "procs"


@dataclass(frozen=True)
class Traits:
    """What a backend is, for checks made before anything runs (scenario validation, kernel preflight)."""

    name: str  # nas.backend's value
    where: str  # where its servers run, as facts say it: "NAS VM", "host, in the NAS namespace", "container"
    # A kernel of its own (a VM booted from the nas image): kernel servers (nfsd, LIO), QMP freeze, xfrm,
    # its own netem; without one, servers are userspace ones on the host's kernel.
    own_kernel: bool
    # Servers may fork and detach (the VM's init reaps them); a backend that supervises each server as a
    # foreground process group cannot run one that forks per connection (nbd-server).
    detached_servers: bool
    # Its /run is the host's: a server with a fixed path there (rpcbind's socket) needs a private mount.
    shares_host_run: bool


class NasJob(Protocol):
    """A command started in the NAS (an agent job, or a process on the host): ended with it."""

    def done(self) -> bool: ...

    def kill(self, sig: int = 9) -> None: ...

    def wait(self, timeout: float | None = None) -> ExecResult: ...


class NasAgent(Protocol):
    def start(self, argv: list[str], *, timeout: float = 0, on_line: Callable[[str], None] | None = None) -> NasJob: ...

    def ping(self, timeout: float = 5) -> float | None:
        """Seconds to an answer; None when the NAS does not answer (a guest that is stuck, servers stopped)."""


class NasStatus(Protocol):
    def status(self) -> str:
        """running, paused or dead (a VM's QMP status, or what stands for it)."""


class Nas(Protocol):
    """A running NAS, as protocols, probes and faults use it."""

    @property
    def traits(self) -> Traits: ...

    @property
    def name(self) -> str: ...

    @property
    def srv(self) -> str:
        """Where exports live, as the NAS's commands see the path."""

    @property
    def net_devs(self) -> list[str]:
        """Its interfaces on the storage network, as its commands name them."""

    @property
    def agent(self) -> NasAgent: ...

    @property
    def qmp(self) -> NasStatus: ...

    @property
    def boot(self) -> dict[str, Any]:
        """How it came up (a VM: restored or cold, and why), for the case's facts."""

    @property
    def scratch(self) -> dict[str, Any]:
        """What a protocol keeps for the case's life on this NAS (tgt's control port across a restart)."""

    def alive(self) -> bool: ...

    def exec(self, argv: list[str], timeout: float = 60, check: bool = False) -> ExecResult: ...

    def sh(self, script: str, timeout: float = 60, check: bool = True, args: Sequence[str] = ()) -> ExecResult: ...

    def run_all(self, *steps: shell.Step, timeout: float = 60, check: bool = True) -> ExecResult: ...

    def serve(self, name: str, argv: list[str], *, ready: Callable[[], bool] | None = None, timeout: float = 20,
              settle_s: float = 0.0, log: Path | None = None) -> None:
        """Run a server in the foreground for the case (ended with the NAS, or by `stop_server`): wait until
        `ready()` (None: at once), then `settle_s` more; GuestError with its last output when it exits
        before. `log`: a host file it writes to (a NAS with host files only; default its own)."""

    def stop_server(self, name: str) -> str:
        """End a server `serve` started (SIGTERM, then SIGKILL); what was done."""

    def signal_servers(self, sig: int) -> str:
        """Send `sig` to every server's process group (SIGSTOP/SIGCONT: a service freeze); what was done.
        TestbedError for servers that live in a kernel (the scenario check refuses it first)."""

    def processes_argv(self, comm: str) -> list[str]:
        """One command whose output lists the NAS's processes named `comm`: PROCS_HEADER and the name,
        then `pid state` a line (testbed/storage/base.py parse_processes reads it)."""

    def host_dir(self) -> Path | None:
        """A folder of the host's that the NAS's commands see at the same path (configs, logs, pid files
        of userspace servers); None for a VM."""

    def host_path(self, path: str) -> Path:
        """A path of the NAS's as the host reaches it (a container's through its root)."""

    def machine(self) -> VM | None:
        """The VM, for what only a guest has (QMP stop, its console, its own kernel); None without one."""

    def on_undo(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        """Undo `fn(*args)` when the NAS goes (before it goes)."""


@dataclass
class NasSetup:
    """What a backend's `start` gets from the runner, once the network is there."""

    net: BuiltNet
    node: str  # the topology node the NAS is
    accel: str
    rundir: Path
    logdir: Path  # the case folder (console logs)
    undo: Cleanup
    say: Say


class Backend(ABC):
    """One NAS backend, made per case. The runner calls, in order: `image` (with the kernels), `netns`
    and `before_network` (with the network), `start` (the NAS), `describe` (the phase line)."""

    traits: ClassVar[Traits]

    def __init__(self, sc: Scenario, tag: str):
        self.sc, self.tag = sc, tag

    def image(self, say: Say) -> Image | None:
        """The NAS image this backend boots (built or found in the cache); None for none."""
        return None

    def netns(self) -> str | None:
        """The namespace the network builder puts the NAS's veth end in; None: a VM, joined by its tap."""
        return None

    def before_network(self, undo: Cleanup, say: Say) -> None:
        """What must exist before the network is built (a container whose namespace the veth goes in)."""

    @abstractmethod
    def describe(self) -> str:
        """The NAS phase's line: what is started, and where."""

    @abstractmethod
    def start(self, s: NasSetup) -> Nas:
        """The running NAS, every resource registered on `s.undo` where it is made."""
