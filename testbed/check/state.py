"""The state of the frozen guest as the mechanism rules read it: forensics.json (a memory dump read with
drgn, testbed/forensics) reduced to the facts a rule decides on and the words a reader needs: receive
rings, zones against their minimum, sockets with SOCK_MEMALLOC, and the protocol's own queues. Pure: a
recorded forensics.json judges the same as the live one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The moments a dump explains a stall from: a dump after a workload that finished (evidence.dump: always)
# is a comparison, never a stall's state.
STALL_MOMENTS = ("stall", "no-answer")


@dataclass(frozen=True)
class RxRing:
    nic: str
    queue: int
    free: int  # descriptors holding no buffer
    size: int
    refill_pending: bool

    @property
    def empty(self) -> bool:
        return self.size > 0 and self.free == self.size

    def words(self) -> str:
        return (f"{self.nic} receive queue {self.queue}: {self.free} of {self.size} descriptors without a buffer"
                f"{' (EMPTY: nothing can be received)' if self.empty else ''}, refill work "
                f"{'pending' if self.refill_pending else 'idle'}")


@dataclass(frozen=True)
class DumpState:
    why: str
    rings: tuple[RxRing, ...] = ()
    below_min: tuple[str, ...] = ()  # "DMA32 free 5884 kB < min 6616 kB"
    memalloc_socks: int | None = None
    memalloc_sockets: tuple[str, ...] = ()  # "10.201.0.1:965>10.201.0.2:2049 (send queued 119008 of 87040 B)"
    protocol: tuple[str, ...] = ()  # the protocol's queues, in words
    # memalloc sockets whose lost segments were never sent again: in words (see stuck_sender)
    stuck_senders: tuple[str, ...] = ()
    netstat: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_forensics(cls, f: dict[str, Any] | None) -> DumpState | None:
        """The state of a stall's dump; None for a dump of another moment, or one where nothing was read."""
        if not isinstance(f, dict) or f.get("why") not in STALL_MOMENTS:
            return None
        rings = tuple(RxRing(str(n.get("name")), int(q["queue"]), int(q["free"]), int(q["size"]),
                             bool(n.get("refill_pending")))
                      for n in f.get("nics") or [] for q in n.get("rx") or [])
        mem = f.get("memory") or {}
        below = tuple(f"{z['zone']} free {z['free_kb']} kB < min {z['min_kb']} kB" for z in mem.get("zones") or []
                      if z["free_kb"] < z["min_kb"])
        socks = tuple(f"{s['local']}>{s['remote']} (send queued {s['wmem_queued']} of {s['sndbuf']} B, receive "
                      f"{s['rmem_alloc']} of {s['rcvbuf']} B)" for s in f.get("sockets") or [] if s.get("memalloc"))
        if not (rings or mem or f.get("sockets")):
            return None
        netstat = f.get("netstat") or {}
        stuck = tuple(w for s in f.get("sockets") or [] if s.get("memalloc") and (w := stuck_sender(s, netstat)))
        return cls(str(f["why"]), rings, below, mem.get("memalloc_socks"), socks, protocol_words(f.get("protocol") or {}),
                   stuck, tuple((k, int(v)) for k, v in netstat.items()))

    def counter(self, name: str) -> int | None:
        return dict(self.netstat).get(name)

    def empty_rings(self) -> tuple[RxRing, ...]:
        return tuple(r for r in self.rings if r.empty)

    def note(self, said: str = "") -> str:
        """What the dump adds to a mechanism's sentence (`said`: what it says already, not repeated):
        `; the memory dump at the stall: ...`."""
        parts = [r.words() for r in self.empty_rings()]
        parts += list(self.below_min)
        if self.memalloc_socks is not None:
            parts.append(f"sockets with SOCK_MEMALLOC: {self.memalloc_socks}"
                         + (f" ({', '.join(self.memalloc_sockets)})" if self.memalloc_sockets else ""))
        parts += list(self.protocol)
        parts = [p for p in parts if p not in said]
        return f"; the memory dump at the {self.why}: {'; '.join(parts)}" if parts else ""


def stuck_sender(s: dict[str, Any], netstat: dict[str, Any]) -> str | None:
    """A TCP socket in loss recovery whose retransmission timer fired and that never retransmitted a
    segment, in words; None for one that is moving (or was read without its TCP state)."""
    t = s.get("tcp") or {}
    if t.get("ca_state") != "Loss" or not t.get("rto_fired") or t.get("total_retrans") or not t.get("lost_out"):
        return None
    machine = (f" (RetransSegs {netstat['RetransSegs']}, TCPRetransFail {netstat.get('TCPRetransFail', '?')})"
               if "RetransSegs" in netstat else "")
    return (f"{s['local']}>{s['remote']}: {t['packets_out']} segments ({t['unacked_bytes']} B) unacknowledged, "
            f"{t['lost_out']} marked lost; the retransmission timer fired {t['rto_fired']} times (backoff "
            f"{t['backoff']}, cwnd {t['snd_cwnd']}) and not one segment was sent again{machine}; "
            f"{t['unsent_bytes']} B more queued behind them")


def protocol_words(p: dict[str, Any]) -> tuple[str, ...]:
    """The protocol's queues in a few words each (Storage.read_state's output)."""
    out = []
    for x in p.get("rpc_transports") or []:
        procs = ", ".join(f"{n} {p}" for p, n in sorted((x.get("sending_procedures") or {}).items(), key=lambda kv: -kv[1]))
        out.append(f"RPC transport {x['socket']} {' '.join(x['state'])}: {x['sending_queue']} tasks waiting to send"
                   f"{f' ({procs})' if procs else ''}, {x['pending_queue']} for a reply, {x['backlog_queue']} for a slot")
    for c in p.get("iscsi_connections") or []:
        tasks = c.get("tasks") or {}
        busy = ", ".join(f"{n} {s}" for s, n in sorted(tasks.items()) if s != "FREE") or "none outstanding"
        out.append(f"iSCSI session {c.get('session_state', '?')}, connection {' '.join(c['conn_flags']) or 'no flags'}: "
                   f"tasks {busy}; {c['cmdqueue']} commands queued")
    for n in p.get("nbd_devices") or []:
        out.append(f"NBD {n['device']}: {n['in_flight']} of {n['tag_depth']} requests in flight, "
                   f"{n['live_connections']} of {n['num_connections']} connections live")
    for d in p.get("aoe_devices") or []:
        out.append(f"AoE {d['device']}: " + ", ".join(f"{t['nout']} frames outstanding of {t['maxout']}"
                                                     for t in d.get("targets") or []))
    return tuple(out)
