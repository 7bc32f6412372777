import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from testbed.host.cleanup import Cleanup
from testbed.config.scenario import load_scenario
from testbed.errors import ConfigError
from testbed.faults import KINDS, make
from testbed.faults.base import FaultContext
from testbed.faults.link_flap import LinkFlapSpec
from testbed.faults.outcome import read
from testbed.faults.scheduler import Scheduler
from testbed.store.history import History

REPO = Path(__file__).parents[3]


class Taps:
    """Stands in for the built network: records each tap state change with its time."""

    def __init__(self, history: History, fail_at: int | None = None):
        self.history, self.fail_at, self.calls = history, fail_at, []

    def port_of(self, node: str) -> SimpleNamespace:
        return SimpleNamespace(tap=f"tb000000-{node[0]}0")

    def set_up(self, node: str, up: bool) -> None:
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            self.fail_at = None  # once
            raise OSError("no such device")
        self.calls.append((round(self.history.now(), 2), node, up))


def context(fail_at: int | None = None) -> tuple[FaultContext, Taps]:
    h = History(None)
    taps = Taps(h, fail_at)
    ctx = FaultContext(client=None, nas=None, history=h, sc=None, storage=None, net=taps, ends=None,
                       case_dir=None, undo=Cleanup())
    return ctx, taps


def test_found_by_its_kind() -> None:
    assert KINDS["link-flap"].Spec is LinkFlapSpec


def test_flaps_down_and_up_on_schedule_and_ends_up() -> None:
    ctx, taps = context()
    spec = LinkFlapSpec(kind="link-flap", at_s=0.0, duration_s=1.6, down_s=0.5, up_s=0.3)
    s = Scheduler((spec,), ctx)
    s.start()
    time.sleep(2.0)
    s.close()
    states = [up for _, _, up in taps.calls]
    assert states[:4] == [False, True, False, True] and states[-1] is True
    downs = [t for t, _, up in taps.calls if not up]
    assert len(downs) == 2 and abs(downs[1] - downs[0] - 0.8) <= 0.15  # down_s + up_s apart
    h = read(ctx.history.events)
    assert len(h.path_down) == 2 and all(w.end is not None for w in h.path_down)
    assert all(0.4 <= w.end - w.start <= 0.65 for w in h.path_down)
    (o,) = h.outcomes
    assert o.effect is not None and o.effect.visible is True and o.effect.counters["flaps"] == 2
    assert not h.failures


def test_a_tap_that_cannot_be_set_is_a_failed_operation() -> None:
    ctx, taps = context(fail_at=2)  # the second down fails
    fault = make(LinkFlapSpec(kind="link-flap", at_s=0.0, down_s=0.5, up_s=0.5))
    fault.inject(ctx)
    time.sleep(1.3)
    fault.heal(ctx)
    h = read(ctx.history.events)
    assert [f.op for f in h.failures] == ["flap"] and "no such device" in h.failures[0].error
    assert len(h.path_down) == 1 and h.path_down[0].end is not None


@pytest.mark.parametrize("override,message", [
    ("faults=[{kind: link-flap, at_s: 1, down_s: 0.1}]", "faults[0].down_s: must be at least 0.5 s"),
    ("faults=[{kind: link-flap, at_s: 1, up_s: 0}]", "faults[0].up_s: must be at least 0.5 s"),
    ("faults=[{kind: link-flap, at_s: 1, period_s: 3}]", "faults[0].period_s: unknown field"),
])
def test_validation(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_scenario(REPO / "scenarios/nfs-swap.yaml", [override])
    assert message in str(e.value)


def test_the_nas_link_needs_a_nas() -> None:
    with pytest.raises(ConfigError, match="link-flap needs a NAS"):
        load_scenario(REPO / "scenarios/controls/local-swap.yaml", ["faults=[{kind: link-flap, node: nas, at_s: 1}]"])
