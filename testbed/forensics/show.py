"""forensics.json as `testbed show` prints it: the state at the stall, read from a memory dump."""

from __future__ import annotations

from typing import Any

from testbed.check.state import protocol_words
from testbed.forensics.read import FILE, NAS_FILE

__all__ = ["FILE", "NAS_FILE", "state_lines"]
SHOWN_FRAMES = 8


def state_lines(f: dict[str, Any], whose: str = "client") -> list[str]:
    file = FILE if whose == "client" else NAS_FILE
    out = [f"{'' if whose == 'client' else whose + ' '}state at the {f.get('why', 'stall')} ({file}: a memory dump "
           f"read with drgn; {f.get('debug_info', 'nothing read')}):"]
    mem = f.get("memory") or {}
    for z in mem.get("zones", []):
        below = " BELOW MIN" if z["free_kb"] < z["min_kb"] else (" below low" if z["free_kb"] < z["low_kb"] else "")
        out.append(f"  zone {z['zone']}: free {z['free_kb']} kB (min {z['min_kb']}, low {z['low_kb']}, "
                   f"high {z['high_kb']}; managed {z['managed_kb']} kB){below}")
    if mem:
        out.append(f"  reserves: totalreserve {mem.get('totalreserve_kb')} kB; sockets with SOCK_MEMALLOC: "
                   f"{mem.get('memalloc_socks')}; swap free {mem.get('swap_free_kb')} of {mem.get('swap_total_kb')} kB")
    for n in f.get("nics") or []:
        for q in n.get("rx", []):
            empty = " EMPTY (nothing can be received)" if q["free"] == q["size"] else ""
            out.append(f"  {n['name']} ({n['driver']}) rx queue {q['queue']}: {q['size'] - q['free']} of {q['size']} "
                       f"descriptors hold buffers{empty}; refill work {'pending' if n.get('refill_pending') else 'idle'}")
    for s in f.get("sockets") or []:
        if "memalloc" not in s:
            out.append(f"  socket {s['local']} > {s['remote']} {s['state']}")
            continue
        out.append(f"  socket {s['local']} > {s['remote']} {s['state']}{' SOCK_MEMALLOC' if s['memalloc'] else ''}: "
                   f"receive {s['rmem_alloc']} of {s['rcvbuf']} B, send queued {s['wmem_queued']} of {s['sndbuf']} B, "
                   f"drops {s['drops']}")
        if s.get("tcp"):
            out.append(f"    TCP {tcp_words(s['tcp'])}")
    if f.get("netstat"):
        out.append("  counters: " + ", ".join(f"{k} {v}" for k, v in f["netstat"].items()))
    out += [f"  {w}" for w in protocol_words(f.get("protocol") or {})]
    tasks = f.get("tasks") or []
    if tasks:
        blocked = [t for t in tasks if t.get("state") == "D"]
        out.append(f"  tasks: {len(tasks)}, {len(blocked)} blocked (D)")
        shown = blocked + [t for t in tasks if t not in blocked and "PF_MEMALLOC" in t.get("flags", [])
                           and t.get("state") != "I"]
        for t in shown:
            flags = f" [{' '.join(t['flags'])}]" if t.get("flags") else ""
            classes = f" ({', '.join(t['classes'])})" if t.get("classes") else ""
            since = f", off the CPU for {t['off_cpu_s']} s" if "off_cpu_s" in t else ""
            out.append(f"    {t['name']} (pid {t['pid']}) {t['state']}{flags}{classes}{since}")
            frames = t.get("frames")
            if frames:
                out.append("      " + " < ".join(frames[:SHOWN_FRAMES]) + (" ..." if len(frames) > SHOWN_FRAMES else ""))
            elif t.get("stack_unread"):
                out.append(f"      stack not read: {t['stack_unread']}")
            for a in shown_allocations(t.get("allocations") or []):
                order = f" order {a['order']}" if "order" in a else ""
                out.append(f"      allocating in {a['function']}: {a['gfp']}{order}")
        for t in sorted((t for t in tasks if t.get("on_cpu") and t.get("frames")), key=lambda t: t.get("cpu") or 0):
            out.append(f"    on CPU {t.get('cpu')}: {t['name']}: " + " < ".join(t["frames"][:SHOWN_FRAMES]))
    for part, why in (f.get("unread") or {}).items():
        out.append(f"  not read: {part}: {why}")
    return out



def tcp_words(t: dict[str, Any]) -> str:
    return (f"{t['ca_state']}: {t['packets_out']} segments out ({t['unacked_bytes']} B unacknowledged), {t['lost_out']} "
            f"lost, {t['retrans_out']} being retransmitted, {t['total_retrans']} ever retransmitted; the timer fired "
            f"{t['rto_fired']} times (backoff {t['backoff']}), cwnd {t['snd_cwnd']}; {t['unsent_bytes']} B not sent yet")


# The allocation frames worth a line: the page allocator's and a mempool's (the others pass the same mask on)
ALLOC_FRAMES = ("__alloc_pages", "mempool_alloc")


def shown_allocations(allocs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The innermost page-allocator and mempool frames of a stack's allocations (or the innermost one)."""
    shown = [a for a in allocs if a["function"] in ALLOC_FRAMES]
    return shown or allocs[:1]
