import socket
import struct
import time
from pathlib import Path

import pytest

from testbed.host.cleanup import Cleanup
from testbed.config.scenario import load_scenario
from testbed.errors import ConfigError
from testbed.faults import KINDS
from testbed.faults.base import FaultContext, Step
from testbed.faults.link import LinkSpec
from testbed.faults.nas_outage import NasOutageSpec
from testbed.faults.scheduler import Scheduler
from testbed.faults.dhcp import Exchanges, parse_frame
from testbed.faults.fragmentation import first_fragment
from testbed.faults.ike import CHILD_UP, rekey_lateness, swanctl_conf
from testbed.faults.ipsec import policy_commands, sa_commands
from testbed.faults.link import nft_loss_ruleset
from testbed.store.history import History

REPO = Path(__file__).parents[3]


class Recorder:
    """Stands in for a fault module to observe the scheduler's timing; touches no system."""

    def __init__(self, spec, log):
        self.spec, self.log = spec, log

    def setup(self, ctx):
        self.log.append(("setup", self.spec.kind))
        return Step()

    def inject(self, ctx):
        self.log.append(("inject", round(ctx.history.now(), 1)))
        return Step()

    def heal(self, ctx):
        self.log.append(("heal", round(ctx.history.now(), 1)))
        return Step()

    def teardown(self, ctx):
        self.log.append(("teardown", self.spec.kind))
        return Step()


def scheduler(specs, log, monkeypatch):
    """A scheduler over Recorders, with the faults' own undo stack as in a case."""
    import testbed.faults as faults

    monkeypatch.setattr(faults, "make", lambda spec: Recorder(spec, log))
    h = History(None)
    undo = Cleanup()
    ctx = FaultContext(client=None, nas=None, history=h, sc=None, storage=None, net=None, ends=None,
                       case_dir=None, undo=undo)
    return Scheduler(tuple(specs), ctx), h, undo


def test_inject_and_heal_on_schedule(monkeypatch) -> None:
    log: list = []
    s, h, undo = scheduler([NasOutageSpec(kind="nas-outage", at_s=0.2, duration_s=0.3)], log, monkeypatch)
    s.setup()
    s.start()
    time.sleep(0.8)
    s.close()
    assert log[0] == ("setup", "nas-outage") and log[-1] == ("teardown", "nas-outage")
    t_inject = next(t for op, t in log if op == "inject")
    t_heal = next(t for op, t in log if op == "heal")
    assert abs(t_inject - 0.2) <= 0.15 and abs(t_heal - 0.5) <= 0.15
    names = [e.name for e in h.events]
    assert names == ["nas-outage:setup", "nas-outage:inject", "nas-outage:heal", "nas-outage:teardown"]
    assert "teardown" not in h.events[2].data
    inj = h.events[1].data
    assert abs(inj["started_t"] - inj["scheduled_s"]) <= 0.15 and inj["took_s"] >= 0


class Helper(Recorder):
    """A fault whose inject starts a helper (an iperf3, a flood) registered for undo where it starts."""

    def inject(self, ctx):
        ctx.undo.push("helper", self.log.append, ("helper undone", self.spec.kind))
        return super().inject(ctx)


def run_one_link_fault(fault: type, log: list, monkeypatch) -> FaultContext:
    """A link fault of class `fault` set up, injected at once, and the case ended 0.3 s later."""
    import testbed.faults as faults

    monkeypatch.setattr(faults, "make", lambda spec: fault(spec, log))
    ctx = FaultContext(client=None, nas=None, history=History(None), sc=None, storage=None, net=None, ends=None,
                       case_dir=None, undo=Cleanup())
    s = Scheduler((LinkSpec(kind="link", at_s=0.0),), ctx)
    s.setup()
    s.start()
    time.sleep(0.3)
    s.close()
    return ctx


def test_teardown_heals_before_it_undoes_the_helpers(monkeypatch) -> None:
    log: list = []
    ctx = run_one_link_fault(Helper, log, monkeypatch)
    ops = [op for op, _ in log]
    assert ops == ["setup", "inject", "heal", "teardown", "helper undone"], log
    ctx.undo.push("late", log.append, ("late", "now"))  # a helper that came after the end goes at once
    assert log[-1] == ("late", "now")


def test_a_failed_undo_of_a_faults_helper_is_an_event(monkeypatch) -> None:
    """An undo of the faults' own stack that fails (a helper that would not stop) is recorded in the case's
    events, not only logged; the other undos still run."""

    class Stubborn(Helper):
        def inject(self, ctx):
            ctx.undo.push("flood thread", self._refuse)
            return super().inject(ctx)

        def _refuse(self):
            raise RuntimeError("the flood thread did not stop in 5 s")

    log: list = []
    h = run_one_link_fault(Stubborn, log, monkeypatch).history
    failed = [e for e in h.events if e.kind == "fault" and e.name == "undo-failed"]
    assert len(failed) == 1 and "flood thread: the flood thread did not stop" in failed[0].data["error"], h.events
    assert ("helper undone", "link") in log


def test_unhealed_fault_is_healed_at_stop_and_marked(monkeypatch) -> None:
    log: list = []
    s, h, undo = scheduler([LinkSpec(kind="link", at_s=0.0)], log, monkeypatch)
    s.start()
    time.sleep(0.3)
    s.close()
    heal = [e for e in h.events if e.name == "link:heal"]
    assert heal and heal[0].data["teardown"] is True


def test_stop_before_injection_injects_nothing(monkeypatch) -> None:
    log: list = []
    s, h, undo = scheduler([LinkSpec(kind="link", at_s=30, duration_s=5)], log, monkeypatch)
    s.start()
    s.close()
    assert [op for op, _ in log] == []
    # ... and says so: the checker compares the declared faults with the recorded ones
    (rec,) = [e for e in h.events if e.name == "link:not-started"]
    assert rec.data["index"] == 0 and rec.data["at_s"] == 30 and "before its time (30 s)" in rec.data["reason"]


def test_a_case_that_never_reached_the_pressure_records_no_fault_as_not_started(monkeypatch) -> None:
    log: list = []
    s, h, undo = scheduler([LinkSpec(kind="link", at_s=30, duration_s=5)], log, monkeypatch)
    s.close()
    assert not [e for e in h.events if e.name.endswith(":not-started")]


def test_an_injected_fault_is_not_reported_as_not_started(monkeypatch) -> None:
    log: list = []
    s, h, undo = scheduler([LinkSpec(kind="link", at_s=0.0)], log, monkeypatch)
    s.start()
    time.sleep(0.3)
    s.close()
    assert [e.name for e in h.events if e.name.startswith("link:")][:1] == ["link:inject"]
    assert not [e for e in h.events if e.name.endswith(":not-started")]


@pytest.mark.parametrize("override,message", [
    ("faults=[{kind: link, at_s: 1, loss_pct: 0, mode: loss}]", "faults[0].loss_pct: must be in (0, 100]"),
    ("faults=[{kind: link, at_s: -1}]", "faults[0].at_s: must be >= 0"),
    ("faults=[{kind: competing-traffic, at_s: 1, duration_s: null}]", "faults[0].duration_s: competing traffic needs a duration"),
    ("faults=[{kind: fragmentation, at_s: 1, mtu: 100}]", "faults[0].mtu: must be between 576 and 9000"),
    ("faults=[{kind: ipsec, rekey_s: 1}]", "faults[0].rekey_s: must be at least 2 s for mode static"),
    ("faults=[{kind: link, at_s: 1, colour: red}]", "faults[0].colour: unknown field"),
    ("faults=[{kind: tornado, at_s: 1}]", "faults[0].kind: must be one of"),
    ("faults=[{kind: ipsec, trap: true}]", "faults[0].trap: only for mode ikev2"),
    ("faults=[{kind: ipsec, establish: before-pressure}]", "faults[0].establish: only for mode ikev2"),
    ("faults=[{kind: ipsec, mode: ikev2, establish: before-pressure, at_s: 5}]", "faults[0].at_s: must be 0 with establish"),
    ("faults=[{kind: dhcp, lease_s: 30}]", "faults[0].lease_s: dnsmasq grants no lease shorter than 120 s"),
    ("faults=[{kind: dhcp, mode: server-stop, renew_s: 5}]", "faults[0].renew_s: only for mode renew"),
    ("faults=[{kind: dhcp, renew_s: 1}]", "faults[0].renew_s: must be at least 2 s"),
])
def test_fault_validation(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_scenario(REPO / "scenarios/nfs-swap.yaml", [override])
    assert message in str(e.value)


def test_ipsec_cannot_cover_aoe() -> None:
    with pytest.raises(ConfigError, match="ipsec cannot cover AoE: AoE is not IP"):
        load_scenario(REPO / "scenarios/aoe-swap.yaml", ["faults=[{kind: ipsec}]"])


def test_shipped_fault_scenarios_validate() -> None:
    files = sorted((REPO / "scenarios/faults").glob("*.yaml")) + sorted((REPO / "scenarios/controls").glob("*.yaml"))
    kinds = {f.kind for p in files for f in load_scenario(p).scenario.faults}
    assert kinds == set(KINDS)  # every fault kind has a shipped scenario (or control)


def test_dhcp_needs_network_storage() -> None:
    with pytest.raises(ConfigError, match="dhcp needs network storage"):
        load_scenario(REPO / "scenarios/controls/local-swap.yaml", ["faults=[{kind: dhcp}]"])


def dhcp_frame(mtype: int, xid: int, *, to_client: bool, ciaddr: str = "0.0.0.0", broadcast: bool = False,
               lease: int | None = None) -> bytes:
    """An Ethernet/IPv4/UDP DHCP frame as a client or server would send it."""
    opts = bytes([53, 1, mtype]) + (bytes([51, 4]) + struct.pack("!I", lease) if lease else b"") + b"\xff"
    bootp = (struct.pack("!BBBBIHH", 2 if to_client else 1, 1, 6, 0, xid, 0, 0) + socket.inet_aton(ciaddr)
             + socket.inet_aton("10.1.0.5") + bytes(8) + bytes(16) + bytes(192) + b"\x63\x82\x53\x63" + opts)
    sport, dport = (67, 68) if to_client else (68, 67)
    udp = struct.pack("!HHHH", sport, dport, 8 + len(bootp), 0) + bootp
    dst = "255.255.255.255" if broadcast else ("10.1.0.5" if to_client else "10.1.0.254")
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton("10.1.0.254"),
                     socket.inet_aton(dst))
    return bytes(6) + bytes(6) + b"\x08\x00" + ip + udp


def test_dhcp_frames_parse() -> None:
    m = parse_frame(dhcp_frame(5, 0xABCD, to_client=True, lease=120))
    assert m is not None and (m.type, m.xid, m.to_client, m.lease_s, m.yiaddr) == ("ack", 0xABCD, True, 120, "10.1.0.5")
    req = parse_frame(dhcp_frame(3, 7, to_client=False, ciaddr="10.1.0.5"))
    assert req is not None and (req.type, req.ciaddr, req.broadcast) == ("request", "10.1.0.5", False)
    assert parse_frame(dhcp_frame(5, 1, to_client=True)[:100]) is None  # truncated
    arp = bytes(12) + b"\x08\x06" + bytes(300)
    assert parse_frame(arp) is None


def test_dhcp_exchanges_pair_requests_with_acks() -> None:
    ex = Exchanges()
    renew = parse_frame(dhcp_frame(3, 1, to_client=False, ciaddr="10.1.0.5"))
    rebind = parse_frame(dhcp_frame(3, 2, to_client=False, ciaddr="10.1.0.5", broadcast=True))
    assert ex.feed(10.0, renew) == [("request", {"xid": "0x1", "exchange": "renew", "attempt": 1})]
    assert ex.feed(11.5, renew)[0][1]["attempt"] == 2  # a retry of the same xid
    (name, data), = ex.feed(12.0, parse_frame(dhcp_frame(5, 1, to_client=True, lease=120)))
    assert name == "renewal" and data["exchange"] == "renew" and data["requests"] == 2 and data["latency_s"] == 2.0
    assert ex.last_ack_t == 12.0 and ex.lease_s == 120
    ex.feed(20.0, rebind)
    (name, data), = ex.feed(20.25, parse_frame(dhcp_frame(6, 2, to_client=True)))
    assert name == "nak" and data["exchange"] == "rebind" and ex.acks == 1 and ex.requests == 3
    first = parse_frame(dhcp_frame(3, 3, to_client=False))
    ex.feed(30.0, first)
    assert ex.feed(30.1, parse_frame(dhcp_frame(5, 3, to_client=True, lease=120)))[0][0] == "bound"


def test_first_fragment_is_an_unfinished_train() -> None:
    pkt = first_fragment("10.201.0.254", "10.201.0.1", 4242, payload=1200)
    ver_ihl, _, total, ident, flags_off, ttl, proto, _, src, dst = struct.unpack("!BBHHHBBH4s4s", pkt[:20])
    assert ver_ihl == 0x45 and total == len(pkt) == 1220 and ident == 4242
    assert flags_off == 0x2000  # more fragments, offset 0: reassembly waits for the rest forever
    assert proto == socket.IPPROTO_UDP and socket.inet_ntoa(dst) == "10.201.0.1"


def test_nft_loss_rules() -> None:
    rules = nft_loss_ruleset("tbfault_loss", "tb123abc-c0", 5)
    assert "type filter hook forward priority 0" in rules
    assert 'iifname "tb123abc-c0" numgen random mod 10000 < 500 counter drop' in rules
    assert 'oifname "tb123abc-c0" numgen random mod 10000 < 500 counter drop' in rules


def test_ipsec_commands_cover_both_directions() -> None:
    sas = sa_commands("10.0.0.1", "10.0.0.2", 0x1002, 0x1003, "aa" * 20, "bb" * 20)
    assert [a[a.index("src") + 1] for a in sas] == ["10.0.0.1", "10.0.0.2"]
    assert all("transport" in a and "rfc4106(gcm(aes))" in a for a in sas)
    pol = policy_commands("10.0.0.1", "10.0.0.2")
    assert [p[p.index("dir") + 1] for p in pol] == ["out", "in"]


def test_paced_send_keeps_its_rate() -> None:
    import threading

    from testbed.faults.base import paced_send

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.3)
    got = []

    def drain() -> None:
        try:
            while True:
                got.append(len(rx.recv(200)))
        except OSError:
            pass

    reader = threading.Thread(target=drain)
    reader.start()
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    sent = paced_send(tx, lambda: b"x" * 100, rx.getsockname(), 2000, stop)
    reader.join()
    rx.close()
    assert 500 <= sent <= 1300  # ~2000/s for 0.5 s
    assert len(got) >= sent * 0.9 and set(got) == {100}  # they went where they were sent
    assert tx.fileno() == -1  # closed when done


def test_ikev2_config_is_transport_mode_with_exact_rekeys() -> None:
    conf = swanctl_conf("10.1.0.1", "10.1.0.2", "ab" * 32, 20, 40, initiator=True, trap=True)
    assert "mode = transport" in conf and "rekey_time = 20s" in conf and "rekey_time = 40s" in conf
    assert "rand_time = 0s" in conf and "start_action = trap" in conf
    assert "start_action = none" in swanctl_conf("10.1.0.1", "10.1.0.2", "ab" * 32, 20, 40, initiator=True)
    assert "local_ts = 10.1.0.1/32" in conf and "remote_ts = 10.1.0.2/32" in conf
    assert conf.count("{") == conf.count("}")
    assert "start_action = none" in swanctl_conf("10.1.0.2", "10.1.0.1", "ab" * 32, 20, 40, initiator=False)


def test_rekey_lateness() -> None:
    assert rekey_lateness([10.0, 30.5, 58.0], 20) == {"child_sa_intervals_s": [20.5, 27.5], "worst_late_s": 7.5}
    assert rekey_lateness([10.0], 20)["worst_late_s"] is None
    assert rekey_lateness([10.0], 20, until=70.0)["worst_late_s"] == 40.0  # the rekey that never came
    assert rekey_lateness([10.0, 30.0], 20, until=35.0)["worst_late_s"] == 0.0


def test_ikev2_rekeys_need_time() -> None:
    with pytest.raises(ConfigError, match="rekey_s: must be at least 10 s for mode ikev2"):
        load_scenario(REPO / "scenarios/nfs-swap.yaml", ["faults=[{kind: ipsec, mode: ikev2, rekey_s: 5}]"])


def test_a_rekeyed_child_sa_counts_once() -> None:
    lines = ["11[IKE] CHILD_SA tb{1} established with SPIs c3effb87_i c1db3928_o",
             "14[IKE] inbound CHILD_SA tb{2} established with SPIs c445626e_i cca586bd_o",
             "07[IKE] outbound CHILD_SA tb{2} established with SPIs c445626e_i cca586bd_o",
             "07[IKE] closing CHILD_SA tb{1} with SPIs c3effb87_i"]
    assert [bool(CHILD_UP.search(x)) for x in lines] == [True, True, False, False]
