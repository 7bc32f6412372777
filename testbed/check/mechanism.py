"""Naming the mechanism of a stall from the evidence: one ordered table of rules over the blocked
tasks, the memory summary and the runner's facts; the first that holds names it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from testbed.check import frames as protocol_frames
from testbed.check.evidence import BlockedTask, Evidence, MemorySummary, storage_classes
from testbed.check.state import DumpState

Tasks = tuple[BlockedTask, ...]


@dataclass(frozen=True)
class StallFacts:
    """What the runner knew at a stall besides the dump (evidence.json's `facts`): the case's protocol, the
    storage-path helpers' states (name, pid, VmSwap_kB, VmLck_kB ...), and a cut of the path if one is known;
    and the guest's state from a memory dump at the stall (forensics.json: never stored here, read from it)."""

    protocol: str = ""
    helpers: tuple[dict[str, Any], ...] = ()
    path_cut: str | None = None
    state: DumpState | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> StallFacts:
        data = data or {}
        helpers = data.get("helpers")
        return cls(str(data.get("protocol") or ""),
                   tuple(h for h in helpers if isinstance(h, dict)) if isinstance(helpers, list | tuple) else (),
                   str(data["path_cut"]) if data.get("path_cut") else None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"protocol": self.protocol, "helpers": list(self.helpers)}
        if self.path_cut:
            out["path_cut"] = self.path_cut
        return out


Facts = StallFacts

# Path helpers by the kernel's name for them (a prefix, as the runner's pgrep uses), used when the runner
# gave no `helpers` fact: a case judged from an old folder still names them. The faults' helpers (IKE,
# DHCP clients) here; the protocols' own daemons come from their declarations (testbed/check/frames.py).
FAULT_HELPERS = ("charon", "udhcpc", "dhclient", "dhcpcd")
# Classes of a task waiting for memory only storage I/O can free, or on the storage itself (plus the
# protocols' own classes and block I/O: evidence.storage_classes()).
WAITS_ON_STORAGE = frozenset({"swap-in", "swap-writeback", "mempool-wait", "writeback-throttle"})


def default_helpers() -> tuple[str, ...]:
    return (*FAULT_HELPERS, *protocol_frames.helpers())


def storage_waits() -> frozenset[str]:
    return WAITS_ON_STORAGE | storage_classes()


@dataclass(frozen=True)
class Finding:
    sentence: str
    tasks: Tasks  # the tasks that decided it


@dataclass(frozen=True)
class Rule:
    name: str
    test: Callable[[Tasks, MemorySummary | None, Facts], Finding | None]
    description: str


@dataclass(frozen=True)
class Mechanism:
    name: str  # the rule's short id
    sentence: str
    tasks: tuple[tuple[str, int], ...]  # (name, pid) of the tasks that decided it
    also: tuple[str, ...] = ()  # later rules that hold too: consequences or companions, not the cause named
    notes: tuple[str, ...] = ()  # side notes (the agent's own waits), never the mechanism

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sentence": self.sentence,
                "tasks": [{"name": n, "pid": p} for n, p in self.tasks],
                "also": list(self.also), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Mechanism:
        return cls(d["name"], d["sentence"], tuple((t["name"], int(t["pid"])) for t in d.get("tasks", ())),
                   tuple(d.get("also", ())), tuple(d.get("notes", ())))


# --- wording ----------------------------------------------------------------------------------

def labels(tasks: Tasks) -> str:
    """`charon (pids 142, 143), tb-work (pid 156)`: threads of one program read as one."""
    by_name: dict[str, list[int]] = {}
    for t in tasks:
        by_name.setdefault(t.name, []).append(t.pid)
    return ", ".join(f"{n} (pid{'s' if len(p) > 1 else ''} {', '.join(map(str, p))})" for n, p in by_name.items())


def memory_note(memory: MemorySummary | None) -> str:
    """`; DMA32 free 712 kB < min 2844 kB, 6384 kB under writeback` or nothing."""
    if memory is None:
        return ""
    parts = [f"{z.zone} free {z.free_kb} kB < min {z.min_kb} kB" for z in memory.below_min()]
    if memory.writeback_kb:
        parts.append(f"{memory.writeback_kb} kB under writeback")
    return f"; {', '.join(parts)}" if parts else ""


def storage_kind(tasks: Tasks, facts: Facts) -> str | None:
    """What the waits go to: the frames say it when the task is inside the client; a swap-in or a
    mempool wait shows no protocol frame (the I/O is in flight elsewhere), so then the scenario does."""
    classes = {c for t in tasks for c in t.classes}
    kinds = [k for c in sorted(classes & storage_classes()) if (k := protocol_frames.kind_of_class(c))]
    if "block-io" in classes:
        kinds.append("block device")
    if kinds:  # a protocol's own layer says more than the block layer under it
        return next((k for k in kinds if k != "block device"), kinds[0])
    return protocol_frames.kind_of_protocol(facts.protocol)


def _with(tasks: Tasks, *classes: str) -> Tasks:
    return tuple(t for t in tasks if set(classes) <= set(t.classes))


def _kind(tasks: Tasks, facts: Facts) -> str:
    kind = storage_kind(tasks, facts)
    return f" ({kind})" if kind else ""


# --- rules ------------------------------------------------------------------------------------

def _helpers(facts: Facts) -> list[dict[str, Any]]:
    return [h for h in facts.helpers if h.get("name")]


def _is_helper(task: BlockedTask, helper: Mapping[str, Any]) -> bool:
    # by pid (the process) or by name: its other threads have their own pids, and the kernel's name
    # is the runner's pgrep prefix (a 15-character comm)
    return task.pid == helper.get("pid") or task.name.startswith(str(helper["name"])[:15])


def helper_swapped_out(tasks: Tasks, memory: MemorySummary | None, facts: Facts) -> Finding | None:
    parts, deciding = [], []
    for h in _helpers(facts):
        swap = int(h.get("VmSwap_kB") or 0)
        blocked = tuple(t for t in _with(tasks, "swap-in") if _is_helper(t, h))
        if swap > 0 and blocked:
            parts.append(f"storage-path helper {h['name']} swapped out (VmSwap {swap} kB): "
                         f"{labels(blocked)} blocked in swap-in")
            deciding += [t for t in blocked if t not in deciding]
    if not parts:
        return None
    return Finding("; ".join(parts) + ", so the path it keeps up waits on the storage it serves", tuple(deciding))


def path_cut(tasks: Tasks, memory: MemorySummary | None, facts: Facts) -> Finding | None:
    cut = facts.path_cut
    waiting = tuple(t for t in tasks if set(t.classes) & storage_waits())
    if not cut or not waiting:
        return None  # a cut nobody waits on did not make this stall
    return Finding(f"path cut ({cut}): {labels(waiting)} wait on the network storage", waiting)


def storage_socket_stuck(tasks: Tasks, memory: MemorySummary | None, facts: Facts) -> Finding | None:
    """The dump's TCP state: the storage path's memalloc socket lost segments and never sent them again."""
    state = facts.state
    waiting = tuple(t for t in tasks if set(t.classes) & storage_waits())
    if state is None or not state.stuck_senders or not waiting:
        return None
    pressure = state.counter("TCPMemoryPressures")
    memory_words = "; ".join(state.below_min) or "no zone below its minimum"
    refill = _with(tasks, "net-rx-refill", "direct-reclaim")
    rings = [r for r in state.rings if not r.empty]
    ring = (f"; the RX refill worker {labels(refill)} is in direct reclaim too, but {rings[0].words()}"
            if refill and rings else "")
    return Finding(f"the storage socket cannot retransmit: {state.stuck_senders[0]}; memory: {memory_words}"
                   f"{f', TCPMemoryPressures {pressure}' if pressure else ''}: what is lost is never sent again, so "
                   f"the writes to the storage{_kind(tasks, facts)} it carries never complete{ring}; "
                   f"waiting: {labels(waiting)}", waiting)


def rx_refill_reclaim(tasks: Tasks, memory: MemorySummary | None, facts: Facts) -> Finding | None:
    refill = tuple(t for t in _with(tasks, "net-rx-refill", "direct-reclaim")
                   if {"mempool-wait", "swap-writeback"} & set(t.classes))
    empty = facts.state.empty_rings() if facts.state else ()
    if empty:  # the dump's own state first: a receive ring with no buffer left receives nothing
        waiting = tuple(t for t in tasks if set(t.classes) & storage_waits() and t not in refill)
        if not (refill or waiting):
            return None
        who = (f"{labels(refill)} in direct reclaim waiting on swap writeback cannot refill it, and "
               if refill else "")
        return Finding(f"RX ring empty ({empty[0].words()}): {who}the replies that would complete the writes "
                       f"to the storage{_kind(tasks, facts)} cannot be received; waiting: {labels(refill + waiting)}",
                       refill + waiting)
    if not refill:
        return None
    wq = f", workqueue {refill[0].workqueue}" if refill[0].workqueue else ""
    return Finding(f"RX refill in direct reclaim waiting on swap writeback: {refill[0].name} (pid {refill[0].pid}{wq})"
                   " cannot refill the receive ring until swap writeback completes, and the replies that would"
                   f" complete it arrive through that ring{memory_note(memory)}", refill)


def reclaim_mempool(tasks: Tasks, memory: MemorySummary | None, facts: Facts) -> Finding | None:
    stuck = tuple(t for t in _with(tasks, "direct-reclaim", "mempool-wait", "swap-writeback")
                  if "kswapd" not in t.classes)
    if not stuck:
        return None
    return Finding(f"direct reclaim waiting on swap writeback to the network storage{_kind(stuck, facts)}"
                   f" (mempool exhausted): {labels(stuck)}{memory_note(memory)}", stuck)


def kswapd_writeback(tasks: Tasks, memory: MemorySummary | None, facts: Facts) -> Finding | None:
    stuck = tuple(t for t in _with(tasks, "kswapd") if set(t.classes) & storage_waits())
    if not stuck:
        return None
    return Finding(f"kswapd stuck in writeback: {labels(stuck)} waits on the network storage{_kind(stuck, facts)}"
                   f"{memory_note(memory)}", stuck)


def writeback_throttled(tasks: Tasks, memory: MemorySummary | None, facts: Facts) -> Finding | None:
    held = _with(tasks, "writeback-throttle")
    if not held:
        return None
    return Finding(f"writeback throttled (balance_dirty_pages): {labels(held)} wait for dirty pages to reach the"
                   f" storage{_kind(held, facts)}", held)


def helper_in_swap_in(tasks: Tasks, memory: MemorySummary | None, facts: Facts) -> Finding | None:
    names = [str(h["name"]) for h in _helpers(facts)] or list(default_helpers())
    blocked = tuple(t for t in _with(tasks, "swap-in") if any(t.name.startswith(n[:15]) for n in names))
    if not blocked:
        return None
    return Finding(f"storage-path helper blocked in swap-in: {labels(blocked)} wait for their own pages from the"
                   f" storage{_kind(tasks, facts)} whose path they keep up", blocked)


def swap_in_wait(tasks: Tasks, memory: MemorySummary | None, facts: Facts) -> Finding | None:
    waiting = _with(tasks, "swap-in")
    if not waiting:
        return None
    return Finding(f"swap-in waiting on the network storage{_kind(tasks, facts)}: {labels(waiting)}", waiting)


def storage_wait(tasks: Tasks, memory: MemorySummary | None, facts: Facts) -> Finding | None:
    waiting = tuple(t for t in tasks if set(t.classes) & storage_classes())
    if not waiting:
        return None
    return Finding(f"I/O waiting on the network storage{_kind(waiting, facts)}: {labels(waiting)}", waiting)


def reclaim_throttled(tasks: Tasks, memory: MemorySummary | None, facts: Facts) -> Finding | None:
    held = _with(tasks, "reclaim-throttle")
    if not held:
        return None
    return Finding(f"direct reclaim throttled, no writer visible: {labels(held)} wait for kswapd to restore the"
                   f" reserves{memory_note(memory)}", held)


# Ordered, first match names the mechanism. Facts from outside the dump come first: a helper swapped
# out or a cut path explains every wait on the storage after it. Then the dump's own chains, the most
# specific (a loop closed through the receive ring) before the waits that follow from any stuck write,
# and a plain swap-in (a symptom of any stall) last but for the fallbacks.
RULES: tuple[Rule, ...] = (
    Rule("helper-swapped-out", helper_swapped_out,
         "a storage-path helper (facts.helpers, VmSwap > 0) is blocked faulting its own pages back in"),
    Rule("path-cut", path_cut, "facts.path_cut says the path is down, and tasks wait on the storage"),
    Rule("storage-socket-stuck", storage_socket_stuck,
         "the memory dump shows the storage path's memalloc socket in TCP loss recovery, its retransmission "
         "timer fired and not one segment sent again, while tasks wait on the storage"),
    Rule("rx-refill-reclaim", rx_refill_reclaim,
         "virtio-net's RX refill is in direct reclaim waiting on swap writeback (the stacks), or the memory dump "
         "shows a receive ring with no buffer while tasks wait on the storage: the loop that never ends"),
    Rule("reclaim-mempool", reclaim_mempool,
         "direct reclaim blocked in mempool_alloc under swap writeback: the pool waits on I/O that does not end"),
    Rule("kswapd-writeback", kswapd_writeback, "kswapd blocked writing pages to the storage"),
    Rule("writeback-throttle", writeback_throttled, "writers held in balance_dirty_pages"),
    Rule("helper-in-swap-in", helper_in_swap_in,
         "a task named as a storage-path helper is blocked in swap-in (no VmSwap fact needed)"),
    Rule("swap-in-wait", swap_in_wait, "tasks wait for swapped-out pages to come back from the storage"),
    Rule("storage-wait", storage_wait, "tasks wait inside a protocol's own layers (its declared frame classes) or block I/O"),
    Rule("reclaim-throttled", reclaim_throttled, "direct reclaim throttled with nothing else visible"),
)


def side_notes(evidence: Evidence) -> tuple[str, ...]:
    """The agent's own waits: it stops telemetry, which is a consequence to mention, never a cause."""
    agent = tuple(t for t in evidence.blocked if "virtio-console" in t.classes)
    if not agent:
        return ()
    how = [c for c in agent[0].classes if c != "virtio-console"]
    via = f" ({', '.join(how)})" if how else ""
    return (f"the testbed's agent is blocked in the kernel writing telemetry: {labels(agent)} in port_fops_write{via}",)


def name_mechanism(evidence: Evidence, facts: StallFacts | None = None) -> Mechanism | None:
    """The first rule of RULES that holds, with the later ones that hold too, or None when none does."""
    facts = facts or StallFacts()
    # The agent's telemetry writes are the testbed's own instrumentation: never evidence for a mechanism.
    tasks = tuple(t for t in evidence.blocked if "virtio-console" not in t.classes)
    found = [(r, f) for r in RULES if (f := r.test(tasks, evidence.memory, facts)) is not None]
    if not found:
        return None
    rule, finding = found[0]
    state = facts.state.note(finding.sentence) if facts.state else ""  # the dump's zones, sockets, queues
    return Mechanism(rule.name, finding.sentence + state, tuple((t.name, t.pid) for t in finding.tasks),
                     also=tuple(r.name for r, _ in found[1:]), notes=side_notes(evidence))

