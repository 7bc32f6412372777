from pathlib import Path

import pytest

from testbed.check.evidence import Evidence, parse_memory, read_evidence
from testbed.check.mechanism import RULES, Mechanism, StallFacts, name_mechanism, side_notes

FIX = Path(__file__).parents[2] / "fixtures" / "sysrq"


def evidence(name: str) -> Evidence:
    return read_evidence((FIX / name).read_text(), sources=(name,))


def dump(*tasks: tuple[str, int, tuple[str, ...]] | tuple[str, int, tuple[str, ...], str]) -> Evidence:
    """A 6.1-format sysrq-w dump of (name, pid, frames innermost first[, workqueue]), parsed."""
    lines = ["[  100.000000] sysrq: Show Blocked State"]
    for name, pid, frames, *wq in tasks:
        lines.append(f"[  100.000001] task:{name:<15} state:D stack:0     pid:{pid:<5} ppid:1      flags:0x00004000")
        lines += [f"[  100.000002] Workqueue: {w}" for w in wq]
        lines += ["[  100.000003] Call Trace:", "[  100.000004]  <TASK>"]
        lines += [f"[  100.000005]  {f}+0x10/0x20" for f in ("__schedule", "schedule", *frames)]
        lines.append("[  100.000006]  </TASK>")
    return read_evidence("\n".join(lines) + "\n")


SWAP_IN = ("io_schedule", "folio_wait_bit_common", "__folio_lock_or_retry", "do_swap_page", "handle_mm_fault")
MEMPOOL_WRITEBACK = ("io_schedule_timeout", "mempool_alloc", "__swap_writepage", "pageout", "shrink_folio_list")
DIRECT = ("do_try_to_free_pages", "try_to_free_pages", "__alloc_pages_slowpath", "__alloc_pages")


# --- the committed dumps ------------------------------------------------------------------------

def test_nfs_seed_is_rx_refill_in_reclaim() -> None:
    m = name_mechanism(evidence("nfs-rx-refill-reclaim-6.1.txt"))
    assert m is not None and m.name == "rx-refill-reclaim"
    assert m.tasks == (("kworker/0:1", 17),)
    assert m.sentence.startswith("RX refill in direct reclaim waiting on swap writeback: kworker/0:1 (pid 17,"
                                 " workqueue events refill_work [virtio_net])")
    assert m.sentence.endswith("; DMA free 252 kB < min 2284 kB, DMA32 free 712 kB < min 2844 kB,"
                               " 6384 kB under writeback")
    # kworker/0:2 (RCU's page cache refill) is in the same mempool, kswapd0 too; tb-work only throttled
    assert m.also == ("reclaim-mempool", "kswapd-writeback", "reclaim-throttled")
    assert m.notes == ("the testbed's agent is blocked in the kernel writing telemetry: tb-agent (pid 1) in"
                       " port_fops_write (direct-reclaim, reclaim-throttle)",)


def test_nfs_seed_whole_console_gives_the_same() -> None:
    a = name_mechanism(evidence("nfs-rx-refill-reclaim-console-6.1.log"))
    b = name_mechanism(evidence("nfs-rx-refill-reclaim-6.1.txt"))
    assert a == b


def test_ikev2_is_charon_blocked_in_swap_in() -> None:
    e = evidence("ipsec-ikev2-charon-swapin-6.1.txt")
    m = name_mechanism(e, StallFacts.from_dict({"protocol": "nfs"}))
    assert m.name == "helper-in-swap-in"
    assert m.tasks == tuple(("charon", p) for p in (142, 143, 152, 153, 155))
    assert m.sentence.startswith("storage-path helper blocked in swap-in: charon (pids 142, 143, 152, 153, 155)")
    assert "(NFS/RPC)" in m.sentence and "swanctl" not in m.sentence
    assert m.also == ("swap-in-wait",) and m.notes == ()
    # with the runner's helper states, VmSwap names it as swapped out
    facts = {"helpers": [{"name": "charon", "pid": 142, "VmSwap_kB": 3120, "VmRSS_kB": 900, "VmLck_kB": 0,
                          "oom_score_adj": 0}]}
    m = name_mechanism(e, StallFacts.from_dict(facts))
    assert m.name == "helper-swapped-out"
    assert m.sentence.startswith("storage-path helper charon swapped out (VmSwap 3120 kB): charon (pids 142, 143,"
                                 " 152, 153, 155) blocked in swap-in")
    assert len(m.tasks) == 5


def test_dhcp_renew_udhcpc_is_named_busybox() -> None:
    e = evidence("dhcp-renew-udhcpc-swapin-6.1.txt")
    m = name_mechanism(e)
    # udhcpc ran as `busybox udhcpc` then: the kernel calls it busybox, no helper name matches
    assert m.name == "swap-in-wait"
    assert m.sentence == "swap-in waiting on the network storage: busybox (pid 133), tb-work (pid 137)"
    assert m.tasks == (("busybox", 133), ("tb-work", 137))
    # its pid from the runner's helper states matches whatever the kernel calls it
    facts = {"helpers": [{"name": "udhcpc", "pid": 133, "VmSwap_kB": 248}], "protocol": "nfs"}
    m = name_mechanism(e, StallFacts.from_dict(facts))
    assert m.name == "helper-swapped-out" and m.tasks == (("busybox", 133),)
    assert m.sentence.startswith("storage-path helper udhcpc swapped out (VmSwap 248 kB): busybox (pid 133)")
    cut = name_mechanism(e, StallFacts.from_dict({"path_cut": "no address", "protocol": "nfs"}))
    assert cut.name == "path-cut"
    assert cut.sentence == "path cut (no address): busybox (pid 133), tb-work (pid 137) wait on the network storage"
    assert cut.also == ("swap-in-wait",)


def test_static_ipsec_is_a_plain_swap_in_wait() -> None:
    e = evidence("ipsec-static-swapin-6.1.txt")
    assert name_mechanism(e).sentence == "swap-in waiting on the network storage: tb-work (pid 134)"
    m = name_mechanism(e, StallFacts.from_dict({"protocol": "nfs"}))
    assert (m.name, m.tasks, m.also) == ("swap-in-wait", (("tb-work", 134),), ())
    assert m.sentence == "swap-in waiting on the network storage (NFS/RPC): tb-work (pid 134)"
    assert name_mechanism(e, StallFacts.from_dict({"path_cut": "no SA"})).sentence == \
        "path cut (no SA): tb-work (pid 134) wait on the network storage"


# --- each rule on a synthetic dump ----------------------------------------------------------------

def test_rx_refill_needs_reclaim_and_writeback() -> None:
    e = dump(("kworker/0:1", 17, (*MEMPOOL_WRITEBACK, *DIRECT, "try_fill_recv", "refill_work"),
              "events refill_work [virtio_net]"))
    assert name_mechanism(e).name == "rx-refill-reclaim"
    # refill waiting for a lock only is not the loop
    e = dump(("kworker/0:1", 17, ("mutex_lock", "refill_work"), "events refill_work [virtio_net]"))
    assert name_mechanism(e) is None


def test_direct_reclaim_in_mempool() -> None:
    e = dump(("tb-work", 134, (*MEMPOOL_WRITEBACK, *DIRECT)),
             ("kswapd0", 37, (*MEMPOOL_WRITEBACK, "balance_pgdat", "kswapd")))
    m = name_mechanism(e, StallFacts.from_dict({"protocol": "iscsi"}))
    assert m.name == "reclaim-mempool" and m.tasks == (("tb-work", 134),)
    assert m.sentence == ("direct reclaim waiting on swap writeback to the network storage (block device)"
                          " (mempool exhausted): tb-work (pid 134)")
    assert m.also == ("kswapd-writeback",)


def test_memory_note_in_the_sentence() -> None:
    e = dump(("tb-work", 134, (*MEMPOOL_WRITEBACK, *DIRECT)))
    mem = parse_memory((FIX / "nfs-rx-refill-reclaim-6.1.txt").read_text())
    m = name_mechanism(Evidence(blocked=e.blocked, memory=mem))
    assert m.sentence.endswith("(mempool exhausted): tb-work (pid 134); DMA free 252 kB < min 2284 kB,"
                               " DMA32 free 712 kB < min 2844 kB, 6384 kB under writeback")


def test_kswapd_stuck_in_writeback() -> None:
    e = dump(("kswapd0", 37, (*MEMPOOL_WRITEBACK, "balance_pgdat", "kswapd")), ("tb-work", 134, SWAP_IN))
    m = name_mechanism(e, StallFacts.from_dict({"protocol": "nfs"}))
    assert (m.name, m.tasks) == ("kswapd-writeback", (("kswapd0", 37),))
    assert m.sentence == "kswapd stuck in writeback: kswapd0 (pid 37) waits on the network storage (NFS/RPC)"
    assert m.also == ("swap-in-wait",)


def test_writeback_throttled() -> None:
    e = dump(("dd", 200, ("io_schedule_timeout", "balance_dirty_pages", "balance_dirty_pages_ratelimited_flags")))
    m = name_mechanism(e)
    assert m.name == "writeback-throttle"
    assert m.sentence == ("writeback throttled (balance_dirty_pages): dd (pid 200) wait for dirty pages to reach"
                          " the storage")


def test_swap_in_over_a_block_device_from_frames() -> None:
    e = dump(("tb-work", 134, SWAP_IN), ("kworker/u2:1", 50, ("io_schedule", "blk_mq_get_tag", "submit_bio_noacct")))
    m = name_mechanism(e)  # no protocol fact: the block frames say it
    assert m.sentence == "swap-in waiting on the network storage (block device): tb-work (pid 134)"
    assert m.also == ("storage-wait",)


def test_nfs_rpc_wait_outside_swap() -> None:
    e = dump(("cat", 300, ("rpc_wait_bit_killable", "__rpc_execute", "rpc_execute", "nfs_file_read")))
    m = name_mechanism(e)
    assert m.name == "storage-wait"
    assert m.sentence == "I/O waiting on the network storage (NFS/RPC): cat (pid 300)"


def test_reclaim_throttled_alone() -> None:
    e = dump(("tb-work", 134, ("throttle_direct_reclaim", "try_to_free_pages", "__alloc_pages_slowpath")))
    m = name_mechanism(e)
    assert m.name == "reclaim-throttled"
    assert m.sentence == ("direct reclaim throttled, no writer visible: tb-work (pid 134) wait for kswapd to restore"
                          " the reserves")


def test_helper_rules_need_swap_in_and_vmswap() -> None:
    e = dump(("iscsid", 300, SWAP_IN))
    swapped = {"helpers": [{"name": "iscsid", "pid": 300, "VmSwap_kB": 64}]}
    assert name_mechanism(e, StallFacts.from_dict(swapped)).name == "helper-swapped-out"
    # VmSwap 0 at the reading: only the dump's word for it
    assert name_mechanism(e, StallFacts.from_dict({"helpers": [{"name": "iscsid", "pid": 300, "VmSwap_kB": 0}]})).name == "helper-in-swap-in"
    # a swapped-out helper that is not blocked is no mechanism: the task in swap-in is someone else
    e = dump(("tb-work", 134, SWAP_IN))
    m = name_mechanism(e, StallFacts.from_dict({"helpers": [{"name": "iscsid", "pid": 300, "VmSwap_kB": 64}]}))
    assert m.name == "swap-in-wait"
    # a helper blocked on a lock is not in swap-in
    e = dump(("charon", 142, ("mutex_lock",)))
    assert name_mechanism(e, StallFacts.from_dict({"helpers": [{"name": "charon", "pid": 142, "VmSwap_kB": 64}]})) is None


def test_path_cut_needs_someone_waiting_on_the_storage() -> None:
    assert name_mechanism(dump(), StallFacts(path_cut="no address")) is None
    assert name_mechanism(dump(("x", 5, ("mutex_lock",))), StallFacts(path_cut="no address")) is None


def test_agent_is_only_ever_a_side_note() -> None:
    e = dump(("tb-agent", 1, ("alloc_buf", "port_fops_write", "vfs_write")))
    assert name_mechanism(e) is None
    assert side_notes(e) == ("the testbed's agent is blocked in the kernel writing telemetry: tb-agent (pid 1)"
                             " in port_fops_write",)
    # even in reclaim on the swap mempool, the agent decides nothing; the others do
    e = dump(("tb-agent", 1, (*MEMPOOL_WRITEBACK, *DIRECT, "alloc_buf", "port_fops_write")),
             ("tb-work", 134, SWAP_IN))
    m = name_mechanism(e)
    assert (m.name, m.tasks) == ("swap-in-wait", (("tb-work", 134),))
    assert m.notes[0].endswith("in port_fops_write (direct-reclaim, mempool-wait, swap-writeback)")


def test_nothing_to_name() -> None:
    assert name_mechanism(Evidence()) is None
    assert name_mechanism(read_evidence("[   67.527101] sysrq: Show Blocked State\n")) is None
    assert name_mechanism(dump(("sshd", 80, ("rwsem_down_read_slowpath", "down_read")))) is None
    assert name_mechanism(dump(("less", 81, ("folio_wait_bit_common", "filemap_fault")))) is None


def test_rule_table_names_are_unique_and_ordered() -> None:
    names = [r.name for r in RULES]
    assert len(names) == len(set(names))
    assert names[:5] == ["helper-swapped-out", "path-cut", "storage-socket-stuck", "rx-refill-reclaim", "reclaim-mempool"]


@pytest.mark.parametrize("name", ["nfs-rx-refill-reclaim-6.1.txt", "ipsec-ikev2-charon-swapin-6.1.txt"])
def test_mechanism_round_trip(name: str) -> None:
    m = name_mechanism(evidence(name))
    assert Mechanism.from_dict(m.to_dict()) == m
