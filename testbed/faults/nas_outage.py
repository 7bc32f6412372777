"""nas-outage: freeze the NAS VM (QMP stop/cont: the appliance and its TCP stack vanish
mid-conversation) or stop and restart its storage service while the NAS stays up."""

from __future__ import annotations

from testbed import storage
from testbed.errors import TestbedError
from testbed.faults import BaseFault, FaultContext


class NasOutage(BaseFault):
    def inject(self, ctx: FaultContext) -> dict[str, object]:
        if ctx.nas is None:
            raise TestbedError("nas-outage needs a NAS VM (this scenario's storage has none)")
        if self.spec.mode == "freeze":
            ctx.nas.qmp.stop()
            return {"mode": "freeze", "nas_status": ctx.nas.qmp.status(), "path_down": True}
        assert ctx.sc
        done = storage.get(ctx.sc.storage.protocol).stop_service(ctx.nas, ctx.sc, ctx.ends)
        return {"mode": self.spec.mode, "action": done, "path_down": True}

    def heal(self, ctx: FaultContext) -> dict[str, object]:
        assert ctx.nas is not None
        if self.spec.mode == "freeze":
            ctx.nas.qmp.cont()
            return {"mode": "freeze", "nas_status": ctx.nas.qmp.status()}
        assert ctx.sc
        done = storage.get(ctx.sc.storage.protocol).start_service(ctx.nas, ctx.sc, ctx.ends)
        return {"mode": self.spec.mode, "action": done}
