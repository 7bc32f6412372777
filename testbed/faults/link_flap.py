"""link-flap: a node's link goes down for `down_s`, comes back for `up_s`, and so on, from at_s
until the heal (the host-side tap set down and up, as `link` mode cut does once). Each down is a
path-down event and each up a path-up, so an outage window is judged as one; the effect is the
number of downs really applied."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal

from testbed.errors import ConfigError
from testbed.faults.base import BaseFault, Effect, FaultContext, FaultSpec, Step
from testbed.storage.base import Storage


@dataclass(frozen=True)
class LinkFlapSpec(FaultSpec):
    kind: Literal["link-flap"]
    at_s: float
    duration_s: float | None = None
    optional: bool = False  # the case may end before its time (else a fault that never started: unknown)
    node: str = "client"  # whose link
    down_s: float = 2.0  # each outage
    up_s: float = 8.0  # between outages

    def validate(self, source: str, path: str) -> None:
        self.check_times(source, path)
        for name in ("down_s", "up_s"):
            if getattr(self, name) < 0.5:
                raise ConfigError(source, f"{path}.{name}", "must be at least 0.5 s (the tap is set by netlink from the host)")

    def check_storage(self, storage: Storage, source: str, path: str) -> None:
        self.check_node_has_nas(self.node, storage, source, path)


class LinkFlap(BaseFault):
    kind = "link-flap"
    Spec = LinkFlapSpec

    def __init__(self, spec: Any):
        super().__init__(spec)
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.downs = 0
        self.down_total_s = 0.0
        self.error: str | None = None

    def inject(self, ctx: FaultContext) -> Step:
        s = self.spec
        self.stop.clear()
        self.thread = threading.Thread(target=self._flap, args=(ctx,), name="link-flap", daemon=True)
        self.thread.start()
        ctx.undo.push(f"link flapping of {s.node}", self._stop_flapping, ctx)
        tap = ctx.net.port_of(s.node).tap
        return Step({"node": s.node, "down_s": s.down_s, "up_s": s.up_s,
                     "mechanism": f"host-side tap {tap} set down for {s.down_s} s every {s.down_s + s.up_s} s"})

    def _flap(self, ctx: FaultContext) -> None:
        s, h = self.spec, ctx.history
        while not self.stop.is_set():
            try:
                ctx.net.set_up(s.node, False)
            except Exception as e:  # the tap could not be set: the fault did not happen as claimed
                self.error = f"setting {s.node}'s link down: {e}"
                self.failed(ctx, "flap", self.error)
                return
            down_at = h.now()
            self.downs += 1
            self.note(ctx, "path-down", Step(path_down=True), flap=self.downs)
            self.stop.wait(s.down_s)
            try:
                ctx.net.set_up(s.node, True)
            except Exception as e:
                self.error = f"setting {s.node}'s link up again: {e}"
                self.failed(ctx, "flap", self.error)
                return
            self.down_total_s += h.now() - down_at
            self.note(ctx, "path-up", flap=self.downs)
            self.stop.wait(s.up_s)

    def _stop_flapping(self, ctx: FaultContext) -> None:
        """The thread ends with the link up (it sets it up before it looks at `stop` again)."""
        self.stop.set()
        if self.thread:
            self.thread.join(10)
        ctx.net.set_up(self.spec.node, True)

    def heal(self, ctx: FaultContext) -> Step:
        self._stop_flapping(ctx)
        return Step({"node": self.spec.node},
                    effect=Effect(self.downs > 0, {"flaps": self.downs, "down_total_s": round(self.down_total_s, 1)}))
