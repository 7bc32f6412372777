"""Scenario files: one case's client, NAS, storage, workload, deadlines and faults, as frozen dataclasses.

The shape only: each protocol's options and checks live in testbed/storage/<name>.py and each
fault kind's in testbed/faults/<kind>.py; this module asks them. Defaults keep the shipped
scenarios short; `--set` overrides (testbed/config/assign.py) edit the parsed YAML first.
"""

from __future__ import annotations

import math
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from testbed import faults
from testbed.config import mininet_topo
from testbed.config.assign import apply_assignments, fold_sysctls, parse_overrides
from testbed.config.strict import Parse, from_dict, load_yaml
from testbed.config.topology import Topology, load_topology, topology_path
from testbed.errors import ConfigError
from testbed.faults import FaultSpec
from testbed import nas as nas_backends
from testbed.kernels import ref as kernel_ref
from testbed.storage import StorageSpec
from testbed.workload import COMM_LEN, WORKLOADS, bad_placeholder, expected_victim

VERDICTS = ("recovered", "deadlocked", "livelocked", "stalled", "oom", "io-error", "corrupted", "unknown")
Verdict = Literal["recovered", "deadlocked", "livelocked", "stalled", "oom", "io-error", "corrupted", "unknown"]

# Below this the Debian kernel, which keeps ~50 MB for itself, cannot boot to our agent.
MIN_CLIENT_MB = 80


@dataclass(frozen=True)
class ClientSpec:
    mem_mb: int = 128  # the client VM's RAM (at least 80: the guest kernel keeps ~50 MB)
    vcpus: int = 1  # 1 to 8
    # default (the client recipe's pinned kernel), debian:<suite>, debian:<package>=<version> or path:<dir>
    # (testbed/kernels/ref.py); fetched and its config checked before any VM boots
    kernel: str = "default"
    sysctl: dict[str, str] = field(default_factory=dict)  # e.g. vm.min_free_kbytes: 8192, set before swapon
    boot: Literal["restore", "cold"] = "restore"  # from the ready snapshot (saved once per key), or a full boot

    def validate(self, source: str, path: str) -> None:
        for key, value in self.sysctl.items():
            if not re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)+", key) or not re.fullmatch(r"[0-9A-Za-z_ .-]+", value):
                raise ConfigError(source, f"{path}.sysctl.{key}", "must be a dotted sysctl name with a plain value")
        if self.mem_mb < MIN_CLIENT_MB:
            raise ConfigError(source, f"{path}.mem_mb", f"{self.mem_mb} MB is below {MIN_CLIENT_MB} MB, the least the guest kernel boots with")
        if not 1 <= self.vcpus <= 8:
            raise ConfigError(source, f"{path}.vcpus", "must be between 1 and 8")
        kernel_ref.parse(self.kernel, source, f"{path}.kernel", check_folder=False)


@dataclass(frozen=True)
class NasSpec:
    backend: Annotated[str, Parse(nas_backends.parse)] = field(default="vm", metadata={"doc": (
        "vm: kernel servers (nfsd, LIO, vblade) in a NAS VM; netns: userspace servers (nfs-ganesha, tgt, vblade) "
        "on the host in a namespace of the run; docker: the same servers in a Docker container of ours "
        "(testbed/nas/<backend>.py)")})
    mem_mb: int = 256  # the NAS VM's RAM (at least 160)
    vcpus: int = 1  # the NAS VM's vCPUs
    data_disk_mb: int = 2048  # the NAS's own data disk: exports, LUN files, AoE images
    boot: Literal["restore", "cold"] = "restore"  # as client.boot
    kernel: str = "default"  # as client.kernel, for the NAS VM

    def validate(self, source: str, path: str) -> None:
        kernel_ref.parse(self.kernel, source, f"{path}.kernel", check_folder=False)
        own_kernel = nas_backends.traits(self.backend).own_kernel
        if not own_kernel and self.kernel != "default":
            raise ConfigError(source, f"{path}.kernel", f"the {self.backend} NAS runs on the host's kernel (kernel applies to nas.backend vm)")
        if self.mem_mb < 160:
            raise ConfigError(source, f"{path}.mem_mb", "the NAS needs at least 160 MB")
        if self.data_disk_mb < 256:
            raise ConfigError(source, f"{path}.data_disk_mb", "must be at least 256 MB")
        if not own_kernel and self.boot != "restore":
            raise ConfigError(source, f"{path}.boot", f"the {self.backend} NAS has no VM to boot (boot applies to nas.backend vm)")


@dataclass(frozen=True)
class EvidenceSpec:
    # A memory dump of the client taken from the host (QMP dump-guest-memory, kdump-zlib) where failure
    # evidence is collected: at a stall, after the sysrq dump, and when the client stops answering. always:
    # also at the end of a workload that finished (to compare with). Kept in the cache, read with drgn into
    # the case's forensics.json.
    dump: Literal["on-failure", "always", "never"] = "on-failure"
    # a copy of each dump in the case folder (dumps/), beyond the cache's bound (`testbed run --keep-dumps`)
    keep_dumps: bool = False


@dataclass(frozen=True)
class WorkloadSpec:
    kind: Literal["anon", "mmap-shared", "write", "readers", "command"] = "anon"  # testbed/workload
    size_mb: int | None = None  # how much memory (or file) the workload uses, in MB; or:
    ratio_to_ram: float | None = None  # ... as a multiple of the client's RAM (default 1.5)
    passes: int = 2  # readers: the read loops after the one write
    verify: bool = True  # always true: every page read back is checked
    seed: int = 1  # the pattern's seed (tb-work)
    processes: int = 0  # readers: how many processes share the mappings (0: 8 per client vCPU)
    # command: what runs in the client ({mount}, {mem_mb}, {size_mb}, {vcpus} are filled in), in a cgroup
    # of its own; success is its exit status, then verify_argv's (a failed verification is `corrupted`)
    argv: tuple[str, ...] = ()
    verify_argv: tuple[str, ...] = ()  # command: run after it exits 0; non-zero is `corrupted`
    # command: what counts as progress: its user CPU time (cpu) and/or its output lines (output)
    progress: tuple[Literal["cpu", "output"], ...] = ("cpu",)
    # command: task names (or globs) the command loses to the OOM killer by design, such as stress-ng's
    # restarted --bigheap workers: reported, never an `oom` verdict
    expected_oom_victims: tuple[str, ...] = ()
    storage_use: Literal["swap", "filesystem"] | None = None  # command: swap on the storage, or a filesystem at {mount}

    def validate(self, source: str, path: str) -> None:
        if self.size_mb is not None and self.ratio_to_ram is not None:
            raise ConfigError(source, f"{path}.size_mb", "give size_mb or ratio_to_ram, not both")
        if self.ratio_to_ram is not None and not 0.1 <= self.ratio_to_ram <= 16:
            raise ConfigError(source, f"{path}.ratio_to_ram", "must be between 0.1 and 16")
        if self.passes < 1:
            raise ConfigError(source, f"{path}.passes", "must be at least 1")
        if not self.verify:
            raise ConfigError(source, f"{path}.verify", "must be true: an unverified workload cannot tell corruption from success")
        if self.kind != "readers" and self.processes:
            raise ConfigError(source, f"{path}.processes", "applies to kind readers")
        if not 0 <= self.processes <= 1024:
            raise ConfigError(source, f"{path}.processes", "must be between 0 (8 per vCPU) and 1024")
        if self.kind != "command":
            given = [n for n in ("argv", "verify_argv", "expected_oom_victims", "storage_use") if getattr(self, n)]
            if self.progress != ("cpu",):
                given.append("progress")
            if given:
                raise ConfigError(source, f"{path}.{given[0]}", f"applies to kind command, not {self.kind}")
            return
        if not self.argv:
            raise ConfigError(source, f"{path}.argv", "a command workload needs the command to run (a list)")
        if self.storage_use is None:
            raise ConfigError(source, f"{path}.storage_use", "say what the command uses the storage for: swap or filesystem")
        for name in ("argv", "verify_argv"):
            for i, arg in enumerate(getattr(self, name)):
                why = bad_placeholder(arg) if arg else "is empty"
                if why:
                    raise ConfigError(source, f"{path}.{name}[{i}]", why)
        if not self.progress or len(set(self.progress)) != len(self.progress):
            raise ConfigError(source, f"{path}.progress", "name cpu and/or output, each once")
        for i, name in enumerate(self.expected_oom_victims):
            if not re.fullmatch(r"[A-Za-z0-9_.:*?\[\]-][A-Za-z0-9_.:*?\[\] /-]{0,63}", name):
                raise ConfigError(source, f"{path}.expected_oom_victims[{i}]", "must be a task name or glob (up to 64 characters)")
            if expected_victim(posixpath.basename(self.argv[0])[:COMM_LEN], (name,)):
                raise ConfigError(source, f"{path}.expected_oom_victims[{i}]",
                                  f"{name!r} matches the command itself: losing it to the OOM killer is the `oom` verdict")

    @property
    def uses_swap(self) -> bool:
        """anon and readers push pages to swap; the file workloads write back to a filesystem on the
        storage; a command says which (storage_use)."""
        if self.kind == "command":
            return self.storage_use == "swap"
        return self.kind in ("anon", "readers")

    def readers(self, vcpus: int) -> int:
        """How many processes the readers workload runs."""
        return self.processes or 8 * vcpus

    def total_mb(self, client_mem_mb: int) -> int:
        if self.size_mb is not None:
            return self.size_mb
        return math.ceil((self.ratio_to_ram if self.ratio_to_ram is not None else 1.5) * client_mem_mb)


@dataclass(frozen=True)
class Deadlines:
    progress_s: float = 60  # no workload progress for this long: collect evidence and judge
    recover_s: float = 120  # after a fault heals, progress must resume within this
    total_s: float = 900  # the whole pressure phase
    boot_s: float = 120  # a VM must report ready within this

    def validate(self, source: str, path: str) -> None:
        for name in ("progress_s", "recover_s", "total_s", "boot_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(source, f"{path}.{name}", "must be positive")


@dataclass(frozen=True)
class Scenario:
    name: str  # the case's name (its folder under the run)
    topology: str = "client-switch-nas"  # a name in topologies/, a YAML path, or FILE.py:TopoClass (Mininet)
    topology_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of a Mininet Topo class
    description: str = ""  # one line for reports
    client: ClientSpec = field(default_factory=ClientSpec)
    nas: NasSpec = field(default_factory=NasSpec)
    storage: StorageSpec = field(default_factory=StorageSpec)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    deadlines: Deadlines = field(default_factory=Deadlines)
    evidence: EvidenceSpec = field(default_factory=EvidenceSpec)
    faults: tuple[Annotated[FaultSpec, Parse(faults.parse_spec)], ...] = ()  # the kind picks the spec
    expect: Verdict | None = None  # a control's verdict (default: recovered); a miss fails the night
    repeat: int = 1  # runs of this scenario per `testbed run` (--repeat overrides)
    path: str = ""

    def backing_mb(self) -> int:
        """Size of what the NAS serves (the protocol decides: the swap file, a LUN, room for a file)."""
        return self.storage.role.backing_mb(self)

    def warnings(self) -> tuple[str, ...]:
        """What to expect of a scenario that runs but is expected to fail (its roles say)."""
        return self.storage.role.warnings(self)

    def path_processes(self) -> tuple[str, ...]:
        """The client processes the workload and its storage path depend on (OOM victims that break
        the path), as each role declares them."""
        declared = (*WORKLOADS[self.workload.kind].path_processes(self.workload), *self.storage.role.client_processes,
                    *(p for f in self.faults for p in f.path_processes()))
        return tuple(dict.fromkeys(declared))

    def validate(self, source: str, path: str) -> None:
        st, wl = self.storage, self.workload
        if self.repeat < 1:
            raise ConfigError(source, "repeat", "must be at least 1")
        size = wl.total_mb(self.client.mem_mb)
        size_field = "workload.size_mb" if wl.size_mb else "workload.ratio_to_ram"
        st.role.validate(self, source)
        if st.role.needs_nas and self.backing_mb() > self.nas.data_disk_mb - 128:
            raise ConfigError(
                source, "storage.swap_mb" if wl.uses_swap else size_field,
                f"{self.backing_mb()} MB does not fit the NAS export ({self.nas.data_disk_mb} MB data disk, "
                "128 MB kept for the filesystem): raise nas.data_disk_mb",
            )
        sized = wl.kind != "command" or wl.size_mb is not None or wl.ratio_to_ram is not None
        if wl.uses_swap and sized and size > self.client.mem_mb + st.swap_mb - 16:
            raise ConfigError(
                source, size_field,
                f"the workload ({size} MB) cannot fit in RAM ({self.client.mem_mb} MB) plus swap ({st.swap_mb} MB): raise storage.swap_mb",
            )
        st.role.check_backend(self, source)
        for i, f in enumerate(self.faults):
            f.check_storage(st.role, source, f"faults[{i}]")
            if st.role.needs_nas:
                f.check_nas_backend(nas_backends.traits(self.nas.backend), source, f"faults[{i}]")


@dataclass(frozen=True)
class LoadedScenario:
    scenario: Scenario
    topology: Topology
    raw: dict[str, Any]  # after overrides: what `scenario.yaml` in the case folder records


def build_scenario(data: dict[str, Any], path: Path, source: str, assignments: dict[str, Any] | None = None) -> LoadedScenario:
    """Scenario data + assignments -> checked scenario and topology. Keys under `topology.` edit the
    topology the scenario names (e.g. `topology.links.*.mtu`); the file itself is never changed."""
    assignments = assignments or {}
    scen_set = {k: v for k, v in assignments.items() if not k.startswith("topology.")}
    topo_set = {k[len("topology."):]: v for k, v in assignments.items() if k.startswith("topology.")}
    data = apply_assignments(data, fold_sysctls(data, scen_set, source), source)
    data.pop("path", None)
    scenario = from_dict(Scenario, {**data, "path": str(path)}, source)
    if mininet_topo.is_mininet_ref(scenario.topology):
        if topo_set:
            raise ConfigError(source, f"topology.{next(iter(topo_set))}", "edits a YAML topology: a Mininet Topo takes topology_args")
        topology = mininet_topo.load(scenario.topology, scenario.topology_args, path.parent, source)
    else:
        if scenario.topology_args:
            raise ConfigError(source, "topology_args", "only a Mininet Topo (topology: FILE.py:Class) takes arguments")
        tpath = topology_path(scenario.topology, path.parent)
        if not tpath.exists():
            raise ConfigError(source, "topology", f"no topology {scenario.topology!r} (looked for {tpath})")
        topology = load_topology(tpath, topo_set, source)
    check_conditions(topology, source)
    for i, f in enumerate(scenario.faults):
        f.check_topology(topology.name, list(topology.nodes), source, f"faults[{i}]")
    return LoadedScenario(scenario, topology, data)


def check_conditions(topo: Topology, source: str) -> None:
    """Link conditions this host cannot make are refused before anything runs."""
    from testbed.net.caps import netem_available  # host facts: only asked when a link wants netem

    for kind, items in (("links", topo.links), ("trunks", topo.trunks)):
        for i, c in enumerate(items):
            if c.needs_netem and not netem_available():
                what = "delay_ms" if c.delay_ms else "loss_pct"
                raise ConfigError(source, f"topology {topo.name} {kind}[{i}].{what}",
                                  "needs netem, which this host's kernel lacks (no sch_netem): drop the delay/loss "
                                  "or run on a host with netem")


def load_scenario(path: Path, overrides: list[str] | None = None) -> LoadedScenario:
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(str(path), "(top)", "a scenario must be a mapping")
    source = str(path) + (f" (with --set {', '.join(overrides)})" if overrides else "")
    return build_scenario(data, path, source, parse_overrides(overrides or [], source))
