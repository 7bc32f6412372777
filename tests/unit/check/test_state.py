"""Issue 29: the mechanism rules read the memory dump's state (forensics.json) first; the recorded files are
real dumps of 6.1 guests read with drgn (tests/fixtures/forensics: a stall with the NAS frozen, and swap
over iSCSI, NBD and AoE at the end of a workload that finished)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from testbed.check.casefile import load_state
from testbed.check.mechanism import StallFacts, name_mechanism
from testbed.check.state import DumpState, protocol_words
from testbed.forensics import evidence_of
from testbed.forensics.show import state_lines

FIXTURES = Path(__file__).parents[2] / "fixtures/forensics"


def recorded(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


@pytest.mark.parametrize("name, port", [("nas-frozen-stall-6.1.json", 2049), ("iscsi-swap-finished-6.1.json", 3260),
                                        ("nbd-swap-finished-6.1.json", 10809)])
def test_the_storage_socket_carries_sock_memalloc_while_swap_is_on(name: str, port: int) -> None:
    """The README's kernel facts, as read from the dumps: NFS, iSCSI and NBD each mark their one storage
    socket SOCK_MEMALLOC, and it is the only one (memalloc_socks_key counts 1)."""
    f = recorded(name)
    storage = [s for s in f["sockets"] if s["remote"].endswith(f":{port}")]
    assert len(storage) == 1 and storage[0]["memalloc"] is True
    assert [s for s in f["sockets"] if s.get("memalloc")] == storage
    assert f["memory"]["memalloc_socks"] == 1 and f["memory"]["swap_total_kb"] > 0


def test_aoe_swaps_without_any_memalloc_socket() -> None:
    f = recorded("aoe-swap-finished-6.1.json")
    assert f["memory"]["memalloc_socks"] == 0 and f["memory"]["swap_total_kb"] > 0
    assert not any(s.get("memalloc") for s in f["sockets"])
    (dev,) = f["protocol"]["aoe_devices"]
    assert "UP" in dev["flags"] and dev["targets"][0]["maxout"] > 0 and dev["targets"][0]["wpkts"] > 1000
    assert protocol_words(f["protocol"]) == ("AoE e0.1: 0 frames outstanding of 16",)


def test_the_protocols_queues_in_words() -> None:
    iscsi = recorded("iscsi-swap-finished-6.1.json")["protocol"]
    (c,) = iscsi["iscsi_connections"]
    assert c["session_state"] == "LOGGED_IN" and c["tasks"] == {"FREE": c["cmds_max"]}  # nothing outstanding
    assert c["cmdsn"] == c["exp_cmdsn"] <= c["max_cmdsn"]
    assert protocol_words(iscsi)[0].startswith("iSCSI session LOGGED_IN, connection BOUND: tasks none outstanding")
    nbd = recorded("nbd-swap-finished-6.1.json")
    (n,) = nbd["protocol"]["nbd_devices"]
    assert n["device"] == "nbd0" and n["live_connections"] == n["num_connections"] == 1
    assert n["connections"][0]["socket"].endswith(":10809") and not n["connections"][0]["dead"]
    assert any(ln.startswith("  NBD nbd0: 0 of 128 requests in flight, 1 of 1 connections live")
               for ln in state_lines(nbd))


def test_only_a_stall_s_dump_is_a_stall_s_state() -> None:
    assert DumpState.from_forensics(recorded("nbd-swap-finished-6.1.json")) is None  # a comparison, not a stall
    s = DumpState.from_forensics(recorded("nas-frozen-stall-6.1.json"))
    assert s is not None and s.why == "stall" and not s.empty_rings()
    assert s.below_min == ("DMA32 free 5884 kB < min 6616 kB",)
    assert s.memalloc_socks == 1 and s.memalloc_sockets[0].startswith("10.201.0.1:965>10.201.0.2:2049 (send queued")
    assert s.protocol[0].startswith("RPC transport 10.201.0.1:965>10.201.0.2:2049 CONNECTED")


def test_the_mechanism_carries_the_dump_s_state() -> None:
    f = recorded("nas-frozen-stall-6.1.json")
    ev = evidence_of(f, 100.0)
    assert ev is not None
    plain = name_mechanism(ev, StallFacts("nfs"))
    stated = name_mechanism(ev, StallFacts("nfs", state=DumpState.from_forensics(f)))
    assert plain and stated and plain.name == stated.name != "rx-refill-reclaim"  # the ring held buffers
    assert "the memory dump at the stall: DMA32 free 5884 kB < min 6616 kB; sockets with SOCK_MEMALLOC: 1" \
        in stated.sentence and "memory dump" not in plain.sentence


def test_an_empty_receive_ring_names_the_rx_refill_loop_from_the_state() -> None:
    """The state first: the same blocked tasks, with the receive ring as the RX refill race leaves it
    (every descriptor without a buffer, the refill work pending), name the RX refill loop even where no
    stack shows the refill worker (the dump's unwinding stops in module code)."""
    f = copy.deepcopy(recorded("nas-frozen-stall-6.1.json"))
    nic = next(n for n in f["nics"] if n.get("rx"))
    nic["rx"][0]["free"] = nic["rx"][0]["size"]
    nic["refill_pending"] = True
    ev = evidence_of(f, 100.0)
    assert ev is not None and not any("net-rx-refill" in t.classes for t in ev.blocked)
    m = name_mechanism(ev, StallFacts("nfs", state=DumpState.from_forensics(f)))
    assert m is not None and m.name == "rx-refill-reclaim"
    assert m.sentence.startswith("RX ring empty (eth0 receive queue 0: 256 of 256 descriptors without a buffer "
                                 "(EMPTY: nothing can be received), refill work pending)")
    assert "kswapd0" in m.sentence and m.tasks


def test_a_case_folder_s_state_is_read_from_its_forensics_json(tmp_path: Path) -> None:
    notes: list[str] = []
    assert load_state(tmp_path, notes) is None and not notes  # no dump: the stacks alone
    (tmp_path / "forensics.json").write_text((FIXTURES / "nas-frozen-stall-6.1.json").read_text())
    state = load_state(tmp_path, notes)
    assert state is not None and state.memalloc_socks == 1
    (tmp_path / "forensics.json").write_text('{"why": "stall", "nics": [{"rx": [{"queue": 0}]}]}')
    assert load_state(tmp_path, notes) is None and "forensics.json unreadable (KeyError)" in notes[0]


def test_the_deadlocked_nfs_swap_s_state_names_the_storage_socket_that_cannot_retransmit() -> None:
    """A real deadlock of scenarios/nfs-swap.yaml (2026-12-08, r4 of 8), read with the kernel's DWARF: the
    stacks alone name the RX refill loop; the state shows the receive ring still holding buffers and the NFS
    socket in loss recovery, its retransmission timer fired 8 times and not one segment sent again."""
    f = recorded("nfs-swap-deadlock-6.1.json")
    ev = evidence_of(f, 100.0)
    assert ev is not None
    assert name_mechanism(ev, StallFacts("nfs")).name == "rx-refill-reclaim"  # the stacks alone
    state = DumpState.from_forensics(f)
    assert state is not None and not state.empty_rings() and len(state.stuck_senders) == 1
    m = name_mechanism(ev, StallFacts("nfs", state=state))
    assert m is not None and m.name == "storage-socket-stuck" and "rx-refill-reclaim" in m.also
    assert m.sentence.startswith("the storage socket cannot retransmit: 10.201.0.1:900>10.201.0.2:2049: 44 segments "
                                 "(63712 B) unacknowledged, 44 marked lost; the retransmission timer fired 8 times")
    assert "(RetransSegs 0, TCPRetransFail 0)" in m.sentence and "DMA32 free 80 kB < min 2844 kB" in m.sentence
    assert "but eth0 receive queue 0: 28 of 256 descriptors without a buffer" in m.sentence
    assert m.sentence.count("DMA32 free 80 kB") == 1  # the dump's note does not say it twice


def test_the_failing_allocations_are_read_with_their_flags() -> None:
    """With DWARF: the RX refill worker allocates a page with GFP_KERNEL for the receive ring and waits in
    the swap path's mempool (GFP_NOIO, no reserves: __GFP_NOMEMALLOC)."""
    f = recorded("nfs-swap-deadlock-6.1.json")
    assert f["debug_info"].startswith("DWARF from ") and "virtio_net" in f["debug_info"]
    refill = next(t for t in f["tasks"] if t["pid"] == 46)
    assert "net-rx-refill" in refill["classes"] and "add_recvbuf_mergeable" in refill["frames"]
    allocs = {a["function"]: a for a in refill["allocations"]}
    assert allocs["skb_page_frag_refill"]["gfp"] == "GFP_KERNEL" and allocs["__alloc_pages"]["order"] == 0
    assert allocs["mempool_alloc"]["gfp"] == "GFP_NOIO|__GFP_NOWARN|__GFP_NORETRY|__GFP_NOMEMALLOC"
    lines = state_lines(f)
    assert "      allocating in __alloc_pages: GFP_KERNEL order 0" in lines
    assert any(ln.startswith("    TCP Loss: 44 segments out (63712 B unacknowledged), 44 lost, 0 being retransmitted")
               for ln in lines)
    assert any(ln.startswith("  counters: TCPTimeouts 8, TCPRetransFail 0, TCPMemoryPressures 1") for ln in lines)


def test_a_socket_that_retransmits_is_not_stuck() -> None:
    f = copy.deepcopy(recorded("nfs-swap-deadlock-6.1.json"))
    f["sockets"][0]["tcp"]["total_retrans"] = 3
    state = DumpState.from_forensics(f)
    assert state is not None and state.stuck_senders == ()
    f["sockets"][0]["tcp"] = {**f["sockets"][0]["tcp"], "total_retrans": 0, "ca_state": "Open"}
    assert DumpState.from_forensics(f).stuck_senders == ()  # type: ignore[union-attr]
