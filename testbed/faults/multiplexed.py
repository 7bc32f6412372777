"""multiplexed: other I/O on the same protocol connection during swap: a verified file written on
the same NFS mount (one sunrpc transport carries both)."""

from __future__ import annotations

from typing import Any

from testbed.faults import BaseFault, FaultContext
from testbed.storage import MOUNT
from testbed.workload import Progress


class Multiplexed(BaseFault):
    def __init__(self, spec: Any):
        super().__init__(spec)
        self.job: Any = None
        self.progress = Progress()

    def inject(self, ctx: FaultContext) -> dict[str, object]:
        argv = ["/usr/bin/tb-work", "write", f"{MOUNT}/multiplexed.dat", str(self.spec.size_mb), "1", "77"]
        self.job = ctx.client.agent.start(argv, on_line=self.progress.feed)
        return {"argv": argv, "mount": MOUNT}

    def heal(self, ctx: FaultContext) -> dict[str, object]:
        if self.job and not self.job.done():
            self.job.kill()
        return {"pages_done": self.progress.done, "pages_total": self.progress.total,
                "finished": bool(self.progress.finished), "visible": self.progress.done > 0}

    def teardown(self, ctx: FaultContext) -> dict[str, object]:
        if self.job and not self.job.done():
            self.job.kill()
        return {}
