"""client-freeze: the client VM paused by QMP (stop/cont). A detector's control, not a product
fault: with the client paused nothing inside it can be seen, so a stall under it must be judged
`unknown`, never a deadlock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from testbed.faults.base import BaseFault, FaultContext, FaultSpec, Step


@dataclass(frozen=True)
class ClientFreezeSpec(FaultSpec):
    kind: Literal["client-freeze"]
    at_s: float
    duration_s: float | None = None
    optional: bool = False  # the case may end before its time (else a fault that never started: unknown)


class ClientFreeze(BaseFault):
    kind = "client-freeze"
    Spec = ClientFreezeSpec

    def inject(self, ctx: FaultContext) -> Step:
        ctx.client.qmp.stop()
        return Step({"client_status": ctx.client.qmp.status()})

    def heal(self, ctx: FaultContext) -> Step:
        ctx.client.qmp.cont()
        return Step({"client_status": ctx.client.qmp.status()})
