"""Reading the evidence text: the sysrq-w blocked-task dump, the sysrq-m memory summary and
/proc/zoneinfo, into typed records, and the frame classes of a blocked task (one rule table)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from testbed.check import frames as protocol_frames

PAGE_KB = 4  # x86-64; the sysrq-m buddy lists tell the real size when they are there

# --- lines ------------------------------------------------------------------------------------

# A console line may carry a loglevel (`<4>`), a timestamp and a caller id (`[T123]`); none of them
# is part of what the kernel meant to say, and any of them may be off (printk.time=0).
PREFIX = re.compile(r"^(?:<\d+>)?(?:\[\s*\d+\.\d+\])?(?:\[\s*[TC]\d+\])?")

# 5.10: `task:kworker/0:1     state:D stack:    0 pid:   17 ppid:     2 flags:0x00004000`
# 6.1:  `task:kworker/0:1     state:D stack:0     pid:17    ppid:2      flags:0x00004000`
# 6.6+: `... pid:17    tgid:17    ppid:2      flags:...`. The name is %-15.15s and may hold spaces.
TASK_LINE = re.compile(r"^task:(?P<name>.*?)\s+state:(?P<state>\S)(?:\s+stack:\s*\d+)?\s+pid:\s*(?P<pid>\d+)"
                       r"(?:\s+tgid:\s*\d+)?(?:\s+ppid:\s*(?P<ppid>\d+))?")
# Before 5.10: `tb-work         D    0   134      1 0x00000000` (comm, state, free stack, pid, ppid, flags).
OLD_TASK_LINE = re.compile(r"^(?P<name>\S.{0,14}?)\s+(?P<state>[RSDTtXZPIKNW])\s+\d+\s+(?P<pid>\d+)\s+"
                           r"(?P<ppid>\d+)\s+0x[0-9a-f]{8,16}$")
# ` __schedule+0x34d/0x9e0`, `? cpuusage_read+0x10/0x10`, `try_fill_recv+0x301/0x7f0 [virtio_net]`,
# 3.x: `[<ffffffff8106b1f5>] ? __schedule+0x...`; 6.x with build ids: `[virtio_net 0123abcd]`.
FRAME = re.compile(r"^(?:\[<[0-9a-f]+>\]\s+)?(?P<unreliable>\?\s+)?(?P<func>[A-Za-z_][\w.]*)"
                   r"\+0x[0-9a-f]+/0x[0-9a-f]+(?:\s+\[(?P<module>[^\]]+)\])?$")
# Compiler clones (`.constprop.0`, `.isra.0`, `.part.0`, `.cold`) name the same source function;
# builds differ in which they make, so the rules match the function, not the clone.
CLONE_SUFFIX = re.compile(r"(?:\.(?:constprop|isra|part|cold|llvm|lto_priv)(?:\.\d+)?)+$")
# Lines that end the current task's trace: what follows belongs to someone else (a warning's own
# trace, the memory dump, the next sysrq).
TRACE_ENDS = re.compile(r"^(?:</TASK>|sysrq: |SysRq : |Mem-Info:|CPU: \d+ PID: \d+ |INFO: task |Show Memory)")


def strip_prefix(line: str) -> str:
    return PREFIX.sub("", line.rstrip("\r\n")).strip()


# --- blocked tasks ----------------------------------------------------------------------------

@dataclass(frozen=True)
class BlockedTask:
    name: str
    pid: int
    state: str
    workqueue: str | None = None  # `events refill_work [virtio_net]`: the queue and the work function
    frames: tuple[str, ...] = ()  # reliable frames only, innermost first, without offsets or clone suffixes
    classes: tuple[str, ...] = ()  # from classify(), in class_rules() order
    ppid: int | None = None

    @property
    def label(self) -> str:
        return f"{self.name} (pid {self.pid})"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "state": self.state, "workqueue": self.workqueue,
                "frames": list(self.frames), "classes": list(self.classes), "ppid": self.ppid}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BlockedTask:
        task = cls(name=d["name"], pid=int(d["pid"]), state=d.get("state", "D"), workqueue=d.get("workqueue"),
                   frames=tuple(d.get("frames", ())), ppid=d.get("ppid"))
        # The classes are recomputed from the frames by today's rules: stored ones are a cache, never an input.
        return replace(task, classes=classify(task))


@dataclass
class _Building:
    name: str
    pid: int
    state: str
    ppid: int | None
    workqueue: str | None = None
    frames: list[str] = field(default_factory=list)

    def done(self) -> BlockedTask:
        task = BlockedTask(self.name, self.pid, self.state, self.workqueue, tuple(self.frames), ppid=self.ppid)
        return replace(task, classes=classify(task))


def _task_header(rest: str) -> _Building | None:
    m = TASK_LINE.match(rest) or OLD_TASK_LINE.match(rest)
    if not m:
        return None
    ppid = m.group("ppid")
    return _Building(m.group("name").strip(), int(m.group("pid")), m.group("state"), int(ppid) if ppid else None)


def parse_blocked(text: str) -> list[BlockedTask]:
    """The blocked tasks of the last sysrq-w dump in `text` (the state at the stall), or, if the text
    holds no sysrq-w header (hung-task reports only), every task reported, latest report per pid.

    `? ` frames are dropped: they are stale return addresses the unwinder found by scanning the stack,
    not calls in progress (tb4af7aa's kworker shows `? refill_work` beside the real one, swanctl shows
    `? handle_mm_fault` from an earlier fault), and classifying on them would invent waits."""
    dumps: list[list[BlockedTask]] = []  # one per `Show Blocked State` header
    loose: list[BlockedTask] = []  # reports before any header
    cur: _Building | None = None

    def close() -> None:
        nonlocal cur
        if cur is not None:
            (dumps[-1] if dumps else loose).append(cur.done())
            cur = None

    for raw in text.splitlines():
        rest = strip_prefix(raw)
        if not rest:
            continue
        if "Show Blocked State" in rest:
            close()
            dumps.append([])
            continue
        header = _task_header(rest)
        if header is not None:
            close()
            cur = header
            continue
        if cur is None:
            continue
        if TRACE_ENDS.match(rest):
            close()
        elif rest.startswith("Workqueue:"):
            cur.workqueue = rest.removeprefix("Workqueue:").strip()
        elif rest.startswith("Call Trace:") and cur.frames:
            close()  # a second trace inside one task is another report (a warning) cutting in
        elif m := FRAME.match(rest):
            if not m.group("unreliable"):
                cur.frames.append(CLONE_SUFFIX.sub("", m.group("func")))
        # anything else (registers, `<TASK>`, `Code:`, other kernel messages) is not this task's trace
    close()
    if dumps:
        return dumps[-1]
    latest = {t.pid: t for t in loose}  # later reports replace earlier ones, in the order last seen
    return sorted(latest.values(), key=lambda t: max(i for i, u in enumerate(loose) if u.pid == t.pid))


# --- classes ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassRule:
    cls: str
    frames: tuple[str, ...]  # regular expressions, each matched against a whole function name
    description: str
    workqueue: str | None = None  # or its `Workqueue:` line contains this

    def matches(self, task: BlockedTask) -> bool:
        if self.workqueue and task.workqueue and self.workqueue in task.workqueue:
            return True
        return any(re.fullmatch(p, f) for p in self.frames for f in task.frames)


# Ordered: classify() reports classes in this order, the protocols' own classes (testbed/check/frames.py,
# declared by each protocol) between swap-in and block I/O. Patterns cover 5.10 (page) and 6.x (folio,
# `_noprof`) names; a frame may give several classes (throttle_direct_reclaim is both reclaim and throttle).
_BEFORE_PROTOCOLS: tuple[ClassRule, ...] = (
    ClassRule("direct-reclaim", ("try_to_free_pages", "do_try_to_free_pages", "__alloc_pages_slowpath",
                                 "__alloc_pages_direct_reclaim", "__perform_reclaim", "throttle_direct_reclaim"),
              "allocating memory and reclaiming it itself"),
    ClassRule("reclaim-throttle", ("throttle_direct_reclaim", "reclaim_throttle"),
              "direct reclaim put to sleep until kswapd restores the reserves"),
    ClassRule("kswapd", ("kswapd", "balance_pgdat", "kswapd_shrink_node", "kswapd_try_to_sleep"),
              "the reclaim thread itself (by its stack, not its name)"),
    ClassRule("mempool-wait", (r"mempool_alloc(?:_noprof)?",),
              "waiting for an element of an exhausted mempool (it comes back only when I/O completes)"),
    ClassRule("swap-writeback", ("__swap_writepage", "swap_writepage", "swap_writepage_fs", r"swap_writepage_bdev\w*",
                                 "swap_writeout", "pageout"),
              "writing a page out to swap"),
    ClassRule("swap-in", ("do_swap_page", "swap_readpage", r"swap_read_folio\w*", "swapin_readahead",
                          "swap_cluster_readahead", "swap_vma_readahead", r"_*read_swap_cache_async"),
              "faulting a swapped-out page back in"),
)

_AFTER_PROTOCOLS: tuple[ClassRule, ...] = (
    ClassRule("block-io", (r"_*scsi_\w+", "blk_mq_get_tag", r"_*submit_bio\w*", "blk_mq_submit_bio",
                           r"_*blk_mq_alloc_request\w*"),
              "inside block I/O submission (request tags, the SCSI midlayer)"),
    ClassRule("net-rx-refill", ("try_fill_recv", "refill_work", r"add_recvbuf_\w+"),
              "refilling virtio-net's receive ring", workqueue="refill_work"),
    ClassRule("writeback-throttle", (r"balance_dirty_pages\w*", "wb_wait_for_completion"),
              "a writer held back until dirty pages are written"),
    ClassRule("page-lock", ("folio_wait_bit_common", "folio_wait_bit", r"_*folio_lock\w*", "wait_on_page_bit_common",
                            r"_*lock_page\w*"),
              "waiting for a page lock (a page under read I/O is locked until the read completes)"),
    ClassRule("lock", (r"_*mutex_lock\w*", r"rwsem_down_\w+", r"down_(?:read|write)\w*", r"_*down",
                       r"__down_\w+", "down_interruptible", "down_killable"),
              "waiting for a sleeping lock"),
    ClassRule("virtio-console", ("port_fops_write", "wait_port_writable"),
              "writing to a virtio console port (the testbed agent's telemetry)"),
)


def class_rules() -> tuple[ClassRule, ...]:
    """Every class rule in order: the generic ones and the registered protocols' frame classes."""
    return (*_BEFORE_PROTOCOLS, *(ClassRule(c.name, c.frames, c.describes) for c in protocol_frames.frame_classes()),
            *_AFTER_PROTOCOLS)


def storage_classes() -> frozenset[str]:
    """Classes of a task inside the storage's own code: the protocols' and block I/O."""
    return frozenset({*(c.name for c in protocol_frames.frame_classes()), "block-io"})


# A lock or a page lock alone could be anything (a file read, a config mutex), and a virtio-console
# write is the testbed's own telemetry: none of these alone puts a task on the memory/storage path.
OFF_PATH_CLASSES = frozenset({"lock", "page-lock", "virtio-console"})


def classify(task: BlockedTask) -> tuple[str, ...]:
    """The classes of a task's reliable frames (and its name and workqueue), in class_rules() order."""
    return tuple(r.cls for r in class_rules() if r.matches(task))


# The testbed's own guest processes: what they wait on is reported, never the verdict's evidence.
TESTBED_TASKS = frozenset({"tb-agent"})


def on_path(task: BlockedTask) -> bool:
    """The task waits in memory reclaim, swap or storage I/O itself (not only on a lock, a page lock
    or the agent's console port); it may be a victim, not the cause. The testbed's agent never counts."""
    return task.name not in TESTBED_TASKS and bool(set(task.classes or classify(task)) - OFF_PATH_CLASSES)


# --- memory -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ZoneWatermarks:
    node: int
    zone: str
    free_kb: int
    min_kb: int
    low_kb: int
    high_kb: int
    boost_kb: int | None = None  # absent before 5.0; the printed min/low/high already include it
    managed_kb: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "zone": self.zone, "free_kb": self.free_kb, "min_kb": self.min_kb,
                "low_kb": self.low_kb, "high_kb": self.high_kb, "boost_kb": self.boost_kb,
                "managed_kb": self.managed_kb}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ZoneWatermarks:
        return cls(**{k: d.get(k) for k in ("node", "zone", "free_kb", "min_kb", "low_kb", "high_kb",
                                            "boost_kb", "managed_kb")})


# Mem-Info counters are pages; these are the ones kept, as kB.
MEMINFO_KEYS = ("free", "free_pcp", "active_anon", "inactive_anon", "dirty", "writeback",
                "slab_reclaimable", "slab_unreclaimable")


@dataclass(frozen=True)
class MemorySummary:
    zones: tuple[ZoneWatermarks, ...] = ()
    free_kb: int | None = None
    free_pcp_kb: int | None = None
    active_anon_kb: int | None = None
    inactive_anon_kb: int | None = None
    dirty_kb: int | None = None
    writeback_kb: int | None = None
    slab_reclaimable_kb: int | None = None
    slab_unreclaimable_kb: int | None = None
    swap_free_kb: int | None = None
    swap_total_kb: int | None = None
    swap_cache_kb: int | None = None
    page_kb: int = PAGE_KB

    @property
    def anon_kb(self) -> int | None:
        if self.active_anon_kb is None or self.inactive_anon_kb is None:
            return None
        return self.active_anon_kb + self.inactive_anon_kb

    def zone(self, name: str, node: int = 0) -> ZoneWatermarks | None:
        return next((z for z in self.zones if z.zone == name and z.node == node), None)

    def below_min(self) -> tuple[ZoneWatermarks, ...]:
        return tuple(z for z in self.zones if z.free_kb < z.min_kb)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: getattr(self, k) for k in self._scalars()}
        d["zones"] = [z.to_dict() for z in self.zones]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemorySummary:
        return cls(zones=tuple(ZoneWatermarks.from_dict(z) for z in d.get("zones", ())),
                   **{k: d[k] for k in cls._scalars() if k in d})

    @staticmethod
    def _scalars() -> tuple[str, ...]:
        return tuple(f"{k}_kb" for k in MEMINFO_KEYS) + ("swap_free_kb", "swap_total_kb", "swap_cache_kb", "page_kb")


ZONE_LINE = re.compile(r"^Node (?P<node>\d+) (?P<zone>\w+) free:(?P<free>\d+)kB(?P<rest>.*)$")
KB_FIELD = re.compile(r"(\w+):(\d+)kB")
PAGES_FIELD = re.compile(r"(\w+):(\d+)(?![\w.])")
BUDDY_LINE = re.compile(r"^Node \d+ \w+: (?:\d+\*(?P<kb>\d+)kB)")


def parse_memory(text: str) -> MemorySummary | None:
    """The last Mem-Info block in `text` (a page allocation failure prints one too; the sysrq-m one
    comes last), or None when there is none."""
    lines = [strip_prefix(raw) for raw in text.splitlines()]
    starts = [i for i, rest in enumerate(lines) if rest.startswith("Mem-Info:")]
    if not starts:
        return None
    block = lines[starts[-1] + 1:]
    pages: dict[str, int] = {}
    zones: dict[tuple[int, str], ZoneWatermarks] = {}
    page_kb = PAGE_KB
    swap: dict[str, int] = {}
    in_counters = True  # the page counters come first, until the first `Node` line
    for rest in block:
        if rest.startswith(("Mem-Info:", "sysrq: ", "task:")):
            break  # the next report
        if rest.startswith("Node "):
            in_counters = False
            if m := ZONE_LINE.match(rest):
                kb = {k: int(v) for k, v in KB_FIELD.findall(m.group("rest"))}
                if {"min", "low", "high"} <= kb.keys():
                    node, zone = int(m.group("node")), m.group("zone")
                    zones[(node, zone)] = ZoneWatermarks(node, zone, int(m.group("free")), kb["min"], kb["low"],
                                                         kb["high"], kb.get("boost"), kb.get("managed"))
            elif (b := BUDDY_LINE.match(rest)) and b.group("kb"):
                page_kb = int(b.group("kb"))  # the smallest buddy block is one page
        elif in_counters:
            pages.update((k, int(v)) for k, v in PAGES_FIELD.findall(rest) if k in MEMINFO_KEYS)
        elif m := re.match(r"^(Free|Total) swap\s*=\s*(\d+)kB", rest):
            swap[f"swap_{m.group(1).lower()}_kb"] = int(m.group(2))
        elif m := re.match(r"^(\d+) pages in swap cache", rest):
            swap["swap_cache_pages"] = int(m.group(1))
    if not pages and not zones:
        return None
    cache = swap.pop("swap_cache_pages", None)
    return MemorySummary(zones=tuple(zones.values()), page_kb=page_kb,
                         swap_cache_kb=None if cache is None else cache * page_kb, **swap,
                         **{f"{k}_kb": v * page_kb for k, v in pages.items()})


ZONEINFO_ZONE = re.compile(r"^Node (?P<node>\d+), zone\s+(?P<zone>\w+)")
ZONEINFO_FIELD = re.compile(r"^(?P<key>pages free|boost|min|low|high|spanned|present|managed)\s+(?P<n>\d+)$")


def parse_zoneinfo(text: str, page_kb: int = PAGE_KB) -> tuple[ZoneWatermarks, ...]:
    """Each populated zone's free pages and watermarks from /proc/zoneinfo, as kB. Zones with no pages
    present are left out, as sysrq-m leaves them out, so the two compare zone for zone."""
    out: list[ZoneWatermarks] = []
    cur: tuple[int, str] | None = None
    vals: dict[str, int] = {}

    def close() -> None:
        if cur and vals.get("present", 1) > 0 and {"pages free", "min", "low", "high"} <= vals.keys():
            out.append(ZoneWatermarks(cur[0], cur[1], vals["pages free"] * page_kb, vals["min"] * page_kb,
                                      vals["low"] * page_kb, vals["high"] * page_kb,
                                      vals["boost"] * page_kb if "boost" in vals else None,
                                      vals["managed"] * page_kb if "managed" in vals else None))

    for raw in text.splitlines():
        line = raw.strip()
        if m := ZONEINFO_ZONE.match(line):
            close()
            cur, vals = (int(m.group("node")), m.group("zone")), {}
        elif cur and (m := ZONEINFO_FIELD.match(line)):
            # only the first of each: the pagesets' `high:` has a colon and does not match anyway
            vals.setdefault(m.group("key"), int(m.group("n")))
    close()
    return tuple(out)


# --- the record -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Evidence:
    blocked: tuple[BlockedTask, ...] = ()
    memory: MemorySummary | None = None
    watermarks: tuple[ZoneWatermarks, ...] = ()  # /proc/zoneinfo read at the start of the case
    taken_t: float | None = None  # case time (s) the dump was asked for; the runner fills it
    sources: tuple[str, ...] = ()  # the files it was read from, relative to the case folder

    @property
    def on_path(self) -> tuple[BlockedTask, ...]:
        return tuple(t for t in self.blocked if on_path(t))

    def to_dict(self) -> dict[str, Any]:
        return {"blocked": [t.to_dict() for t in self.blocked],
                "memory": self.memory.to_dict() if self.memory else None,
                "watermarks": [z.to_dict() for z in self.watermarks],
                "taken_t": self.taken_t, "sources": list(self.sources)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evidence:
        mem = d.get("memory")
        return cls(blocked=tuple(BlockedTask.from_dict(t) for t in d.get("blocked", ())),
                   memory=MemorySummary.from_dict(mem) if mem else None,
                   watermarks=tuple(ZoneWatermarks.from_dict(z) for z in d.get("watermarks", ())),
                   taken_t=d.get("taken_t"), sources=tuple(d.get("sources", ())))


def read_evidence(text: str, *, taken_t: float | None = None, sources: tuple[str, ...] = (),
                  zoneinfo: str | None = None) -> Evidence:
    """Evidence from a saved console excerpt (sysrq w then m) and, if read, the case's start zoneinfo."""
    return Evidence(blocked=tuple(parse_blocked(text)), memory=parse_memory(text),
                    watermarks=parse_zoneinfo(zoneinfo) if zoneinfo else (), taken_t=taken_t, sources=sources)
