"""nas-outage: freeze the NAS VM with QMP `stop` and thaw it with `cont`: the NAS and its TCP stack
vanish mid-conversation, exactly like a hung appliance."""

from __future__ import annotations

from testbed.config.scenario import FaultSpec
from testbed.errors import TestbedError
from testbed.faults import FaultContext


class NasOutage:
    def __init__(self, spec: FaultSpec):
        self.spec = spec

    def inject(self, ctx: FaultContext) -> dict[str, object]:
        if ctx.nas is None:
            raise TestbedError("nas-outage needs a NAS VM (this scenario's storage has none)")
        ctx.nas.qmp.stop()
        return {"mode": self.spec.mode, "nas_status": ctx.nas.qmp.status()}

    def heal(self, ctx: FaultContext) -> dict[str, object]:
        assert ctx.nas is not None
        ctx.nas.qmp.cont()
        return {"mode": self.spec.mode, "nas_status": ctx.nas.qmp.status()}
