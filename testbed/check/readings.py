"""What the checker's rules read from a case: the timeline's rows (the client's and the NAS's states, the
probes, reclaim counters) and the events (console findings, attach facts, a VM lost). Each function answers
one question and decides nothing: the rules (testbed/check/rules.py) do."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from testbed.check.frames import HelperLock
from testbed.check.observations import Observations
from testbed.faults import outcome
from testbed.faults.outcome import FaultHistory, Remark
from testbed.store.history import Event

BUSY_CPU_FRACTION = 0.5


STARVED_FRACTION = 0.5  # QEMU runnable but waiting for a host CPU this share of the stall: not the guest's doing
PROBE_TAIL = 5  # the last samples of the stall window the NAS probes must agree on


def _window(rows: list[dict[str, Any]], since: float, end: float | None) -> list[dict[str, Any]]:
    return [r for r in rows if r["t"] >= since and (end is None or r["t"] <= end + 1.0)]


def client_not_running(rows: list[dict[str, Any]], since: float, end: float | None) -> str | None:
    """The client VM's QMP status, if it was still not running at the end of the stall."""
    tail = [r.get("client_status") for r in _window(rows, since, end) if r.get("client_status")][-PROBE_TAIL:]
    states = set(tail) - {"running", "no-qmp"}
    return ", ".join(sorted(states)) if tail and len(states) == len(set(tail)) else None


def host_starvation(rows: list[dict[str, Any]], since: float, end: float | None) -> float | None:
    """Share of QEMU's runnable time spent waiting for a host CPU during the stall, when that wait
    was real (>= 0.3 s per s) and the guest got little CPU (< 0.2 of a core); else None."""
    w = [r for r in _window(rows, since, end) if r.get("client_wait_s") is not None and r.get("client_run_s") is not None]
    if len(w) < 2 or w[-1]["t"] <= w[0]["t"]:
        return None
    dt = w[-1]["t"] - w[0]["t"]
    wait, run = w[-1]["client_wait_s"] - w[0]["client_wait_s"], w[-1]["client_run_s"] - w[0]["client_run_s"]
    if wait / dt < 0.3 or run / dt >= 0.2 or wait + run <= 0:
        return None
    return wait / (wait + run)


def _network_answer(error: Any) -> bool:
    """A connect that failed because of the NAS side (ECONNREFUSED, EHOSTUNREACH, a timeout), not
    because our own probe broke."""
    return isinstance(error, str) and (error == "timeout" or error.startswith("E"))


def nas_trouble(rows: list[dict[str, Any]], since: float, end: float | None) -> str | None:
    """What the independent NAS probes said at the end of the stall, if they agree the NAS side
    failed. Only samples the probes finished count (`nas_probed`); a probe that did not run says
    nothing about the NAS."""
    tail = [r for r in _window(rows, since, end) if r.get("nas_probed") == 1][-PROBE_TAIL:]
    if len(tail) < PROBE_TAIL:
        return None
    if all(r.get("nas_service") == 0 for r in tail):
        return "the NAS's storage service was down (service probe: read back from the NAS)"
    errors = [r.get("nas_connect_error") for r in tail]
    if all(_network_answer(e) for e in errors) and all(r.get("nas_connect_ms") is None for r in tail):
        return f"the NAS refused or ignored connections to its service (connect probe from the switch: {errors[-1]})"
    # every probe that measures (its column: nas_*_ms, a protocol's own included) and the service read-back
    silent = all(r.get(k) is None for r in tail for k in ("nas_service", *(c for c in r if c.startswith("nas_") and c.endswith("_ms"))))
    if silent:
        return "the NAS answered nothing: its agent, its service read-back and its storage port were silent (NAS probes)"
    return None


def nas_health(rows: list[dict[str, Any]], since: float, end: float | None) -> str:
    """What says the NAS side was fine during the stall: its probes where they ran, else its QMP status."""
    probed = [r for r in _window(rows, since, end) if r.get("nas_probed") == 1]
    if probed:
        ok = sum(1 for r in probed if r.get("nas_service") == 1 or r.get("nas_connect_ms") is not None)
        return f"NAS probes: service or port answered in {ok} of {len(probed)} samples; no path-down fault in place"
    return "NAS VM running by QMP, no NAS probes in this case; no path-down fault in place"


def nas_console(events: list[Event]) -> list[str]:
    """The NAS's own console findings (reported; the NAS probes decide whether the NAS side failed)."""
    seen = {}
    for e in events:
        if e.kind == "console" and e.data.get("vm") == "nas" and e.name not in seen:
            seen[e.name] = e
    return [f"the NAS's console at t={e.t:.0f} s: {e.name}: {str(e.data.get('line', ''))[:160]}" for e in seen.values()]


def oom_context(obs: Observations, fh: FaultHistory, t: float) -> list[str]:
    """What the path and memory were when the OOM killer struck: the NAS side's state by its probes,
    a path-down fault in place, and the memory under writeback, which reclaim cannot free until the
    storage answers. Said beside the verdict, never instead of it."""
    out = []
    trouble = nas_trouble(obs.rows, t - 30.0, t - 1.0)
    if trouble:
        out.append(f"at the kill (t={t:.0f} s) {trouble}")
    down = sorted({w.kind for w in fh.path_down if w.start <= t and (w.end is None or w.end >= t)})
    if down:
        out.append(f"at the kill a fault ({', '.join(down)}) had the NAS or link down")
    before = [r for r in obs.rows if r["t"] < t and r.get("Writeback") is not None]
    if before and before[-1]["Writeback"]:
        r = before[-1]
        out.append(f"{r['Writeback']} kB under writeback at t={r['t']:.0f} s, the last sample before the kill")
    return out


def vm_lost(events: list[Event]) -> str:
    """A VM's QEMU that ended under the case without us stopping it: killed by a signal (from outside the
    testbed, or QEMU crashing), or the NAS's ending any way. A client whose guest powered off or panicked
    ends with status 0: that is the client's own end, judged below."""
    for e in events:
        if e.kind != "vm" or e.name != "exited":
            continue
        vm, sig, status = e.data.get("vm", "?"), e.data.get("signal"), e.data.get("status")
        if sig:
            return (f"the {vm} VM's QEMU was killed by {sig} at t={e.t:.0f} s (not by the testbed): a testbed "
                    "failure, not a verdict")
        if vm != "client":
            return (f"the {vm} VM's QEMU exited (status {status}) at t={e.t:.0f} s while the case needed it: a "
                    f"testbed failure, not a verdict (console-{vm}.log says why)")
    return ""


def path_locks(events: list[Event]) -> list[str]:
    """What the storage path's own client daemon had locked and how the OOM killer saw it, as the attach
    recorded it (a daemon run with mlockall: VmLck and oom_score_adj): said beside every verdict of such a case."""
    attached = next((e for e in events if e.kind == "fact" and e.name == "storage-attached"), None)
    if attached is None:
        return []
    if isinstance(attached.data.get("helper_locks"), list):  # typed, since 2026-12-07
        locks = [HelperLock.from_dict(d) for d in attached.data["helper_locks"] if isinstance(d, dict)]
        return [f"{h.name} at attach: VmLck {h.vmlck_kb} kB ({'memory-locked' if h.locked else 'NOT memory-locked'}), "
                f"oom_score_adj {h.oom_score_adj}" for h in locks]
    out = []  # older folders: the <daemon>_vmlck_kb / <daemon>_oom_score_adj keys
    for key, kb in attached.data.items():
        if not key.endswith("_vmlck_kb"):
            continue
        who = key[: -len("_vmlck_kb")]
        adj = attached.data.get(f"{who}_oom_score_adj")
        state = "memory-locked" if isinstance(kb, int) and kb > 0 else "NOT memory-locked"
        out.append(f"{who.replace('_', '-')} at attach: VmLck {kb} kB ({state}), oom_score_adj {adj}")
    return out


def kernel_words(e: Event) -> str:
    """A console line without its printk timestamp."""
    return re.sub(r"^\[\s*[0-9.]+\]\s*", "", e.data.get("line", "")).strip()


def console(events: list[Event], *names: str, vm: str = "client") -> list[Event]:
    """The client's console findings (the NAS's own trouble is not the client's verdict)."""
    return [e for e in events if e.kind == "console" and e.name in names and e.data.get("vm", vm) == vm]


def storage_device(events: list[Event]) -> str | None:
    """The block device the case swaps or writes on (none for a network filesystem), as its attach recorded it."""
    attached = next((e for e in events if e.kind == "fact" and e.name == "storage-attached"), None)
    dev = attached.data.get("device") if attached else None
    return str(dev).rsplit("/", 1)[-1] if dev else None


def our_device(line: str, device: str | None) -> bool:
    """An I/O error line that names the case's own device. One that names no device, or another
    (`I/O error, dev sr0` on a case swapping to a network filesystem), is not the case's."""
    m = re.search(r"(?:dev|on device) ([A-Za-z0-9!._-]+)", line)
    if not m:
        return False
    named = m.group(1).replace("!", "/").rsplit("/", 1)[-1].rstrip(",")
    return device is not None and named.startswith(device)


def line(e: Event) -> str:
    """A console finding's line."""
    return str(e.data.get("line", ""))


def names_process(line: str, processes: tuple[str, ...]) -> bool:
    """A console line that names one of `processes` (a name, or a prefix such as `rpc.`) as a word."""
    words = re.findall(r"[A-Za-z0-9_.:/-]+", line)
    return any(w.startswith(p) for w in words for p in processes if p)


def during(e: Event, obs: Observations) -> bool:
    """Between the start of the workload and the end of the pressure."""
    return (obs.pressure_start is None or e.t >= obs.pressure_start) and (obs.pressure_end is None or e.t <= obs.pressure_end + 1.0)


def remark_text(r: Remark) -> str:
    if r.what == "no-effect":
        return f"fault {r.kind} had no visible effect ({r.text})"
    if r.what == "stuck":
        return f"fault {r.kind}: the client could not finish it: {r.text}"
    return f"fault {r.kind}: {r.text}"


def time_to_recover(obs: Observations) -> float | None:
    """Longest wait, after a fault healed, until the workload made progress again."""
    worst = None
    for w in outcome.read(obs.events).windows:
        healed = w.end
        if healed is None:
            continue
        after = [r["t"] for r, prev in zip(obs.rows[1:], obs.rows) if r["t"] > healed and r["progress"] > prev["progress"]]
        if after:
            wait = round(after[0] - healed, 1)
            worst = wait if worst is None else max(worst, wait)
    return worst


# A livelock is reclaim that keeps running: judged on the stall's last seconds, where the CPU must be busy
# and allocstall or direct scanning rise in most sample intervals (one increment is not a spin).
SUSTAINED_S = 10.0
SUSTAINED_SHARE = 0.6


@dataclass(frozen=True)
class Spin:
    """Reclaim over the stall's last SUSTAINED_S: the client's CPU and how often reclaim moved."""

    busy: float  # CPU seconds per second
    rising: float  # share of sample intervals in which allocstall or pgscan_direct rose
    intervals: int

    @property
    def sustained(self) -> bool:
        return self.busy >= BUSY_CPU_FRACTION and self.rising >= SUSTAINED_SHARE

    def text(self) -> str:
        return (f"client CPU busy {self.busy:.0%} of a core with allocstall/pgscan rising in {self.rising:.0%} of "
                f"the last {self.intervals} sample intervals")


def reclaim_spin(rows: list[dict[str, Any]], since: float | None, end: float | None) -> Spin | None:
    """Reclaim in the last SUSTAINED_S of the stall window (from `since` to `end`); None with fewer than
    three samples there."""
    window = [r for r in rows if (since is None or r["t"] >= since) and (end is None or r["t"] <= end + 1.0)
              and r.get("client_cpu_s") is not None]
    if not window:
        return None
    tail = [r for r in window if r["t"] >= window[-1]["t"] - SUSTAINED_S]
    if len(tail) < 3 or tail[-1]["t"] <= tail[0]["t"]:
        return None
    busy = (tail[-1]["client_cpu_s"] - tail[0]["client_cpu_s"]) / (tail[-1]["t"] - tail[0]["t"])
    pairs = list(zip(tail, tail[1:]))
    rose = sum(1 for a, b in pairs if any(a.get(k) is not None and b.get(k) is not None and b[k] > a[k]
                                          for k in ("allocstall", "pgscan_direct")))
    return Spin(busy, rose / len(pairs), len(pairs))


def cpu_busy_fraction(rows: list[dict[str, Any]], since: float | None) -> float | None:
    window = [r for r in rows if since is None or r["t"] >= since]
    window = [r for r in window if r.get("client_cpu_s") is not None]
    if len(window) < 2 or window[-1]["t"] <= window[0]["t"]:
        return None
    return (window[-1]["client_cpu_s"] - window[0]["client_cpu_s"]) / (window[-1]["t"] - window[0]["t"])


def oom_victim(e: Event) -> str:
    """The task name an `oom-kill` console finding names (`Killed process 7 (tb-work)` -> tb-work)."""
    groups = e.data.get("groups") or ["", ""]
    return str(groups[1]) if len(groups) > 1 else ""
