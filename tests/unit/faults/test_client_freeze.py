from pathlib import Path
from types import SimpleNamespace

from testbed.config.scenario import load_scenario
from testbed.faults import KINDS, make
from testbed.faults.client_freeze import ClientFreezeSpec

REPO = Path(__file__).parents[3]


class Qmp:
    """Stands in for the client's QMP: records stop/cont and answers the status they leave."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def stop(self) -> None:
        self.calls.append("stop")

    def cont(self) -> None:
        self.calls.append("cont")

    def status(self) -> str:
        return "paused" if self.calls[-1] == "stop" else "running"


def test_pauses_and_resumes_the_client_only() -> None:
    assert KINDS["client-freeze"].Spec is ClientFreezeSpec
    qmp = Qmp()
    ctx = SimpleNamespace(client=SimpleNamespace(qmp=qmp), nas=None)
    fault = make(ClientFreezeSpec(kind="client-freeze", at_s=1.0))
    assert fault.inject(ctx).facts == {"client_status": "paused"}
    assert fault.heal(ctx).facts == {"client_status": "running"} and qmp.calls == ["stop", "cont"]


def test_its_control_expects_unknown() -> None:
    sc = load_scenario(REPO / "scenarios/controls/client-frozen.yaml").scenario
    assert sc.expect == "unknown" and sc.faults[0].kind == "client-freeze"
