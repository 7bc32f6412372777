"""nas-outage: freeze the NAS VM (QMP stop/cont: the appliance and its TCP stack vanish
mid-conversation), stop and restart its storage service while the NAS stays up, or (a userspace
NAS) freeze its servers with SIGSTOP/SIGCONT: `service-freeze`, a different fault from `freeze`,
since the host's TCP stack keeps answering for the stopped servers."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Literal

from testbed.errors import ConfigError, TestbedError
from testbed.faults.base import BaseFault, FaultContext, FaultSpec, Step
from testbed.nas.base import Traits
from testbed.storage.base import Storage


@dataclass(frozen=True)
class NasOutageSpec(FaultSpec):
    kind: Literal["nas-outage"]
    at_s: float
    duration_s: float | None = None
    optional: bool = False  # the case may end before its time (else a fault that never started: unknown)
    mode: Literal["freeze", "restart-service", "service-freeze"] = "freeze"

    def check_nas_backend(self, nas: Traits, source: str, path: str) -> None:
        if self.mode == "freeze" and not nas.own_kernel:
            raise ConfigError(source, f"{path}.mode", f"freeze stops the NAS VM (QMP); with nas.backend {nas.name} there is "
                              "none: use service-freeze (SIGSTOP of its servers; the host's TCP stack still answers)")
        if self.mode == "service-freeze" and nas.own_kernel:
            raise ConfigError(source, f"{path}.mode", f"service-freeze stops userspace servers: the {nas.name} backend's "
                              "servers are in its kernel; use freeze (the whole NAS VM) or restart-service")

    def check_storage(self, storage: Storage, source: str, path: str) -> None:
        if not storage.needs_nas:
            raise ConfigError(source, f"{path}.kind", f"nas-outage needs a NAS (storage.protocol is {storage.name})")


class NasOutage(BaseFault):
    kind = "nas-outage"
    Spec = NasOutageSpec

    def inject(self, ctx: FaultContext) -> Step:
        if ctx.nas is None:
            raise TestbedError("nas-outage needs a NAS VM (this scenario's storage has none)")
        if self.spec.mode == "freeze":
            vm = ctx.nas_vm("nas-outage freeze")
            vm.qmp.stop()
            return Step({"mode": "freeze", "nas_status": vm.qmp.status()}, path_down=True)
        if self.spec.mode == "service-freeze":
            return Step({"mode": "service-freeze", "action": ctx.nas.signal_servers(signal.SIGSTOP),
                         "nas_status": ctx.nas.qmp.status()}, path_down=True)
        done = ctx.storage.stop_service(ctx.nas, ctx.sc, ctx.ends)
        return Step({"mode": self.spec.mode, "action": done}, path_down=True)

    def heal(self, ctx: FaultContext) -> Step:
        assert ctx.nas is not None
        if self.spec.mode == "freeze":
            vm = ctx.nas_vm("nas-outage freeze")
            vm.qmp.cont()
            return Step({"mode": "freeze", "nas_status": vm.qmp.status()})
        if self.spec.mode == "service-freeze":
            return Step({"mode": "service-freeze", "action": ctx.nas.signal_servers(signal.SIGCONT),
                         "nas_status": ctx.nas.qmp.status()})
        done = ctx.storage.start_service(ctx.nas, ctx.sc, ctx.ends)
        return Step({"mode": self.spec.mode, "action": done})
