"""multiplexed: other I/O on the same protocol connection during swap: a verified file written on
the same NFS mount (one sunrpc transport carries both)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from testbed.errors import ConfigError
from testbed.faults.base import BaseFault, Effect, FaultContext, FaultSpec, Step
from testbed.storage.base import MOUNT, Storage
from testbed.workload import Progress


@dataclass(frozen=True)
class MultiplexedSpec(FaultSpec):
    kind: Literal["multiplexed"]
    at_s: float
    duration_s: float | None = None
    optional: bool = False  # the case may end before its time (else a fault that never started: unknown)
    size_mb: int = 64  # a file copied on the same NFS mount while the client swaps

    def check_storage(self, storage: Storage, source: str, path: str) -> None:
        if storage.name != "nfs":
            raise ConfigError(source, f"{path}.kind", "multiplexed I/O is implemented for nfs (a second file on the same mount)")

    def path_processes(self) -> tuple[str, ...]:
        return ("tb-work",)


class Multiplexed(BaseFault):
    kind = "multiplexed"
    Spec = MultiplexedSpec

    def __init__(self, spec: Any):
        super().__init__(spec)
        self.job: Any = None
        self.progress = Progress()

    def inject(self, ctx: FaultContext) -> Step:
        argv = ["/usr/bin/tb-work", "write", f"{MOUNT}/multiplexed.dat", str(self.spec.size_mb), "1", "77"]
        self.job = ctx.client.agent.start(argv, on_line=self.progress.feed)
        ctx.undo.push("multiplexed writer in the client", self.job.kill)
        return Step({"argv": argv, "mount": MOUNT})

    def heal(self, ctx: FaultContext) -> Step:
        if self.job and not self.job.done():
            self.job.kill()
        p = self.progress
        return Step({"pages_total": p.total, "finished": bool(p.finished)},
                    effect=Effect(p.done > 0, {"pages_done": p.done}))
