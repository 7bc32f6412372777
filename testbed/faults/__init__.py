"""Faults: one module per kind with setup / inject / heal / teardown, scheduled relative to the
start of the pressure phase; every operation is recorded in the history."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

from typing import Any

from testbed.config.scenario import FaultSpec, Scenario
from testbed.history import History
from testbed.vm.machine import VM


@dataclass
class FaultContext:
    client: VM
    nas: VM | None
    history: History
    sc: Scenario | None = None
    net: Any = None  # BuiltNet
    ends: Any = None  # storage.Ends
    case_dir: Any = None  # where a fault may leave evidence (captures)


class Fault(Protocol):
    """setup before the pressure phase, inject/heal on schedule, teardown always (even after Ctrl-C)."""

    spec: FaultSpec
    index: int  # its place in the scenario's faults list: events carry it

    def setup(self, ctx: FaultContext) -> dict[str, object]:
        ...

    def inject(self, ctx: FaultContext) -> dict[str, object]:
        ...

    def heal(self, ctx: FaultContext) -> dict[str, object]:
        ...

    def teardown(self, ctx: FaultContext) -> dict[str, object]:
        ...


class BaseFault:
    """Defaults for faults that need no setup or teardown."""

    def __init__(self, spec: Any):
        self.spec = spec
        self.index = 0

    def setup(self, ctx: FaultContext) -> dict[str, object]:
        return {}

    def teardown(self, ctx: FaultContext) -> dict[str, object]:
        return {}


STALE = "the client's telemetry was stale (its agent stuck in the kernel): the effect could not be measured"


def deltas(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, int | None] | None:
    """after - before per counter (None where either side lacks it); None when either reading is missing."""
    if before is None or after is None:
        return None
    return {k: (after[k] - before[k]) if isinstance(after.get(k), int) and isinstance(before.get(k), int) else None
            for k in after}


def paced_send(sock: Any, packet: Any, dest: tuple[str, int], per_second: float, stop: threading.Event) -> int:
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


def make(spec: FaultSpec) -> Fault:
    from testbed.faults.dhcp import Dhcp
    from testbed.faults.fragmentation import Fragmentation
    from testbed.faults.ipsec import Ipsec
    from testbed.faults.link import Link
    from testbed.faults.multiplexed import Multiplexed
    from testbed.faults.nas_outage import NasOutage
    from testbed.faults.traffic import CompetingTraffic

    kinds: dict[str, Any] = {"nas-outage": NasOutage, "link": Link, "competing-traffic": CompetingTraffic,
                             "fragmentation": Fragmentation, "multiplexed": Multiplexed, "ipsec": Ipsec,
                             "dhcp": Dhcp}
    return kinds[spec.kind](spec)


class Scheduler:
    """Runs each fault's inject at at_s and heal at at_s + duration_s after `start`; heals all on stop."""

    def __init__(self, specs: tuple[FaultSpec, ...], ctx: FaultContext):
        self.faults = [make(s) for s in specs]
        for i, f in enumerate(self.faults):
            f.index = i
        self.ctx = ctx
        self.active: list[Fault] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faults", daemon=True)
        self._lock = threading.Lock()
        self._set_up: list[Fault] = []
        self.t_start = 0.0

    def setup(self) -> None:
        """Before the pressure phase: each fault's preparations (servers, keys), recorded."""
        for f in self.faults:
            info = f.setup(self.ctx)
            self.ctx.history.add("fault", f"{f.spec.kind}:setup", **info)
            self._set_up.append(f)

    def start(self) -> None:
        self.t_start = self.ctx.history.now()
        if self.faults:
            self._thread.start()

    def _plan(self) -> list[tuple[float, str, Fault]]:
        plan = []
        for f in self.faults:
            plan.append((f.spec.at_s, "inject", f))
            if f.spec.duration_s is not None:
                plan.append((f.spec.at_s + f.spec.duration_s, "heal", f))
        return sorted(plan, key=lambda p: p[0])

    def _run(self) -> None:
        for at, op, fault in self._plan():
            wait = self.t_start + at - self.ctx.history.now()
            if self._stop.is_set() or (wait > 0 and self._stop.wait(wait)):
                return
            self._do(op, fault, at)

    def _do(self, op: str, fault: Fault, scheduled: float, teardown: bool = False) -> None:
        with self._lock:
            if op == "heal" and fault not in self.active:
                return
            if op == "inject" and self._stop.is_set():
                return  # the case is ending: nothing new may start after teardown began
            h = self.ctx.history
            index = fault.index
            begun = h.now()
            try:
                info = fault.inject(self.ctx) if op == "inject" else fault.heal(self.ctx)
            except Exception as e:  # recorded: the checker must know the fault did not happen as planned
                h.add("fault", f"{fault.spec.kind}:{op}-failed", error=str(e), scheduled_s=scheduled, index=index)
                if op == "inject":  # half-applied: undo what may be in place
                    try:
                        fault.heal(self.ctx)
                    except Exception as e2:
                        h.add("fault", f"{fault.spec.kind}:rollback-failed", error=str(e2), index=index)
                return
            if teardown:
                info["teardown"] = True  # healed because the case ended, not as scheduled
            # started_t is when the operation began (the schedule's promise); the event's own t is
            # when it was done, which in a starved guest can be seconds later.
            h.add("fault", f"{fault.spec.kind}:{op}", scheduled_s=round(self.t_start + scheduled, 3), index=index,
                  started_t=round(begun, 3), took_s=round(h.now() - begun, 3), **info)
            if op == "inject":
                self.active.append(fault)
            else:
                self.active.remove(fault)

    def stop(self, heal: bool = True) -> None:
        """Stop scheduling; heal what is still active (the case is ending: nothing stays broken)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        if heal:
            for f in list(self.active):
                self._do("heal", f, self.ctx.history.now() - self.t_start, teardown=True)
        for f in reversed(self._set_up):
            try:
                info = f.teardown(self.ctx)
                self.ctx.history.add("fault", f"{f.spec.kind}:teardown", **info)
            except Exception as e:  # recorded; the VMs and the namespace go anyway
                self.ctx.history.add("fault", f"{f.spec.kind}:teardown-failed", error=str(e))
        self._set_up.clear()
