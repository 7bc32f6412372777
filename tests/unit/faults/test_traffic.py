"""competing-traffic: the never-read UDP sink read back from /proc/net/udp, and what each flood mode
counts as seen, on counters shaped like the client's (the 2026-11-27 run without a listener included)."""

from types import SimpleNamespace

import pytest

from testbed.host.cleanup import Cleanup
from testbed import errors
from testbed.faults.base import FaultContext
from testbed.faults.outcome import effect_of
from testbed.faults.traffic import (
    FLOOD_PORT_OPEN, CompetingTraffic, CompetingTrafficSpec, sink_filled, udp_socket_on, udp_sockets,
)
from testbed.store.history import History
from testbed.vm.agent import ExecResult

# A client's /proc/net/udp after 30 s of flood into tb-udp-sink on 9999 (0x270F): udhcpc on 68 (0x44),
# rpc.statd's two sockets; the sink's queue at its 212992-byte buffer (0x33C00) with 645102 drops.
FULL = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  143: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1735 2 0000000000000000 0
  620: 00000000:B5E2 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2104 2 0000000000000000 0
  811: 0100007F:02BD 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2103 2 0000000000000000 0
 3087: 00000000:270F 00000000:0000 07 00000000:00033D00 00:00000000 00000000     0        0 2291 2 0000000000000000 645102
"""
# The same client right after the sink started: bound, empty, nothing dropped.
FRESH = FULL.replace("00000000:00033D00", "00000000:00000000").replace(" 645102", " 0")
# No sink (busybox nc -u had exited): nothing on 9999.
NONE = "\n".join(line for line in FULL.splitlines() if ":270F " not in line) + "\n"


def test_proc_net_udp_is_parsed() -> None:
    socks = udp_sockets(FULL)
    assert [s["port"] for s in socks] == [68, 46562, 701, 9999]
    assert socks[-1] == {"port": 9999, "tx_queue": 0, "rx_queue": 212224, "inode": 2291, "drops": 645102}


def test_header_and_cut_lines_are_skipped() -> None:
    text = FULL.splitlines()[0] + "\n 3087: 00000000:270F 00000000:0000 07 00000000:00033D00\n"
    assert udp_sockets(text) == [] and udp_sockets("") == []


def test_the_sink_is_found_by_port_and_inode() -> None:
    assert udp_socket_on(FULL, FLOOD_PORT_OPEN)["drops"] == 645102
    assert udp_socket_on(FULL, FLOOD_PORT_OPEN, inode=2291)["rx_queue"] == 212224
    assert udp_socket_on(FULL, FLOOD_PORT_OPEN, inode=9999) is None  # another socket on the port: not ours
    assert udp_socket_on(NONE, FLOOD_PORT_OPEN) is None


def test_a_filled_sink_is_seen() -> None:
    visible, why = sink_filled({"udp_rcvbuf_errors": 645102, "udp_no_ports": 3}, udp_socket_on(FULL, 9999), 212992)
    assert visible and "212224 of 212992 bytes" in why


def test_rcvbuf_errors_alone_count_when_the_guest_did_not_answer() -> None:
    visible, why = sink_filled({"udp_rcvbuf_errors": 645102, "udp_no_ports": 0}, None, 212992)
    assert visible and "not read" in why


@pytest.mark.parametrize(("delta", "sink", "says"), [
    # The 2026-11-27 run: every datagram to a port with no socket, none to a full queue.
    ({"udp_rcvbuf_errors": 0, "udp_no_ports": 645164}, None, "found no socket"),
    ({"udp_rcvbuf_errors": 0, "udp_no_ports": 645164}, {}, "the sink was gone"),
    # The sink died half-way (killed): NoPorts took the rest.
    ({"udp_rcvbuf_errors": 300000, "udp_no_ports": 340000}, None, "found no socket"),
    # Everything dropped before any queue (pfmemalloc skbs refused by the socket filter).
    ({"udp_rcvbuf_errors": 0, "udp_no_ports": 0}, udp_socket_on(FRESH, 9999), "did not rise"),
    # Some other socket overflowed; ours dropped nothing.
    ({"udp_rcvbuf_errors": 500, "udp_no_ports": 0}, udp_socket_on(FRESH, 9999), "dropped nothing"),
    # Drops but a queue far below its buffer.
    ({"udp_rcvbuf_errors": 500, "udp_no_ports": 0}, {**udp_socket_on(FULL, 9999), "rx_queue": 4608}, "never filled"),
])
def test_a_sink_that_did_not_fill_is_not_seen(delta, sink, says) -> None:
    visible, why = sink_filled(delta, sink, 212992)
    assert visible is False and says in why


# ---- the fault's setup and heal on stand-ins for the client and the network ----

def telemetry(rcvbuf_errors: int, no_ports: int, rx_bytes: int) -> dict:
    return {"snmp": {"Udp": {"RcvbufErrors": rcvbuf_errors, "NoPorts": no_ports, "MemErrors": 0}},
            "netstat": {"TcpExt": {"PFMemallocDrop": 0}},
            "netdev": {"lo": {"rx_bytes": 99, "rx_drop": 0}, "eth0": {"rx_bytes": rx_bytes, "rx_drop": 0}}}


class Job:
    def __init__(self, lines: list[str], status: int | None):
        self.lines, self.status, self.killed = lines, status, False

    def done(self) -> bool:
        return self.status is not None

    def wait(self, timeout=None) -> ExecResult:
        return ExecResult([], self.status, "", "bind 9999: Address in use")

    def kill(self, sig: int = 9) -> None:
        self.killed = True


class Client:
    """The client's agent: a job that prints `lines`, telemetry, and /proc/net/udp from `listing`."""

    def __init__(self, lines: list[str], listing: str | None, status: int | None = None):
        self.job, self.listing, self.tel = Job(lines, status), listing, telemetry(0, 0, 2_000_000)
        self.argvs: list[list[str]] = []
        self.agent = SimpleNamespace(start=self.start, fresh_telemetry=lambda: self.tel)

    def start(self, argv, on_line=None, timeout=0):
        self.argvs.append(argv)
        for line in self.job.lines:
            on_line(line)
        return self.job

    def exec(self, argv, timeout=60, check=False):
        self.argvs.append(argv)
        if self.listing is None:
            return ExecResult(argv, -1, "", "", timed_out=True)
        return ExecResult(argv, 0, self.listing, "")


def context(client: Client) -> FaultContext:
    net = SimpleNamespace(tap_bytes=lambda node: {"to_node": 0, "from_node": 0})
    return FaultContext(client=client, nas=None, history=History(None), sc=None, storage=None, net=net, ends=None,
                        case_dir=None, undo=Cleanup())


def flood(port_open: bool) -> CompetingTraffic:
    return CompetingTraffic(CompetingTrafficSpec(kind="competing-traffic", at_s=10, duration_s=30, mode="udp-flood",
                                                 port_open=port_open))


def test_setup_starts_the_sink_and_finds_it() -> None:
    client = Client(['{"listening":9999,"rcvbuf":212992}'], FRESH)
    ctx, f = context(client), flood(True)
    step = f.setup(ctx)
    assert client.argvs[0] == ["/usr/bin/tb-work", "udp-sink", "9999"] and client.argvs[1] == ["cat", "/proc/net/udp"]
    assert step.facts["sink_rcvbuf"] == 212992 and step.facts["sink_inode"] == 2291
    assert not any("pkill" in a for argv in client.argvs for a in argv)
    ctx.undo.close()  # the faults' helpers are undone at the case's end: the sink is killed
    assert client.job.killed


def test_setup_fails_when_the_sink_exits() -> None:
    client = Client(['{"error":"bind 9999: Address in use"}'], FRESH, status=2)
    ctx = context(client)
    with pytest.raises(errors.TestbedError, match="exited 2: .*Address in use"):
        flood(True).setup(ctx)
    assert ctx.undo._stack  # registered where it started, even though it failed


def test_setup_fails_when_the_socket_is_not_in_proc_net_udp() -> None:
    with pytest.raises(errors.TestbedError, match="no udp/9999"):
        flood(True).setup(context(Client(['{"listening":9999,"rcvbuf":212992}'], NONE)))


def heal(f: CompetingTraffic, client: Client, after: dict) -> dict:
    ctx = context(client)
    f.before = {"PFMemallocDrop": 0, "rx_bytes": 2_000_000, "rx_drop": 0, "udp_rcvbuf_errors": 0,
                "udp_mem_errors": 0, "udp_no_ports": 0}
    client.tel = after
    return f.heal(ctx).record()


def test_heal_open_port_full_sink_is_visible() -> None:
    client = Client(['{"listening":9999,"rcvbuf":212992}'], FRESH)
    f = flood(True)
    f.setup(context(client))
    client.listing = FULL
    rec = heal(f, client, telemetry(645102, 2, 933_000_000))
    assert rec["visible"] is True
    assert rec["sink_rx_queue"] == 212224 and rec["sink_drops"] == 645102 and rec["sink_found"] is True
    assert {"delta_udp_rcvbuf_errors", "delta_udp_no_ports", "sink_rx_queue", "sink_drops"} <= set(rec["effect_counters"])


def test_heal_open_port_like_the_run_without_a_listener_is_not_visible() -> None:
    client = Client(['{"listening":9999,"rcvbuf":212992}'], FRESH)
    f = flood(True)
    f.setup(context(client))
    client.listing = NONE
    rec = heal(f, client, telemetry(0, 645164, 933_000_000))
    assert rec["visible"] is False and rec["delta_udp_no_ports"] == 645164 and rec["sink_found"] is False
    effect = effect_of(rec)
    assert effect.visible is False and effect.counters["delta_udp_rcvbuf_errors"] == 0


def test_heal_open_port_with_a_silent_guest_decides_on_the_counters() -> None:
    client = Client(['{"listening":9999,"rcvbuf":212992}'], FRESH)
    f = flood(True)
    f.setup(context(client))
    client.listing = None  # cat timed out
    rec = heal(f, client, telemetry(645102, 0, 933_000_000))
    assert rec["visible"] is True and rec["sink_socket"] == "not read: timed out" and "sink_found" not in rec


def test_heal_closed_port_counts_no_ports() -> None:
    rec = heal(flood(False), Client([], FULL), telemetry(0, 645164, 933_000_000))
    assert rec["visible"] is True and "no_ports" in rec["shown_by"]
    rec = heal(flood(False), Client([], FULL), telemetry(0, 0, 933_000_000))
    assert rec["visible"] is False


def test_heal_with_stale_telemetry_is_unmeasured() -> None:
    client = Client([], FULL)
    f = flood(False)
    f.before = {"rx_bytes": 0}
    client.tel = None
    rec = f.heal(context(client)).record()
    assert "visible" not in rec and "stale" in rec["effect_unknown"]
