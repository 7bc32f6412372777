import json
from pathlib import Path

import pytest

from testbed.check.evidence import (BlockedTask, Evidence, classify, on_path, parse_blocked, parse_memory,
                                    parse_zoneinfo, read_evidence)

FIX = Path(__file__).parents[2] / "fixtures" / "sysrq"
# results/20261126-072333-tb4af7aa/nfs: the seed deadlock, NFS swap, no fault (and its whole console)
NFS_SEED = FIX / "nfs-rx-refill-reclaim-6.1.txt"
NFS_SEED_CONSOLE = FIX / "nfs-rx-refill-reclaim-console-6.1.log"
# results/20261126-095407-tb32b786/fault-ipsec-ikev2: charon and swanctl stuck faulting pages in
IKEV2 = FIX / "ipsec-ikev2-charon-swapin-6.1.txt"
# results/20261126-095652-tb8bb679/fault-dhcp-renew: udhcpc (named busybox) and tb-work in swap-in
DHCP = FIX / "dhcp-renew-udhcpc-swapin-6.1.txt"
# results/20261126-102020-tb75f98e/fault-ipsec: tb-work alone in swap-in
IPSEC_STATIC = FIX / "ipsec-static-swapin-6.1.txt"


def by_pid(path: Path) -> dict[int, BlockedTask]:
    return {t.pid: t for t in parse_blocked(path.read_text())}


# --- the committed dumps ------------------------------------------------------------------------

@pytest.mark.parametrize("path", [NFS_SEED, NFS_SEED_CONSOLE])
def test_nfs_seed_dump_tasks_and_classes(path: Path) -> None:
    tasks = parse_blocked(path.read_text())
    assert [(t.name, t.pid) for t in tasks] == [("tb-agent", 1), ("kworker/0:1", 17), ("kswapd0", 37),
                                               ("kworker/0:2", 46), ("tb-work", 134)]
    t = {t.pid: t for t in tasks}
    assert all(x.state == "D" for x in tasks)
    assert t[17].workqueue == "events refill_work [virtio_net]"
    assert t[46].workqueue == "events fill_page_cache_func"  # RCU's kfree page cache refill, also in reclaim
    assert t[1].workqueue is None
    assert t[17].classes == ("direct-reclaim", "mempool-wait", "swap-writeback", "net-rx-refill")
    assert t[37].classes == ("kswapd", "mempool-wait", "swap-writeback")
    assert t[46].classes == ("direct-reclaim", "mempool-wait", "swap-writeback")
    assert t[134].classes == ("direct-reclaim", "reclaim-throttle")
    assert t[1].classes == ("direct-reclaim", "reclaim-throttle", "virtio-console")
    assert all(on_path(x) for x in tasks if x.name != "tb-agent")
    assert not on_path(t[1])  # the testbed's own agent waits in reclaim too, and never decides
    assert t[17].ppid == 2 and t[134].ppid == 1


def test_frames_are_reliable_names_innermost_first() -> None:
    t = by_pid(NFS_SEED)
    assert t[17].frames[:6] == ("__schedule", "schedule", "schedule_timeout", "io_schedule_timeout",
                                "mempool_alloc", "__swap_writepage")
    # clone suffixes gone, module suffix gone, the `? refill_work+0x2a` stale entry dropped
    assert "__alloc_pages_slowpath" in t[17].frames
    assert t[17].frames.count("refill_work") == 1
    assert t[17].frames[-5:] == ("refill_work", "process_one_work", "worker_thread", "kthread", "ret_from_fork")
    assert "cpuusage_read" not in t[37].frames  # `? cpuusage_read` is a stale address
    assert "alloc_buf" in t[1].frames and "apparmor_file_permission" not in t[1].frames
    assert not any("+" in f or " " in f for x in t.values() for f in x.frames)


def test_ikev2_dump_charon_threads_and_exiting_swanctl() -> None:
    tasks = parse_blocked(IKEV2.read_text())
    assert [(t.name, t.pid) for t in tasks] == [
        ("charon", 142), ("charon", 143), ("charon", 152), ("charon", 153), ("charon", 155),
        ("tb-work", 156), ("swanctl", 166), ("swanctl", 167), ("swanctl", 169)]
    assert {t.classes for t in tasks} == {("swap-in", "page-lock")}
    t = {t.pid: t for t in tasks}
    # a fault in kernel mode: the frames after the register dump (the interrupted kernel code) are kept
    assert t[143].frames[-5:] == ("__rseq_handle_notify_resume", "exit_to_user_mode_prepare",
                                  "syscall_exit_to_user_mode", "do_syscall_64", "entry_SYSCALL_64_after_hwframe")
    # swanctl was killed and faults its robust futex list in while exiting
    assert ("futex_cleanup", "futex_exit_release", "exit_mm_release", "do_exit") == t[166].frames[11:15]
    assert "handle_mm_fault" in t[169].frames and "do_fault" not in t[169].frames  # `? do_fault` dropped
    assert "__get_user_8" not in t[143].frames  # the RIP line is a register, not a frame


def test_dhcp_and_static_ipsec_dumps() -> None:
    dhcp = parse_blocked(DHCP.read_text())
    assert [(t.name, t.pid, t.classes) for t in dhcp] == [("busybox", 133, ("swap-in", "page-lock")),
                                                          ("tb-work", 137, ("swap-in", "page-lock"))]
    static = parse_blocked(IPSEC_STATIC.read_text())
    assert [(t.name, t.pid, t.classes) for t in static] == [("tb-work", 134, ("swap-in", "page-lock"))]
    assert static[0].frames[3:6] == ("folio_wait_bit_common", "__folio_lock_or_retry", "do_swap_page")


# --- formats and noise ----------------------------------------------------------------------------

V510 = """\
[  301.100000] sysrq: Show Blocked State
[  301.100100] task:kworker/0:1     state:D stack:    0 pid:   17 ppid:     2 flags:0x00004000
[  301.100200] Workqueue: events refill_work [virtio_net]
[  301.100300] Call Trace:
[  301.100400]  __schedule+0x2ad/0x830
[  301.100500]  schedule+0x4c/0xc0
[  301.100600]  io_schedule_timeout+0x4c/0x80
[  301.100700]  mempool_alloc+0x15b/0x1a0
[  301.100800]  ? __wake_up_common_lock+0x8a/0xc0
[  301.100900]  __swap_writepage+0x1de/0x470
[  301.101000]  pageout.isra.0+0xf3/0x2a0
[  301.101100]  shrink_page_list+0x9e1/0xc40
[  301.101200]  try_to_free_pages+0xd7/0x1f0
[  301.101300]  __alloc_pages_slowpath.constprop.0+0x3c3/0xcf0
[  301.101400]  try_fill_recv+0x2cb/0x700 [virtio_net]
[  301.101500]  refill_work+0x7c/0xe0 [virtio_net]
[  301.101600]  process_one_work+0x1b6/0x350
[  301.101700] task:tb-work         state:D stack:    0 pid:  134 ppid:     1 flags:0x00004000
[  301.101800] Call Trace:
[  301.101900]  __schedule+0x2ad/0x830
[  301.102000]  io_schedule+0x12/0x40
[  301.102100]  wait_on_page_bit_common+0x11e/0x3a0
[  301.102200]  __lock_page_or_retry+0x158/0x190
[  301.102300]  do_swap_page+0x3b4/0x7c0
"""


def test_510_format_without_task_markers() -> None:
    tasks = parse_blocked(V510)
    assert [(t.name, t.pid, t.ppid) for t in tasks] == [("kworker/0:1", 17, 2), ("tb-work", 134, 1)]
    assert tasks[0].classes == ("direct-reclaim", "mempool-wait", "swap-writeback", "net-rx-refill")
    assert "pageout" in tasks[0].frames and "__wake_up_common_lock" not in tasks[0].frames
    assert tasks[1].classes == ("swap-in", "page-lock")


def test_pre_510_format() -> None:
    text = ("[  12.000000] sysrq: SysRq : Show Blocked State\n"
            "[  12.000001]   task                        PC stack   pid father\n"
            "[  12.000002] tb-work         D    0   134      1 0x00000000\n"
            "[  12.000003] Call Trace:\n"
            "[  12.000004]  __schedule+0x2a2/0x870\n"
            "[  12.000005]  ? bit_wait+0x60/0x60\n"
            "[  12.000006]  rpc_wait_bit_killable+0x1e/0x90 [sunrpc]\n"
            "[  12.000007]  __rpc_execute+0x10d/0x440 [sunrpc]\n"
            "[  12.000008]  nfs_swap_rw+0x3b/0x60 [nfs]\n"
            "[  12.000009] kswapd0         D    0    37      2 0x80000000\n"
            "[  12.000010] Call Trace:\n"
            "[  12.000011]  [<ffffffff8106b1f5>] __schedule+0x2a2/0x870\n"
            "[  12.000012]  [<ffffffff8106b1f5>] ? wake_up_bit+0x20/0x20\n"
            "[  12.000013]  [<ffffffff8106b1f5>] balance_pgdat+0x1f0/0x4c0\n")
    tasks = parse_blocked(text)
    assert [(t.name, t.pid, t.state, t.ppid) for t in tasks] == [("tb-work", 134, "D", 1), ("kswapd0", 37, "D", 2)]
    assert tasks[0].frames == ("__schedule", "rpc_wait_bit_killable", "__rpc_execute", "nfs_swap_rw")
    assert tasks[0].classes == ("nfs-rpc",)
    assert tasks[1].frames == ("__schedule", "balance_pgdat") and tasks[1].classes == ("kswapd",)


def test_66_format_with_tgid_and_build_ids_and_no_timestamps() -> None:
    text = ("sysrq: Show Blocked State\n"
            "task:iscsid          state:D stack:0     pid:301   tgid:300   ppid:1      flags:0x00000002\n"
            "Call Trace:\n <TASK>\n"
            " __schedule+0x3a1/0xa50\n"
            " io_schedule+0x46/0x70\n"
            " blk_mq_get_tag+0x11d/0x2b0\n"
            " __blk_mq_alloc_requests+0x191/0x2d0\n"
            " iscsi_queuecommand+0x1a/0x40 [libiscsi 0123456789abcdef0123456789abcdef01234567]\n"
            " </TASK>\n")
    [t] = parse_blocked(text)
    assert (t.name, t.pid, t.ppid) == ("iscsid", 301, 1)
    assert t.frames[-1] == "iscsi_queuecommand"
    assert t.classes == ("iscsi", "block-io")


def test_console_noise_interleaved_and_a_warning_trace_not_attached() -> None:
    text = ("[   50.0] nfs: server 10.201.0.2 not responding, still trying\n"
            "[   51.0] sysrq: Show Blocked State\n"
            "[   51.1] task:tb-work         state:D stack:0     pid:134   ppid:1      flags:0x00004000\n"
            "[   51.2] Call Trace:\n"
            "[   51.3]  <TASK>\n"
            "[   51.4]  __schedule+0x34d/0x9e0\n"
            "[   51.5] nfs: server 10.201.0.2 not responding, still trying\n"
            "<4>[   51.6]  do_swap_page+0x58c/0x9f0\n"
            "[   51.7] RIP: 0033:0x40121c\r\n"
            "[   51.8] RSP: 002b:00007ffd523fdd30 EFLAGS: 00000206\n"
            "[   51.9]  </TASK>\n"
            "[   52.0]  pageout+0xd1/0x250\n"  # after </TASK>: belongs to no task
            "[   52.1] kswapd0: page allocation failure: order:0, mode:0xa20(GFP_ATOMIC)\n"
            "[   52.2] CPU: 0 PID: 37 Comm: kswapd0 Not tainted 6.1.0-50-amd64 #1\n"
            "[   52.3] Call Trace:\n"
            "[   52.4]  mempool_alloc+0x85/0x1b0\n"
            "[   52.5] task:kswapd0         state:D stack:0     pid:37    ppid:2      flags:0x00004000\n"
            "[   52.6] Call Trace:\n"
            "[   52.7]  __schedule+0x34d/0x9e0\n"
            "[   52.8]  balance_pgdat+0x37a/0xa40\n"
            "[   52.9] CPU: 0 PID: 17 Comm: kworker/0:1 Not tainted 6.1.0-50-amd64 #1\n"
            "[   53.0] Call Trace:\n"
            "[   53.1]  try_fill_recv+0x301/0x7f0 [virtio_net]\n")
    tasks = parse_blocked(text)
    assert [(t.name, t.frames) for t in tasks] == [("tb-work", ("__schedule", "do_swap_page")),
                                                  ("kswapd0", ("__schedule", "balance_pgdat"))]
    assert tasks[1].classes == ("kswapd",)


def test_second_dump_replaces_the_first() -> None:
    first = NFS_SEED.read_text().split("sysrq: Show Memory")[0]
    second = IPSEC_STATIC.read_text()
    tasks = parse_blocked(first + second)
    assert [(t.name, t.pid) for t in tasks] == [("tb-work", 134)]
    assert tasks[0].classes == ("swap-in", "page-lock")


def test_hung_task_reports_without_a_sysrq_header_latest_per_pid() -> None:
    report = ("[  {t}] INFO: task tb-work:134 blocked for more than 120 seconds.\n"
              "[  {t}] task:tb-work         state:D stack:0     pid:134   ppid:1      flags:0x00004000\n"
              "[  {t}] Call Trace:\n[  {t}]  <TASK>\n[  {t}]  {f}+0x1/0x2\n[  {t}]  </TASK>\n")
    text = report.format(t="242.0", f="balance_dirty_pages") + report.format(t="363.0", f="do_swap_page")
    [t] = parse_blocked(text)
    assert t.frames == ("do_swap_page",)


def test_header_only_and_empty_text() -> None:
    assert parse_blocked("[   67.527101] sysrq: Show Blocked State\n") == []
    assert parse_blocked("") == []
    assert parse_memory("") is None
    assert parse_memory("[   67.527101] sysrq: Show Blocked State\n") is None
    assert parse_zoneinfo("") == ()
    e = read_evidence("")
    assert e.blocked == () and e.memory is None and e.on_path == ()


# --- classes ----------------------------------------------------------------------------------------

def task(*frames: str, name: str = "t", workqueue: str | None = None) -> BlockedTask:
    return BlockedTask(name, 9, "D", workqueue, frames)


@pytest.mark.parametrize("frames, name, wq, expected", [
    (("mutex_lock",), "t", None, ("lock",)),
    (("rwsem_down_read_slowpath", "down_read"), "t", None, ("lock",)),
    (("balance_dirty_pages", "balance_dirty_pages_ratelimited_flags"), "t", None, ("writeback-throttle",)),
    (("wb_wait_for_completion",), "t", None, ("writeback-throttle",)),
    (("__folio_lock",), "t", None, ("page-lock",)),
    (("schedule", "balance_pgdat", "kswapd", "kthread"), "kswapd0", None, ("kswapd",)),
    (("schedule",), "kswapd0", None, ()),  # by its stack, not its name
    (("schedule", "kswapd", "kthread"), "renamed", None, ("kswapd",)),
    (("schedule",), "kworker/0:1", "events refill_work [virtio_net]", ("net-rx-refill",)),
    (("aoecmd_ata_rw",), "t", None, ("aoe",)),
    (("submit_bio_noacct", "scsi_queue_rq"), "t", None, ("block-io",)),
    (("mempool_alloc_noprof", "swap_writepage_bdev_async"), "t", None, ("mempool-wait", "swap-writeback")),
    (("xprt_reserve", "__read_swap_cache_async"), "t", None, ("swap-in", "nfs-rpc")),
    (("port_fops_write",), "tb-agent", None, ("virtio-console",)),
    (("schedule", "do_nanosleep"), "t", None, ()),
])
def test_classify_rules(frames: tuple[str, ...], name: str, wq: str | None, expected: tuple[str, ...]) -> None:
    assert classify(task(*frames, name=name, workqueue=wq)) == expected


def test_on_path() -> None:
    assert not on_path(task("mutex_lock"))
    assert not on_path(task("folio_wait_bit_common"))
    assert not on_path(task("port_fops_write"))
    assert not on_path(task("schedule"))
    assert on_path(task("folio_wait_bit_common", "do_swap_page"))
    assert on_path(task("mutex_lock", "try_to_free_pages"))
    assert not on_path(task("schedule", name="kswapd0"))  # a name alone puts nothing on the path
    assert on_path(task("schedule", "kswapd", name="kswapd0"))
    assert not on_path(task("mutex_lock", "try_to_free_pages", name="tb-agent"))  # the testbed's agent never decides


# --- memory -----------------------------------------------------------------------------------------

def test_memory_of_the_nfs_seed_dump() -> None:
    m = parse_memory(NFS_SEED.read_text())
    assert m is not None and m.page_kb == 4
    dma, dma32 = m.zone("DMA"), m.zone("DMA32")
    assert (dma.free_kb, dma.boost_kb, dma.min_kb, dma.low_kb, dma.high_kb) == (252, 2048, 2284, 2340, 2396)
    assert (dma32.free_kb, dma32.boost_kb, dma32.min_kb, dma32.low_kb, dma32.high_kb) == (712, 2048, 2844, 3040, 3236)
    assert dma32.managed_kb == 64540 and m.zone("Normal") is None
    assert [z.zone for z in m.below_min()] == ["DMA", "DMA32"]
    assert m.free_kb == 241 * 4 == dma.free_kb + dma32.free_kb
    assert m.free_pcp_kb == 8
    assert (m.active_anon_kb, m.inactive_anon_kb, m.anon_kb) == (1502 * 4, 8739 * 4, 10241 * 4)
    assert (m.writeback_kb, m.dirty_kb) == (1596 * 4, 0)
    assert (m.slab_reclaimable_kb, m.slab_unreclaimable_kb) == (2902 * 4, 2493 * 4)
    assert (m.swap_free_kb, m.swap_total_kb, m.swap_cache_kb) == (220672, 262140, 10271 * 4)


def test_memory_takes_the_last_mem_info() -> None:
    # the console also holds a page allocation failure's Mem-Info at 7.39 s (DMA32 free 148 kB)
    m = parse_memory(NFS_SEED_CONSOLE.read_text())
    assert m.zone("DMA32").free_kb == 712 and m.writeback_kb == 6384
    early = NFS_SEED_CONSOLE.read_text().split("sysrq: Show Blocked State")[0]
    assert parse_memory(early).zone("DMA32").free_kb == 148


def test_memory_of_the_fault_dumps_is_above_the_watermarks() -> None:
    for path, free32, writeback in [(IKEV2, 14120, 0), (DHCP, 12208, 1663 * 4), (IPSEC_STATIC, 12420, 1417 * 4)]:
        m = parse_memory(path.read_text())
        assert m.zone("DMA32").free_kb == free32
        assert (m.zone("DMA32").min_kb, m.zone("DMA32").boost_kb) == (6616, 0)  # vm.min_free_kbytes=8192
        assert m.below_min() == ()
        assert m.writeback_kb == writeback


ZONEINFO_61 = """\
Node 0, zone      DMA
  per-node stats
      nr_inactive_anon 2278
      nr_active_anon 150
      nr_dirty     0
      nr_writeback 0
  pages free     3084
        boost    0
        min      393
        low      491
        high     589
        spanned  4095
        present  3998
        managed  3840
        cma      0
        protection: (0, 50, 50, 50, 50)
      nr_free_pages 3084
      nr_zone_inactive_anon 0
  pagesets
    cpu: 0
              count: 6
              high:  0
              batch: 1
  vm stats threshold: 2
  node_unreclaimable:  0
  start_pfn:           1
Node 0, zone    DMA32
  pages free     3530
        boost    512
        min      1654
        low      2067
        high     2480
        spanned  28672
        present  28637
        managed  16135
        cma      0
        protection: (0, 0, 0, 0, 0)
      nr_free_pages 3530
  pagesets
    cpu: 0
              count: 110
              high:  180
              batch: 3
  vm stats threshold: 6
  node_unreclaimable:  0
  start_pfn:           4096
Node 0, zone   Normal
  pages free     0
        boost    0
        min      0
        low      0
        high     0
        spanned  0
        present  0
        managed  0
        cma      0
        protection: (0, 0, 0, 0, 0)
Node 0, zone  Movable
  pages free     0
        boost    0
        min      0
        low      0
        high     0
        spanned  0
        present  0
        managed  0
        protection: (0, 0, 0, 0, 0)
"""


def test_zoneinfo_61() -> None:
    zones = parse_zoneinfo(ZONEINFO_61)
    assert [(z.node, z.zone) for z in zones] == [(0, "DMA"), (0, "DMA32")]  # empty zones left out
    dma, dma32 = zones
    assert (dma.free_kb, dma.min_kb, dma.low_kb, dma.high_kb, dma.boost_kb, dma.managed_kb) == \
        (12336, 1572, 1964, 2356, 0, 15360)
    assert (dma32.free_kb, dma32.min_kb, dma32.low_kb, dma32.high_kb, dma32.boost_kb) == \
        (14120, 6616, 8268, 9920, 2048)  # the pagesets' `high:  180` is not the watermark
    assert parse_zoneinfo(ZONEINFO_61, page_kb=16)[0].min_kb == 393 * 16


# --- the record -------------------------------------------------------------------------------------

def test_evidence_round_trip_through_json() -> None:
    e = read_evidence(NFS_SEED.read_text(), taken_t=169.77, sources=("sysrq-client.txt", "zoneinfo-start.txt"),
                      zoneinfo=ZONEINFO_61)
    assert len(e.blocked) == 5 and e.memory is not None and len(e.watermarks) == 2
    assert [t.pid for t in e.on_path] == [17, 37, 46, 134]  # not tb-agent (pid 1)
    d = json.loads(json.dumps(e.to_dict()))
    assert d["blocked"][1]["classes"] == ["direct-reclaim", "mempool-wait", "swap-writeback", "net-rx-refill"]
    assert d["memory"]["zones"][1]["min_kb"] == 2844 and d["taken_t"] == 169.77
    back = Evidence.from_dict(d)
    assert back == e
    assert back.memory.anon_kb == e.memory.anon_kb
    assert Evidence.from_dict(json.loads(json.dumps(Evidence().to_dict()))) == Evidence()


def test_evidence_classes_are_recomputed_from_the_frames() -> None:
    d = {"blocked": [{"name": "kswapd0", "pid": 37, "state": "D", "frames": ["mempool_alloc", "__swap_writepage", "kswapd"]}]}
    [t] = Evidence.from_dict(d).blocked
    assert t.classes == ("kswapd", "mempool-wait", "swap-writeback")
    # stored classes are a cache, never an input: a task in pipe_read stored as swap-writeback is off the path
    stored = {"blocked": [{"name": "x", "pid": 1, "frames": ["pipe_read"], "classes": ["swap-writeback"]}]}
    [t] = Evidence.from_dict(stored).blocked
    assert t.classes == () and not on_path(t)
