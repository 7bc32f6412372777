"""What every fault kind is: its spec's base (schedule, compatibility, declared path processes),
the context it acts in, and the typed result of each operation (`Step`) that becomes its event.
The kinds themselves are testbed/faults/<kind>.py; testbed/faults/outcome.py reads them back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from testbed.errors import ConfigError, TestbedError
from testbed.kernels.kconfig import Need

if TYPE_CHECKING:  # types only: the scenario holds the fault specs (importing it here would be a cycle),
    # and the checker reads Step and Effect without needing the VM and network stack
    from testbed.host.cleanup import Cleanup
    from testbed.config.scenario import Scenario
    from testbed.store.history import History
    from testbed.net.build import BuiltNet
    from testbed.storage.base import Ends, Storage
    from testbed.nas.base import Nas, Traits
    from testbed.vm.machine import VM


class FaultSpec:
    """Base of the kinds' spec dataclasses: scheduled at `at_s` after the pressure phase starts,
    healed after `duration_s` (never, when omitted)."""

    kind: str
    at_s: float  # seconds after the pressure phase starts
    duration_s: float | None  # healed after this long (omitted: never)
    optional: bool  # the case may end before its time comes (testbed/check/completeness.py)

    def check_times(self, source: str, path: str) -> None:
        if self.at_s < 0:
            raise ConfigError(source, f"{path}.at_s", "must be >= 0")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError(source, f"{path}.duration_s", "must be positive (omit it for a fault that never heals)")

    def validate(self, source: str, path: str) -> None:
        self.check_times(source, path)

    def check_storage(self, storage: Storage, source: str, path: str) -> None:
        """ConfigError (at `path`.kind) when this fault cannot act on this protocol."""

    def check_nas_backend(self, nas: Traits, source: str, path: str) -> None:
        """ConfigError when this fault needs what the NAS backend lacks (a NAS kernel of its own)."""

    def check_topology(self, topology: str, nodes: list[str], source: str, path: str) -> None:
        """A fault that names a node (`node:`) must name one of the topology's."""
        node = getattr(self, "node", None)
        if node is not None and node not in nodes:
            raise ConfigError(source, f"{path}.node", f"no node named {node!r} in topology {topology} "
                              f"(nodes: {', '.join(nodes)})")

    def check_node_has_nas(self, node: str, storage: Storage, source: str, path: str) -> None:
        """For a fault on a node's link: the NAS's link exists only where the storage has a NAS."""
        if node != "client" and not storage.needs_nas:
            raise ConfigError(source, f"{path}.kind", f"{self.kind} needs a NAS (storage.protocol is {storage.name})")

    def path_processes(self) -> tuple[str, ...]:
        """Client processes this fault puts on the storage path, by the name the kernel shows."""
        return ()

    def kernel_needs(self) -> tuple[Need, ...]:
        """Kernel options this fault needs in the guests it acts in (client, and a NAS VM)."""
        return ()


@dataclass(frozen=True)
class Effect:
    """What a fault was seen to do: `visible` with the counters that show it, or None with the
    reason it could not be measured (`unmeasured`)."""

    visible: bool | None
    counters: dict[str, Any] = field(default_factory=dict)
    unmeasured: str | None = None


STALE = "the client's telemetry was stale (its agent stuck in the kernel): the effect could not be measured"


@dataclass
class Step:
    """The result of one fault operation. `facts` are recorded as they are; the other fields are
    the contract with the checker: the path taken down, the effect, a finding about the client, a
    guest-side step that never returned."""

    facts: dict[str, Any] = field(default_factory=dict)
    path_down: bool = False
    effect: Effect | None = None
    finding: str | None = None
    stuck: str | None = None

    def record(self) -> dict[str, Any]:
        """The event's data (the keys testbed/faults/outcome.py reads back)."""
        out = dict(self.facts)
        if self.path_down:
            out["path_down"] = True
        if self.effect is not None:
            out.update(self.effect.counters)
            out["effect_counters"] = list(self.effect.counters)
            if self.effect.visible is not None:
                out["visible"] = self.effect.visible
            if self.effect.unmeasured:
                out["effect_unknown"] = self.effect.unmeasured
        if self.finding:
            out["finding"] = self.finding
        if self.stuck:
            out["stuck"] = self.stuck
        return out


@dataclass
class FaultContext:
    """Everything a fault may act on. Helpers it starts register their undo on `undo` where they start."""

    client: VM
    nas: Nas | None
    history: History
    sc: Scenario
    storage: Storage
    net: BuiltNet
    ends: Ends
    case_dir: Path
    undo: Cleanup

    def nas_vm(self, what: str = "this fault") -> VM:
        """The NAS's VM, for what only a guest kernel has (QMP, xfrm, charon): the scenario check refuses
        such a fault on a NAS without one before anything runs."""
        vm = self.nas.machine() if self.nas is not None else None
        if vm is None:
            raise TestbedError(f"{what} needs a NAS with a kernel of its own (nas.backend {self.sc.nas.backend} has none)")
        return vm


class BaseFault:
    """A fault kind: `kind` (as in scenario files) and `Spec` (its spec dataclass) declared by each
    subclass. setup before the pressure phase, inject/heal on schedule, teardown always (even after
    Ctrl-C); each returns a Step."""

    kind: ClassVar[str]
    Spec: ClassVar[type[FaultSpec]]
    # Host tools the kind runs (tool, Debian package, needed for): `testbed doctor` lists them.
    host_tools: ClassVar[tuple[tuple[str, str, str], ...]] = ()

    def __init__(self, spec: Any):
        self.spec = spec
        self.index = 0  # its place in the scenario's faults list: events carry it

    def setup(self, ctx: FaultContext) -> Step:
        return Step()

    def inject(self, ctx: FaultContext) -> Step:
        raise NotImplementedError

    def heal(self, ctx: FaultContext) -> Step:
        raise NotImplementedError

    def teardown(self, ctx: FaultContext) -> Step:
        return Step()

    def note(self, ctx: FaultContext, op: str, step: Step | None = None, **facts: Any) -> None:
        """An event of this fault between its scheduled operations (a capture, a rekey, a lease lost)."""
        data = (step or Step()).record()
        ctx.history.add("fault", f"{self.kind}:{op}", index=self.index, **{**data, **facts})

    def failed(self, ctx: FaultContext, op: str, error: str) -> None:
        """This fault could not do what it claims (the checker's `unknown`, as a failed inject)."""
        ctx.history.add("fault", f"{self.kind}:{op}-failed", index=self.index, error=error, fault_failed=True)


def deltas(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, int | None] | None:
    """after - before per counter (None where either side lacks it); None when either reading is missing."""
    if before is None or after is None:
        return None
    return {k: (after[k] - before[k]) if isinstance(after.get(k), int) and isinstance(before.get(k), int) else None
            for k in after}


def paced_send(sock: Any, packet: Callable[[], bytes], dest: tuple[str, int], per_second: float,
               stop: threading.Event) -> int:
    """Send packet() to dest at about per_second, in 10 ms ticks, until stop; closes sock; returns the count."""
    per_tick = max(1, int(per_second / 100))
    sent = 0
    try:
        while not stop.is_set():
            t = time.monotonic()
            for _ in range(per_tick):
                try:
                    sock.sendto(packet(), dest)
                    sent += 1
                except OSError:  # a full queue or an unreachable peer: the flood goes on
                    pass
            time.sleep(max(0.0, 0.01 - (time.monotonic() - t)))
    finally:
        sock.close()
    return sent
