"""The fault schedule of one case: each fault's inject at at_s and heal at at_s + duration_s after
the pressure starts, every operation recorded.

The faults' helpers register on `ctx.undo`, the faults' own stack, which sits on the case's undo
stack as one entry (`close`): teardown stops the schedule, heals what is in place, records each
fault's teardown and only then undoes the helpers, in reverse order, so an iperf3 still running
is stopped by its heal (and says what it measured) before anything kills it."""

from __future__ import annotations

import threading

from testbed import faults
from testbed.faults.base import BaseFault, FaultContext, FaultSpec, Step


class Scheduler:
    def __init__(self, specs: tuple[FaultSpec, ...], ctx: FaultContext):
        self.faults = [faults.make(s) for s in specs]
        for i, f in enumerate(self.faults):
            f.index = i
        self.ctx = ctx
        self.active: list[BaseFault] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faults", daemon=True)
        self._lock = threading.Lock()
        self._set_up: list[BaseFault] = []
        self._injected: set[int] = set()  # indexes of the faults whose injection ran (done or failed)
        self.t_start = 0.0

    def setup(self) -> None:
        """Before the pressure phase: each fault's preparations (servers, keys), recorded. A setup
        that fails half-way leaves its helpers on `ctx.undo`, undone by `close`."""
        for f in self.faults:
            info = f.setup(self.ctx)
            self._set_up.append(f)
            self.ctx.history.add("fault", f"{f.spec.kind}:setup", **info.record())

    def start(self) -> None:
        self.t_start = self.ctx.history.now()
        if self.faults:
            self._thread.start()

    def _plan(self) -> list[tuple[float, str, BaseFault]]:
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

    def _do(self, op: str, fault: BaseFault, scheduled: float, teardown: bool = False) -> None:
        with self._lock:
            if op == "heal" and fault not in self.active:
                return
            if op == "inject" and self._stop.is_set():
                return  # the case is ending: nothing new may start after teardown began
            h = self.ctx.history
            index = fault.index
            begun = h.now()
            try:
                step: Step = fault.inject(self.ctx) if op == "inject" else fault.heal(self.ctx)
            except Exception as e:  # recorded: the checker must know the fault did not happen as planned
                if op == "inject":
                    self._injected.add(index)
                late = {"teardown": True} if teardown else {}  # at the case's end: it decides nothing
                h.add("fault", f"{fault.spec.kind}:{op}-failed", error=str(e), scheduled_s=scheduled, index=index, **late)
                if op == "inject":  # half-applied: undo what may be in place
                    try:
                        fault.heal(self.ctx)
                    except Exception as e2:
                        h.add("fault", f"{fault.spec.kind}:rollback-failed", error=str(e2), index=index)
                return
            info = step.record()
            if teardown:
                info["teardown"] = True  # healed because the case ended, not as scheduled
            # started_t is when the operation began (the schedule's promise); the event's own t is
            # when it was done, which in a starved guest can be seconds later.
            h.add("fault", f"{fault.spec.kind}:{op}", scheduled_s=round(self.t_start + scheduled, 3), index=index,
                  started_t=round(begun, 3), took_s=round(h.now() - begun, 3), **info)
            if op == "inject":
                self.active.append(fault)
                self._injected.add(fault.index)
            else:
                self.active.remove(fault)

    def close(self) -> None:
        """The case is ending: stop scheduling, heal what is still in place (nothing stays broken),
        record each fault's teardown, then undo the faults' helpers in reverse order."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        with self._lock:  # an operation that outlived the join may not start anything new
            active = list(self.active)
            # A fault whose time never came is said, never dropped: the checker compares the declared
            # faults with the recorded ones (testbed/check/completeness.py).
            ended = self.ctx.history.now() - self.t_start
            for f in self.faults if self.t_start else ():  # (none: the pressure never began)
                if f.index not in self._injected:
                    self.ctx.history.add("fault", f"{f.spec.kind}:not-started", index=f.index, at_s=f.spec.at_s,
                                         reason=f"the case ended {ended:.1f} s into the pressure, before its time "
                                                f"({f.spec.at_s:g} s)")
        for f in active:
            self._do("heal", f, self.ctx.history.now() - self.t_start, teardown=True)
        for f in reversed(self._set_up):
            try:
                info = f.teardown(self.ctx)
                self.ctx.history.add("fault", f"{f.spec.kind}:teardown", **info.record())
            except Exception as e:  # recorded; the VMs and the namespace go anyway
                self.ctx.history.add("fault", f"{f.spec.kind}:teardown-failed", error=str(e), teardown=True)
        self._set_up.clear()
        # The faults' own undo stack (helpers, sockets, threads): an undo that failed is in the case's
        # events, not only in a log line, since what it left may explain the next case.
        for err in self.ctx.undo.close():
            self.ctx.history.add("fault", "undo-failed", error=err, teardown=True)
