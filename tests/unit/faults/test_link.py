"""link: the delay judged by round trips measured across the shaped link, the cut by pings and the
tap's bytes, and the NAS-side shaping's modules present in the NAS image and loaded at injection."""

from types import SimpleNamespace

import pytest
from pyroute2 import NetlinkError

from testbed import nas

import testbed.faults.link as link
from testbed.host.cleanup import Cleanup
from testbed import errors
from testbed.faults.base import FaultContext
from testbed.faults.link import NAS_SHAPING_MODULES, Link, LinkSpec, cut_effect, delay_effect
from testbed.faults.outcome import effect_of
from testbed.store.history import History
from testbed.images.recipe import load_recipe
from testbed.vm.shell import Try

# Round trips in ms from the switch's namespace to a TCG NAS serving NFS swap: a few ms, one slow.
QUIET = [1.9, 2.4, 1.7, 14.8, 2.1]
# The same with 50 +- 10 ms netem on both of the NAS's directions (egress, and ingress via ifb0).
BOTH_WAYS = [104.2, 96.8, 111.5, 99.0, 92.3]


def test_delay_on_both_directions_is_seen() -> None:
    e = delay_effect(QUIET, BOTH_WAYS, 50.0, directions=2)
    assert e.visible is True and e.unmeasured is None
    assert e.counters["rtt_before_ms"] == 2.1 and e.counters["rtt_during_ms"] == 99.0
    assert e.counters["rtt_rise_ms"] == 96.9 and e.counters["expected_rise_ms"] == 100.0
    assert e.counters["pings_answered_before"] == "5/5"


def test_one_direction_is_enough_on_the_host_tap() -> None:
    one_way = [x - 50 for x in BOTH_WAYS]
    assert delay_effect(QUIET, one_way, 50.0, directions=1).visible is True
    # ... but not when the NAS claims both directions: half of 2 x 50 ms is the configured delay itself
    assert delay_effect(QUIET, [x + 40 for x in QUIET], 50.0, directions=2).visible is False


def test_no_rise_is_not_seen() -> None:
    e = delay_effect(QUIET, [2.0, 3.1, 1.8, 2.2, 40.0], 50.0, directions=2)
    assert e.visible is False and e.counters["rtt_rise_ms"] == 0.1


def test_lost_pings_count_as_missing_not_as_delay() -> None:
    e = delay_effect(QUIET, [None, 101.0, None, 98.0, 97.5], 50.0, directions=2)
    assert e.visible is True and e.counters["pings_answered_during"] == "3/5"


@pytest.mark.parametrize(("before", "during", "delay", "says"), [
    ([None] * 5, BOTH_WAYS, 50.0, "before the injection"),
    (QUIET, [None] * 5, 50.0, "during the delay"),
    (QUIET, [], 50.0, "during the delay"),  # no ping could be sent at all
    (QUIET, BOTH_WAYS, 0.0, "0 ms"),
])
def test_unmeasurable_delay(before, during, delay, says) -> None:
    e = delay_effect(before, during, delay, directions=2)
    assert e.visible is None and says in e.unmeasured


def test_cut_seen_by_silence_and_a_still_tap() -> None:
    e = cut_effect([None, None], 0, 1.9)
    assert e.visible is True and e.counters == {"rtt_before_cut_ms": 1.9, "pings_answered_during_cut": "0/2",
                                                "bytes_to_node_during_cut": 0}
    assert cut_effect([None, None], 196, 1.9).visible is False  # our echo requests went through: not cut
    assert cut_effect([2.2, None], 0, 1.9).visible is False
    assert cut_effect([None, None], 0, None).visible is True  # the tap's bytes decide when the node was silent anyway


def test_the_nas_image_has_the_shaping_modules() -> None:
    assert set(NAS_SHAPING_MODULES) <= set(load_recipe("nas").modules)


# ---- inject and heal on stand-ins: the host without netem, the NAS shaping in its own kernel ----

class Nas:
    net_devs = ["eth0"]
    traits = nas.traits("vm")  # a NAS VM: netem can go inside it

    def __init__(self):
        self.calls: list[tuple] = []

    def run_all(self, *steps, timeout=60, check=True):
        self.calls.append(steps)


class Net:
    netns = "tb000000"

    def __init__(self, host_netem: bool):
        self.host_netem, self.up, self.to_node = host_netem, True, 5000
        self.ns = SimpleNamespace(link_lookup=lambda ifname: [7], tc=self.tc)
        self.tc_calls: list[tuple] = []

    def tc(self, *args, **kw):
        self.tc_calls.append(args)
        if not self.host_netem:
            raise NetlinkError(2, "No such file or directory")

    def port_of(self, node):
        return SimpleNamespace(tap=f"tb000000-{node[0]}0")

    def address_of(self, node):
        return {"client": "10.201.0.1", "nas": "10.201.0.2"}[node]

    def set_up(self, node, up):
        self.up = up

    def tap_bytes(self, node):
        return {"to_node": self.to_node, "from_node": 0}


def context(net: Net, nas: Nas | None) -> FaultContext:
    ends = SimpleNamespace(client_ip="10.201.0.1", nas_ip="10.201.0.2")
    return FaultContext(client=None, nas=nas, history=History(None), sc=None, storage=None, net=net, ends=ends,
                        case_dir=None, undo=Cleanup())


class Pings:
    """Stands in for the pinger: answers per address with what the link is doing at the time."""

    def __init__(self, rtt):
        self.rtt, self.calls = rtt, []

    def __call__(self, netns, address, count, timeout):
        self.calls.append((address, count, timeout))
        return [self.rtt(address) for _ in range(count)]


def test_delay_inside_the_nas_loads_its_modules_and_measures_the_nas(monkeypatch) -> None:
    net, nas = Net(host_netem=False), Nas()
    shaped = {"on": False}
    pings = Pings(lambda a: (102.0 if shaped["on"] else 2.0) if a == "10.201.0.2" else None)
    monkeypatch.setattr(link, "ping_times", pings)
    orig = nas.run_all

    def run_all(*steps, **kw):
        orig(*steps, **kw)
        shaped["on"] = any(isinstance(s, list) and s[:2] == ["tc", "qdisc"] and "add" in s for s in steps)
    nas.run_all = run_all
    f = Link(LinkSpec(kind="link", at_s=10, duration_s=30, mode="delay", node="nas", delay_ms=50, jitter_ms=10))
    ctx = context(net, nas)
    inj = f.inject(ctx).record()
    steps = nas.calls[0]
    assert steps[0] == ["modprobe", "-a", "sch_netem", "sch_ingress", "cls_matchall", "act_mirred", "ifb"]
    assert isinstance(steps[1], Try)
    assert ["tc", "filter", "add", "dev", "eth0", "parent", "ffff:", "matchall", "action", "mirred", "egress",
            "redirect", "dev", "ifb0"] in steps
    assert inj["rtt_before_ms"] == 2.0 and inj["rtt_at_inject_ms"] == 102.0 and "inside the NAS VM" in inj["mechanism"]
    assert {a for a, _, _ in pings.calls} == {"10.201.0.2"}
    assert pings.calls[1][2] == pytest.approx(1.0 + 2 * 0.070)  # both directions, delay + 2 x jitter each
    rec = f.heal(ctx).record()
    assert rec["visible"] is True and rec["shaped"] == "nas" and rec["measured_to"] == "10.201.0.2"
    assert rec["rtt_at_heal_ms"] == 102.0 and rec["rtt_after_ms"] == 2.0 and rec["rtt_rise_ms"] == 100.0
    assert effect_of(rec).counters["expected_rise_ms"] == 100.0
    assert [s.argv[:4] for s in nas.calls[1]] == [["tc", "qdisc", "del", "dev"]] * 3


def test_delay_asked_for_the_client_is_measured_on_the_nas_it_shapes(monkeypatch) -> None:
    net, nas = Net(host_netem=False), Nas()
    pings = Pings(lambda a: 2.0)  # the shaping never shows: not seen
    monkeypatch.setattr(link, "ping_times", pings)
    f = Link(LinkSpec(kind="link", at_s=10, duration_s=30, mode="delay", node="client", delay_ms=50))
    ctx = context(net, nas)
    f.inject(ctx)
    assert [a for a, _, _ in pings.calls] == ["10.201.0.1", "10.201.0.2", "10.201.0.2"]
    rec = f.heal(ctx).record()
    assert rec["visible"] is False and rec["measured_to"] == "10.201.0.2"


def test_delay_on_the_host_tap_expects_one_direction(monkeypatch) -> None:
    net = Net(host_netem=True)
    monkeypatch.setattr(link, "ping_times", Pings(lambda a: 30.0 if net.tc_calls else 2.0))
    f = Link(LinkSpec(kind="link", at_s=10, duration_s=30, mode="delay", node="client", delay_ms=50, jitter_ms=10))
    ctx = context(net, None)
    f.inject(ctx)
    rec = f.heal(ctx).record()
    assert rec["shaped"] == "host" and rec["expected_rise_ms"] == 50.0 and rec["visible"] is True  # 28 >= 25


def test_a_failed_injection_rolls_back_without_measuring(monkeypatch) -> None:
    net, nas = Net(host_netem=False), Nas()
    pings = Pings(lambda a: 2.0)
    monkeypatch.setattr(link, "ping_times", pings)

    def refuse(*steps, **kw):
        nas.calls.append(steps)
        if steps[0] == ["modprobe", "-a", *NAS_SHAPING_MODULES]:
            raise RuntimeError("Error: Specified qdisc kind is unknown.")
    nas.run_all = refuse
    f = Link(LinkSpec(kind="link", at_s=10, duration_s=30, mode="delay", node="nas"))
    ctx = context(net, nas)
    with pytest.raises(RuntimeError):
        f.inject(ctx)
    n = len(pings.calls)
    rec = f.heal(ctx).record()  # the scheduler's rollback: removes what may be in place, measures nothing
    assert len(pings.calls) == n and len(nas.calls) == 2 and "visible" not in rec


def test_cut_is_checked_before_the_link_comes_back(monkeypatch) -> None:
    net = Net(host_netem=False)
    monkeypatch.setattr(link, "ping_times", Pings(lambda a: 1.5 if net.up else None))
    f = Link(LinkSpec(kind="link", at_s=15, duration_s=20, mode="cut", node="client"))
    ctx = context(net, None)
    inj = f.inject(ctx).record()
    assert inj["path_down"] is True and net.up is False
    rec = f.heal(ctx).record()
    assert net.up is True and rec["visible"] is True
    assert rec["rtt_before_cut_ms"] == 1.5 and rec["pings_answered_during_cut"] == "0/2"


def test_cut_that_did_not_cut_is_not_seen(monkeypatch) -> None:
    net = Net(host_netem=False)
    net.set_up = lambda node, up: None  # the tap stays up
    monkeypatch.setattr(link, "ping_times", Pings(lambda a: 1.5))
    f = Link(LinkSpec(kind="link", at_s=15, duration_s=20, mode="cut", node="client"))
    ctx = context(net, None)
    f.inject(ctx)
    net.to_node += 196  # our echo requests crossed
    rec = f.heal(ctx).record()
    assert rec["visible"] is False and rec["bytes_to_node_during_cut"] == 196


def test_total_loss_takes_the_path_down(monkeypatch) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(link.proc, "run", lambda argv, **kw: ran.append(argv))
    for pct, down in ((100.0, True), (30.0, False)):
        step = Link(LinkSpec(kind="link", at_s=0, mode="loss", loss_pct=pct)).inject(context(Net(False), None))
        assert step.path_down is down and "numgen" in step.facts["mechanism"]
    assert all(a[-3:] == ["nft", "-f", "-"] for a in ran)


def test_a_netns_nas_is_no_place_for_netem() -> None:
    class HostNas(Nas):
        traits = nas.traits("netns")

    with pytest.raises(errors.TestbedError, match="shares the host's kernel"):
        Link(LinkSpec(kind="link", at_s=10, duration_s=30, mode="delay", node="nas", delay_ms=50)).inject(
            context(Net(False), HostNas()))
