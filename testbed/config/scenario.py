"""Scenario files: one case's client, NAS, storage, workload, deadlines and faults, as frozen dataclasses.

Defaults keep the shipped scenarios short. `--set a.b=value` overrides edit the parsed YAML before
the strict conversion, so an override is checked exactly like the file.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from testbed.config.strict import from_dict, load_yaml
from testbed.config.topology import Topology, load_topology, topology_path
from testbed.errors import ConfigError

VERDICTS = ("recovered", "deadlocked", "livelocked", "stalled", "oom", "io-error", "corrupted", "unknown")
Verdict = Literal["recovered", "deadlocked", "livelocked", "stalled", "oom", "io-error", "corrupted", "unknown"]

# Below this the Debian kernel, which keeps ~50 MB for itself, cannot boot to our agent.
MIN_CLIENT_MB = 80


@dataclass(frozen=True)
class ClientSpec:
    mem_mb: int = 128
    vcpus: int = 1
    kernel: str = "default"  # the client recipe's pinned kernel; other kernels are a later matrix axis
    sysctl: dict[str, str] = field(default_factory=dict)  # e.g. vm.min_free_kbytes: 8192, set before swapon

    def validate(self, source: str, path: str) -> None:
        for key, value in self.sysctl.items():
            if not re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)+", key) or not re.fullmatch(r"[0-9A-Za-z_ .-]+", value):
                raise ConfigError(source, f"{path}.sysctl.{key}", "must be a dotted sysctl name with a plain value")
        if self.mem_mb < MIN_CLIENT_MB:
            raise ConfigError(source, f"{path}.mem_mb", f"{self.mem_mb} MB is below {MIN_CLIENT_MB} MB, the least the guest kernel boots with")
        if not 1 <= self.vcpus <= 8:
            raise ConfigError(source, f"{path}.vcpus", "must be between 1 and 8")
        if self.kernel != "default":
            raise ConfigError(source, f"{path}.kernel", "only 'default' (the client recipe's pinned kernel) is supported yet")


@dataclass(frozen=True)
class NasSpec:
    backend: Literal["vm"] = "vm"
    mem_mb: int = 256
    vcpus: int = 1
    data_disk_mb: int = 2048  # the NAS's own data disk: exports, LUN files, AoE images

    def validate(self, source: str, path: str) -> None:
        if self.mem_mb < 160:
            raise ConfigError(source, f"{path}.mem_mb", "the NAS needs at least 160 MB")
        if self.data_disk_mb < 256:
            raise ConfigError(source, f"{path}.data_disk_mb", "must be at least 256 MB")


@dataclass(frozen=True)
class NfsSpec:
    version: Literal["3", "4.0", "4.1", "4.2"] = "3"
    transport: Literal["tcp", "udp"] = "tcp"
    rsize: int | None = None
    wsize: int | None = None
    timeo: int = 100  # tenths of a second before an RPC retransmission
    hard: bool = True

    def validate(self, source: str, path: str) -> None:
        if self.transport == "udp":
            raise ConfigError(source, f"{path}.transport", "udp: unsupported by this guest kernel (Debian 6.1 builds NFS without UDP transport); use tcp")
        for name in ("rsize", "wsize"):
            v = getattr(self, name)
            if v is not None and not (1024 <= v <= 1048576 and v & (v - 1) == 0):
                raise ConfigError(source, f"{path}.{name}", "must be a power of two between 1024 and 1048576")


# iscsid locks ~10 MB of memory: below this the client OOM-kills it before swap exists.
MIN_ISCSI_CLIENT_MB = 128


@dataclass(frozen=True)
class IscsiSpec:
    lun_mb: int | None = None  # default: swap_mb for swap, the workload's file plus room for ext4
    max_recv_data_segment_length: int = 262144
    replacement_timeout: int = 120  # node.session.timeo.replacement_timeout, seconds

    def validate(self, source: str, path: str) -> None:
        if not 512 <= self.max_recv_data_segment_length <= 16777215:
            raise ConfigError(source, f"{path}.max_recv_data_segment_length", "must be between 512 and 16777215")
        if self.replacement_timeout < 0:
            raise ConfigError(source, f"{path}.replacement_timeout", "must be >= 0")


@dataclass(frozen=True)
class AoeSpec:
    shelf: int = 0
    slot: int = 1

    def validate(self, source: str, path: str) -> None:
        # 0xffff and 0xff are AoE's broadcast addresses: a target there clashes with every query.
        if not 0 <= self.shelf <= 65534:
            raise ConfigError(source, f"{path}.shelf", f"{self.shelf} clashes: shelves are 0..65534 (65535 is broadcast)")
        if not 0 <= self.slot <= 254:
            raise ConfigError(source, f"{path}.slot", f"{self.slot} clashes: slots are 0..254 (255 is broadcast)")


@dataclass(frozen=True)
class StorageSpec:
    protocol: Literal["nfs", "iscsi", "aoe", "local"] = "nfs"
    swap_mb: int = 256
    nfs: NfsSpec = field(default_factory=NfsSpec)
    iscsi: IscsiSpec = field(default_factory=IscsiSpec)
    aoe: AoeSpec = field(default_factory=AoeSpec)

    def validate(self, source: str, path: str) -> None:
        if self.swap_mb < 16:
            raise ConfigError(source, f"{path}.swap_mb", "must be at least 16 MB")


@dataclass(frozen=True)
class WorkloadSpec:
    kind: Literal["anon", "mmap-shared", "write"] = "anon"
    size_mb: int | None = None
    ratio_to_ram: float | None = None
    passes: int = 2
    verify: bool = True
    seed: int = 1

    def validate(self, source: str, path: str) -> None:
        if self.size_mb is not None and self.ratio_to_ram is not None:
            raise ConfigError(source, f"{path}.size_mb", "give size_mb or ratio_to_ram, not both")
        if self.ratio_to_ram is not None and not 0.1 <= self.ratio_to_ram <= 16:
            raise ConfigError(source, f"{path}.ratio_to_ram", "must be between 0.1 and 16")
        if self.passes < 1:
            raise ConfigError(source, f"{path}.passes", "must be at least 1")
        if not self.verify:
            raise ConfigError(source, f"{path}.verify", "must be true: an unverified workload cannot tell corruption from success")

    @property
    def uses_swap(self) -> bool:
        """anon pushes pages to swap; the file workloads write back to a filesystem on the storage."""
        return self.kind == "anon"

    def total_mb(self, client_mem_mb: int) -> int:
        if self.size_mb is not None:
            return self.size_mb
        return math.ceil((self.ratio_to_ram if self.ratio_to_ram is not None else 1.5) * client_mem_mb)


@dataclass(frozen=True)
class Deadlines:
    progress_s: float = 60  # no workload progress for this long: collect evidence and judge
    recover_s: float = 120  # after a fault heals, progress must resume within this
    total_s: float = 900  # the whole pressure phase
    boot_s: float = 120

    def validate(self, source: str, path: str) -> None:
        for name in ("progress_s", "recover_s", "total_s", "boot_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(source, f"{path}.{name}", "must be positive")


class FaultSpec:
    """Base of the fault kinds: scheduled at `at_s` after the pressure phase starts, healed after
    `duration_s` (never, when omitted). Picked by `kind`; each kind's module is in testbed/faults/."""

    kind: str
    at_s: float
    duration_s: float | None

    KINDS: dict[str, type] = {}

    @classmethod
    def from_tagged(cls, value: Any, source: str, path: str) -> FaultSpec:
        if not isinstance(value, dict):
            raise ConfigError(source, path, "a fault must be a mapping with a kind")
        kind = value.get("kind")
        if kind not in cls.KINDS:
            raise ConfigError(source, f"{path}.kind", f"must be one of {', '.join(cls.KINDS)}, not {kind!r}")
        return from_dict(cls.KINDS[kind], value, source, path)

    def check_times(self, source: str, path: str) -> None:
        if self.at_s < 0:
            raise ConfigError(source, f"{path}.at_s", "must be >= 0")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError(source, f"{path}.duration_s", "must be positive (omit it for a fault that never heals)")


def fault_kind(name: str):  # type: ignore[no-untyped-def]
    def register(cls):  # type: ignore[no-untyped-def]
        FaultSpec.KINDS[name] = cls
        return cls

    return register


@fault_kind("nas-outage")
@dataclass(frozen=True)
class NasOutageSpec(FaultSpec):
    kind: Literal["nas-outage"]
    at_s: float
    duration_s: float | None = None
    mode: Literal["freeze", "restart-service"] = "freeze"

    def validate(self, source: str, path: str) -> None:
        self.check_times(source, path)


@fault_kind("link")
@dataclass(frozen=True)
class LinkSpec(FaultSpec):
    kind: Literal["link"]
    at_s: float
    duration_s: float | None = None
    mode: Literal["cut", "loss", "delay"] = "cut"
    node: str = "client"  # whose link
    loss_pct: float = 5.0
    delay_ms: float = 50.0
    jitter_ms: float = 0.0

    def validate(self, source: str, path: str) -> None:
        self.check_times(source, path)
        if not 0 < self.loss_pct <= 100:
            raise ConfigError(source, f"{path}.loss_pct", "must be in (0, 100]")
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ConfigError(source, f"{path}.delay_ms", "delay and jitter must be >= 0")


@fault_kind("competing-traffic")
@dataclass(frozen=True)
class CompetingTrafficSpec(FaultSpec):
    kind: Literal["competing-traffic"]
    at_s: float
    duration_s: float | None = 30
    mode: Literal["tcp", "udp", "udp-flood"] = "udp"
    rate_mbit: float = 200.0
    parallel: int = 2
    port_open: bool = False  # udp-flood: to a port something listens on (queues fill) or a closed one

    def validate(self, source: str, path: str) -> None:
        self.check_times(source, path)
        if self.duration_s is None:
            raise ConfigError(source, f"{path}.duration_s", "competing traffic needs a duration")
        if not 0 < self.rate_mbit <= 10000 or not 1 <= self.parallel <= 16:
            raise ConfigError(source, f"{path}.rate_mbit", "rate_mbit in (0, 10000], parallel in 1..16")


@fault_kind("fragmentation")
@dataclass(frozen=True)
class FragmentationSpec(FaultSpec):
    kind: Literal["fragmentation"]
    at_s: float
    duration_s: float | None = 30
    mode: Literal["mtu-change", "flood"] = "flood"
    mtu: int = 1000  # mtu-change: the client's link MTU during the fault
    rate_pps: int = 2000  # flood: incomplete fragment trains per second

    def validate(self, source: str, path: str) -> None:
        self.check_times(source, path)
        if not 576 <= self.mtu <= 9000:
            raise ConfigError(source, f"{path}.mtu", "must be between 576 and 9000")
        if not 1 <= self.rate_pps <= 100000:
            raise ConfigError(source, f"{path}.rate_pps", "must be between 1 and 100000")


@fault_kind("multiplexed")
@dataclass(frozen=True)
class MultiplexedSpec(FaultSpec):
    kind: Literal["multiplexed"]
    at_s: float
    duration_s: float | None = None
    size_mb: int = 64  # a file copied on the same NFS mount while the client swaps

    def validate(self, source: str, path: str) -> None:
        self.check_times(source, path)


@fault_kind("ipsec")
@dataclass(frozen=True)
class IpsecSpec(FaultSpec):
    kind: Literal["ipsec"]
    at_s: float = 0
    duration_s: float | None = None
    mode: Literal["static", "ikev2"] = "static"
    rekey_s: float | None = 20  # replace the SAs (new SPIs and keys) this often
    trap: bool = False  # ikev2: policies before the first exchange (no clear packet; traffic waits for IKE)
    establish: Literal["at-inject", "before-pressure"] = "at-inject"  # ikev2: when the first exchange happens

    def validate(self, source: str, path: str) -> None:
        self.check_times(source, path)
        if self.trap and self.mode != "ikev2":
            raise ConfigError(source, f"{path}.trap", "only for mode ikev2 (static keys install their policies at once)")
        if self.establish != "at-inject" and self.mode != "ikev2":
            raise ConfigError(source, f"{path}.establish", "only for mode ikev2")
        if self.establish == "before-pressure" and self.at_s != 0:
            raise ConfigError(source, f"{path}.at_s", "must be 0 with establish: before-pressure (the tunnel is up from the start)")
        least = 10 if self.mode == "ikev2" else 2  # an IKE exchange in a starved TCG guest takes seconds
        if self.rekey_s is not None and self.rekey_s < least:
            raise ConfigError(source, f"{path}.rekey_s", f"must be at least {least} s for mode {self.mode}")


DNSMASQ_MIN_LEASE_S = 120


@fault_kind("dhcp")
@dataclass(frozen=True)
class DhcpSpec(FaultSpec):
    """The client's storage address from dnsmasq on the switch with a short lease. renew: forced
    renewals every `renew_s` inside the window (udhcpc also renews at lease/2); server-stop: the
    server is stopped at at_s (and started at the heal) so the lease expires."""

    kind: Literal["dhcp"]
    at_s: float = 0
    duration_s: float | None = None
    mode: Literal["renew", "server-stop"] = "renew"
    lease_s: int = DNSMASQ_MIN_LEASE_S
    renew_s: float | None = None  # mode renew: 10 when omitted

    def validate(self, source: str, path: str) -> None:
        self.check_times(source, path)
        if self.lease_s < DNSMASQ_MIN_LEASE_S:
            raise ConfigError(source, f"{path}.lease_s", f"dnsmasq grants no lease shorter than {DNSMASQ_MIN_LEASE_S} s; "
                              "use renew_s for renewals more often than lease_s / 2")
        if self.mode == "server-stop" and self.renew_s is not None:
            raise ConfigError(source, f"{path}.renew_s", "only for mode renew (server-stop leaves udhcpc's own renewals)")
        if self.renew_s is not None and self.renew_s < 2:
            raise ConfigError(source, f"{path}.renew_s", "must be at least 2 s")

    @property
    def renew_every_s(self) -> float:
        return self.renew_s if self.renew_s is not None else 10.0


@dataclass(frozen=True)
class Scenario:
    name: str
    topology: str = "client-switch-nas"
    description: str = ""
    client: ClientSpec = field(default_factory=ClientSpec)
    nas: NasSpec = field(default_factory=NasSpec)
    storage: StorageSpec = field(default_factory=StorageSpec)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    deadlines: Deadlines = field(default_factory=Deadlines)
    faults: tuple[FaultSpec, ...] = ()
    expect: Verdict | None = None
    repeat: int = 1
    path: str = ""

    def backing_mb(self) -> int:
        """Size of what the NAS serves: the swap file/LUN, or room for the workload's file plus ext4."""
        st = self.storage
        if st.protocol == "iscsi" and st.iscsi.lun_mb is not None:
            return st.iscsi.lun_mb
        if self.workload.uses_swap:
            return st.swap_mb
        return self.workload.total_mb(self.client.mem_mb) * 5 // 4 + 64

    def validate(self, source: str, path: str) -> None:
        st, wl = self.storage, self.workload
        if self.repeat < 1:
            raise ConfigError(source, "repeat", "must be at least 1")
        size = wl.total_mb(self.client.mem_mb)
        size_field = "workload.size_mb" if wl.size_mb else "workload.ratio_to_ram"
        if st.protocol == "iscsi":
            if self.client.mem_mb < MIN_ISCSI_CLIENT_MB:
                raise ConfigError(source, "client.mem_mb", f"iSCSI needs a client of at least {MIN_ISCSI_CLIENT_MB} MB: iscsid locks ~10 MB and is OOM-killed below that")
            if st.iscsi.lun_mb is not None and wl.uses_swap and st.iscsi.lun_mb < st.swap_mb:
                raise ConfigError(source, "storage.iscsi.lun_mb", f"the LUN ({st.iscsi.lun_mb} MB) is smaller than the requested swap ({st.swap_mb} MB)")
            if st.iscsi.lun_mb is not None and not wl.uses_swap and st.iscsi.lun_mb < size * 9 // 8 + 32:
                raise ConfigError(source, "storage.iscsi.lun_mb", f"the LUN ({st.iscsi.lun_mb} MB) cannot hold the workload's {size} MB file and ext4")
        if st.protocol in ("nfs", "iscsi", "aoe") and self.backing_mb() > self.nas.data_disk_mb - 128:
            raise ConfigError(
                source, "storage.swap_mb" if wl.uses_swap else size_field,
                f"{self.backing_mb()} MB does not fit the NAS export ({self.nas.data_disk_mb} MB data disk, "
                "128 MB kept for the filesystem): raise nas.data_disk_mb",
            )
        if wl.uses_swap and size > self.client.mem_mb + st.swap_mb - 16:
            raise ConfigError(
                source, size_field,
                f"the workload ({size} MB) cannot fit in RAM ({self.client.mem_mb} MB) plus swap ({st.swap_mb} MB): raise storage.swap_mb",
            )
        for i, f in enumerate(self.faults):
            if f.kind == "ipsec" and st.protocol == "aoe":
                raise ConfigError(source, f"faults[{i}].kind", "ipsec cannot cover AoE: AoE is not IP (no ESP for Ethernet frames)")
            if f.kind == "ipsec" and st.protocol == "local":
                raise ConfigError(source, f"faults[{i}].kind", "ipsec needs network storage")
            if f.kind == "dhcp" and st.protocol == "local":
                raise ConfigError(source, f"faults[{i}].kind", "dhcp needs network storage (the lease is the storage address)")
            if f.kind == "multiplexed" and st.protocol != "nfs":
                raise ConfigError(source, f"faults[{i}].kind", "multiplexed I/O is implemented for nfs (a second file on the same mount)")
            if f.kind in ("nas-outage", "link") and st.protocol == "local" and getattr(f, "node", "nas") != "client":
                raise ConfigError(source, f"faults[{i}].kind", f"{f.kind} needs a NAS (storage.protocol is local)")
        if not wl.uses_swap and st.protocol == "local":
            raise ConfigError(source, "workload.kind", f"{wl.kind} needs network storage (nfs, iscsi or aoe), not local")


@dataclass(frozen=True)
class LoadedScenario:
    scenario: Scenario
    topology: Topology
    raw: dict[str, Any]  # after overrides: what `scenario.yaml` in the case folder records


def parse_overrides(overrides: list[str], source: str) -> dict[str, Any]:
    """`a.b.c=value` strings -> {path: value}; the value is read as YAML (3 is a number, [1,2] a list)."""
    out: dict[str, Any] = {}
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(source, f"--set {ov}", "must look like key.path=value")
        key, _, value = ov.partition("=")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def set_path(data: Any, parts: list[str], value: Any, source: str, label: str) -> None:
    """Assign at a dotted path; `*` walks every element of a list (or every value of a mapping)."""
    head, rest = parts[0], parts[1:]
    if head == "*":
        items = data if isinstance(data, list) else list(data.values()) if isinstance(data, dict) else None
        if not items:
            raise ConfigError(source, label, "* needs a non-empty list or mapping there")
        for item in items:
            if rest:
                set_path(item, rest, value, source, label)
        if not rest:
            raise ConfigError(source, label, "* cannot be the last part of a path")
        return
    if isinstance(data, list):
        if not head.isdigit() or int(head) >= len(data):
            raise ConfigError(source, label, f"{head!r} is not an index of a {len(data)}-element list")
        if rest:
            set_path(data[int(head)], rest, value, source, label)
        else:
            data[int(head)] = copy.deepcopy(value)
        return
    if not isinstance(data, dict):
        raise ConfigError(source, label, f"{head} is inside a value that is not a mapping")
    if not rest:
        data[head] = copy.deepcopy(value)
        return
    if data.get(head) is None:
        data[head] = {}
    set_path(data[head], rest, value, source, label)


def apply_assignments(data: dict[str, Any], assignments: dict[str, Any], source: str) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for key, value in assignments.items():
        set_path(out, key.split("."), value, source, key)
    return out


def build_scenario(data: dict[str, Any], path: Path, source: str, assignments: dict[str, Any] | None = None) -> LoadedScenario:
    """Scenario data + assignments -> checked scenario and topology. Keys under `topology.` edit the
    topology the scenario names (e.g. `topology.links.*.mtu`); the file itself is never changed."""
    assignments = assignments or {}
    scen_set = {k: v for k, v in assignments.items() if not k.startswith("topology.")}
    topo_set = {k[len("topology."):]: v for k, v in assignments.items() if k.startswith("topology.")}
    data = apply_assignments(data, scen_set, source)
    data.pop("path", None)
    scenario = from_dict(Scenario, {**data, "path": str(path)}, source)
    tpath = topology_path(scenario.topology, path.parent)
    if not tpath.exists():
        raise ConfigError(source, "topology", f"no topology {scenario.topology!r} (looked for {tpath})")
    topology = load_topology(tpath, topo_set, source)
    return LoadedScenario(scenario, topology, data)


def load_scenario(path: Path, overrides: list[str] | None = None) -> LoadedScenario:
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(str(path), "(top)", "a scenario must be a mapping")
    source = str(path) + (f" (with --set {', '.join(overrides)})" if overrides else "")
    return build_scenario(data, path, source, parse_overrides(overrides or [], source))
