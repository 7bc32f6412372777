"""Judging a case: from what was observed to one verdict, the reasons that decided it, and key figures.

Judged by progress in the guest, not liveness, and only on positive evidence; a testbed failure or
a stall nothing explains is `unknown`, never a product verdict. Precedence, first match wins
(tests/unit/check/test_precedence.py checks each row against the rows below it):
  setup failed -> unknown | a VM's QEMU killed (or the NAS's ended) under the case -> unknown | data read back
  differs, or a command workload's verification command failed -> corrupted | I/O error on the case's device
  during the workload -> io-error | a fault operation failed, or its mechanism measured and not
  seen -> unknown | a declared path process OOM-killed (kills of the victims a command workload
  expects are only reported) -> oom | finished and verified -> recovered (a client that stops
  answering needs the deadlock's evidence) | stall: client paused -> unknown, QEMU starved by the host -> unknown, NAS
  probes say the NAS side failed -> stalled, a path-down fault in place -> stalled, reclaim spinning
  -> livelocked (the NAS VM not running at the end -> stalled, before it), a blocked task on the memory/storage path -> deadlocked, else unknown | client
  died -> oom (nothing to kill) or unknown | total deadline -> unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from testbed.check.evidence import Evidence
from testbed.check.mechanism import Mechanism, name_mechanism
from testbed.config.scenario import Deadlines
from testbed.faults import outcome
from testbed.faults.outcome import FaultHistory, Remark, Window
from testbed.history import Event
from testbed.workload import Progress, expected_victim, shorten

BUSY_CPU_FRACTION = 0.5


def is_ok(verdict: str, expected: str | None) -> bool:
    """A case is as expected when its verdict is its scenario's `expect:` (by default, recovered)."""
    return verdict == (expected or "recovered")


@dataclass
class Observations:
    deadlines: Deadlines
    progress: Progress
    events: list[Event]
    rows: list[dict[str, Any]]
    setup_error: str | None = None
    ended_by: str = ""  # finished | stall | total-deadline | client-died | workload-failed
    workload_status: int | None = None
    workload_stderr: str = ""
    pressure_start: float | None = None
    pressure_end: float | None = None
    stall_since: float | None = None
    client_answers: bool | None = None
    # Client processes the workload and storage path depend on, as the scenario's roles declare them
    # (Scenario.path_processes): the OOM killer taking one of these breaks the path itself.
    path_processes: tuple[str, ...] = ()
    # Task names (or globs) a command workload loses to the OOM killer by design (the scenario's
    # workload.expected_oom_victims): their kills are reported, never the `oom` verdict.
    expected_victims: tuple[str, ...] = ()
    # At a stall (or a client that stopped answering): the parsed sysrq dump, and the facts the
    # mechanism rules read (protocol, the path helpers' states at the stall).
    evidence: Evidence | None = None
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Judgement:
    verdict: str
    reasons: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    mechanism: Mechanism | None = None


def reclaim_moving(rows: list[dict[str, Any]], since: float | None) -> bool:
    """allocstall or direct scanning still rising after `since`: reclaim is running, not waiting."""
    window = [r for r in rows if since is None or r["t"] >= since]
    for key in ("allocstall", "pgscan_direct"):
        vals = [r[key] for r in window if r.get(key) is not None]
        if len(vals) >= 2 and vals[-1] > vals[0]:
            return True
    return False


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
    silent = all(r.get(k) is None for r in tail for k in ("nas_agent_ms", "nas_service", "nas_connect_ms", "nas_aoe_ms"))
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


def _blocked_on_path(obs: Observations, context: list[str]) -> Judgement:
    """deadlocked only with a blocked task on the memory/storage path in the evidence; else unknown."""
    ev = obs.evidence
    if ev is None or not ev.blocked:
        why = "no sysrq dump was taken" if ev is None else "the sysrq dump shows no blocked task"
        return Judgement("unknown", context + [f"stalled without evidence: {why}"])
    path = ev.on_path
    if not path:
        names = ", ".join(t.label for t in ev.blocked[:6])
        return Judgement("unknown", context + [f"stalled without evidence: blocked tasks ({names}) but none on the memory/storage path"])
    mech = name_mechanism(ev, obs.facts)
    shown = "; ".join(f"{t.label} ({', '.join(t.classes)})" for t in path[:4])
    out = context + [f"blocked on the memory/storage path: {shown}"]
    out.append(f"mechanism: {mech.sentence}" if mech else "mechanism: not named by any rule (see evidence.json)")
    return Judgement("deadlocked", out, mechanism=mech)


def _vm_lost(events: list[Event]) -> str:
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
    recorded it (nbd-client -swap: VmLck and oom_score_adj): said beside every verdict of such a case."""
    attached = next((e for e in events if e.kind == "fact" and e.name == "storage-attached"), None)
    if attached is None:
        return []
    out = []
    for key, kb in attached.data.items():
        if not key.endswith("_vmlck_kb"):
            continue
        who = key[: -len("_vmlck_kb")]
        adj = attached.data.get(f"{who}_oom_score_adj")
        state = "memory-locked" if isinstance(kb, int) and kb > 0 else "NOT memory-locked"
        out.append(f"{who.replace('_', '-')} at attach: VmLck {kb} kB ({state}), oom_score_adj {adj}")
    return out


def _kernel_words(e: Event) -> str:
    """A console line without its printk timestamp."""
    return re.sub(r"^\[\s*[0-9.]+\]\s*", "", e.data.get("line", "")).strip()


def _console(events: list[Event], *names: str, vm: str = "client") -> list[Event]:
    """The client's console findings (the NAS's own trouble is not the client's verdict)."""
    return [e for e in events if e.kind == "console" and e.name in names and e.data.get("vm", vm) == vm]


def storage_device(events: list[Event]) -> str | None:
    """The block device the case swaps or writes on (none for NFS), as its attach recorded it."""
    attached = next((e for e in events if e.kind == "fact" and e.name == "storage-attached"), None)
    dev = attached.data.get("device") if attached else None
    return str(dev).rsplit("/", 1)[-1] if dev else None


def _our_device(line: str, device: str | None) -> bool:
    """An I/O error counts only on the case's own device; one that names no device (swap-device,
    SIGBUS) counts. `I/O error, dev sr0` on a case swapping over NFS is not the case's."""
    m = re.search(r"(?:dev|on device) ([A-Za-z0-9!._-]+)", line)
    if not m:
        return True
    named = m.group(1).replace("!", "/").rsplit("/", 1)[-1].rstrip(",")
    return device is not None and named.startswith(device)


def _during(e: Event, obs: Observations) -> bool:
    """Between the start of the workload and the end of the pressure."""
    return (obs.pressure_start is None or e.t >= obs.pressure_start) and (obs.pressure_end is None or e.t <= obs.pressure_end + 1.0)


def fault_windows(events: list[Event], path_down_only: bool = False) -> list[Window]:
    """Every fault's time in place (inject to heal); with `path_down_only`, only the times the NAS or
    the link was away (an outage, a cut, an expired DHCP lease), not conditions such as IPsec,
    competing traffic or loss, under which the client is expected to keep working."""
    h = outcome.read(events)
    return h.path_down if path_down_only else h.windows


def _remark(r: Remark) -> str:
    if r.what == "no-effect":
        return f"fault {r.kind} had no visible effect ({r.text})"
    if r.what == "stuck":
        return f"fault {r.kind}: the client could not finish it: {r.text}"
    return f"fault {r.kind}: {r.text}"


def _row_at(rows: list[dict[str, Any]], t: float | None, last: bool = False) -> dict[str, Any]:
    if not rows:
        return {}
    if t is None:
        return rows[-1] if last else rows[0]
    before = [r for r in rows if r["t"] <= t]
    after = [r for r in rows if r["t"] >= t]
    if last:
        return before[-1] if before else rows[0]
    return after[0] if after else rows[-1]


def _delta(a: dict[str, Any], b: dict[str, Any], key: str) -> int | None:
    if a.get(key) is None or b.get(key) is None:
        return None
    return int(b[key]) - int(a[key])


def figures(obs: Observations) -> dict[str, Any]:
    rows = [r for r in obs.rows if r.get("pswpin") is not None]
    start = _row_at(rows, obs.pressure_start)
    end = _row_at(rows, obs.pressure_end, last=True)
    f: dict[str, Any] = {}
    if obs.pressure_start is not None and obs.pressure_end is not None:
        f["workload_wall_s"] = round(obs.pressure_end - obs.pressure_start, 1)
    if obs.progress.finished:
        f["workload_s"] = obs.progress.finished.get("seconds")
    for key, name in (("pswpin", "swap_in_mb"), ("pswpout", "swap_out_mb")):
        d = _delta(start, end, key)
        f[name] = round(d * 4096 / 2**20, 1) if d is not None else None
    for key in ("allocstall", "oom_kill", "pgscan_direct", "pgscan_direct_throttle"):
        f[key] = _delta(start, end, key)
    for key, name in (("tx_bytes", "net_tx_mb"), ("rx_bytes", "net_rx_mb")):
        d = _delta(start, end, key)
        f[name] = round(d / 2**20, 1) if d is not None else None
    for key in ("nr_dirty", "nr_writeback"):
        vals = [r[key] for r in rows if r.get(key) is not None]
        f[f"{key}_peak"] = max(vals) if vals else None
    drops = [r["PFMemallocDrop"] for r in rows if r.get("PFMemallocDrop") is not None]
    f["pfmemalloc_drop_peak"] = (max(drops) - drops[0]) if drops else None
    free = [r["MemFree"] for r in rows if r.get("MemFree") is not None]
    f["min_memfree_kb"] = min(free) if free else None
    f.update(obs.progress.figures())
    return f


def time_to_recover(obs: Observations) -> float | None:
    """Longest wait, after a fault healed, until the workload made progress again."""
    worst = None
    for w in fault_windows(obs.events):
        healed = w.end
        if healed is None:
            continue
        after = [r["t"] for r, prev in zip(obs.rows[1:], obs.rows) if r["t"] > healed and r["progress"] > prev["progress"]]
        if after:
            wait = round(after[0] - healed, 1)
            worst = wait if worst is None else max(worst, wait)
    return worst


def cpu_busy_fraction(rows: list[dict[str, Any]], since: float | None) -> float | None:
    window = [r for r in rows if since is None or r["t"] >= since]
    window = [r for r in window if r.get("client_cpu_s") is not None]
    if len(window) < 2 or window[-1]["t"] <= window[0]["t"]:
        return None
    return (window[-1]["client_cpu_s"] - window[0]["client_cpu_s"]) / (window[-1]["t"] - window[0]["t"])


def judge(obs: Observations) -> Judgement:
    try:
        j = _judge(obs)
        if not obs.setup_error:
            j.reasons += path_locks(obs.events)
    except Exception as e:  # a checker that throws yields unknown, never a product verdict
        return Judgement("unknown", [f"checker failed: {e!r}"])
    try:
        j.figures = {**figures(obs), **j.figures}
    except Exception as e:
        j.reasons.append(f"figures incomplete: {e!r}")
    return j


def _judge(obs: Observations) -> Judgement:
    ev = obs.events
    if obs.setup_error:
        return Judgement("unknown", [f"testbed failed before a verdict could be reached: {obs.setup_error}"])
    lost = _vm_lost(ev)
    if lost:
        return Judgement("unknown", [lost])
    # Only what happened up to the end of the pressure phase decides: a heal landing while evidence
    # was taken, or a fault's teardown, says nothing about the client's state when it was judged.
    end = obs.pressure_end
    fh: FaultHistory = outcome.read(e for e in ev if end is None or e.t <= end + 1.0)
    # What the faults measured is said even when it was measured at teardown.
    measured = outcome.read(ev)
    remarks = [_remark(r) for r in measured.remarks]
    p = obs.progress
    if p.mismatch and "verify" in p.mismatch:  # the command's own verification said its data is wrong
        m = p.mismatch
        said = " | ".join(str(x) for x in (m.get("output") or [])[-3:])
        return Judgement("corrupted", [f"the verification command `{shorten(m['verify'])}` exited {m.get('status')}"
                                       + (f": {said}" if said else "")])
    if p.mismatch:  # seen, whatever else went wrong
        m = p.mismatch
        return Judgement("corrupted", [f"data read back differs: page {m.get('page')} (pass {m.get('pass')}, word {m.get('word')})"],
                         {"first_bad_page": m.get("page")})
    io = [e for e in _console(ev, "swap-write-error", "swap-read-error", "io-error", "sigbus")
          if _during(e, obs) and _our_device(e.data.get("line", ""), storage_device(ev))]
    if io or obs.workload_status == -7:
        why = io[0].data.get("line", "") if io else "workload killed by SIGBUS"
        return Judgement("io-error", [f"swap or file I/O failed: {why}"])
    if fh.failures:  # the fault did not happen as planned: no other verdict can be claimed for the case
        f = fh.failures[0]
        return Judgement("unknown", remarks + [f"fault operation {f.kind}:{f.op}-failed failed: {f.error}; "
                                               "the testbed cannot say what state it left the path in"])
    unseen = measured.unseen()
    if unseen:  # the fault was there but what it claims to do was not seen: the case measured something else
        u = unseen[0]
        return Judgement("unknown", remarks + [f"fault {u.kind}: its intended mechanism was not seen ({u.text}); "
                                               "the case did not test what its scenario claims"])
    all_kills = _console(ev, "oom-kill")
    # A kill after the case had already stalled (while evidence was taken) did not end the workload.
    stalled_at = obs.pressure_end if obs.ended_by == "stall" else None
    kills = [k for k in all_kills if stalled_at is None or k.t <= stalled_at + 1.0]
    late = [k.data.get("groups", ["", ""])[1] for k in all_kills if k not in kills]
    named = [(k, k.data.get("groups", ["", ""])[1]) for k in kills]
    expected = [v for _, v in named if expected_victim(v, obs.expected_victims)]
    kills = [k for k, v in named if not expected_victim(v, obs.expected_victims)]
    victims = [k.data.get("groups", ["", ""])[1] for k in kills]
    on_path = [v for v in victims if any(v.startswith(s) for s in obs.path_processes)]
    if on_path:
        first = next(k for k in kills if k.data.get("groups", ["", ""])[1] in on_path)
        return Judgement("oom", [f"the OOM killer killed {', '.join(on_path)} (on the workload/storage path)",
                                 *oom_context(obs, fh, first.t)])
    reasons = []
    if late:
        reasons.append(f"after the stall, the OOM killer killed {', '.join(late)}")
    reasons += remarks + nas_console(ev)
    if victims:
        reasons.append(f"the OOM killer killed {', '.join(victims)} (not on the storage path)")
    if expected:
        names = ", ".join(f"{n} x{expected.count(n)}" for n in dict.fromkeys(expected))
        reasons.append(f"the OOM killer killed {names}, as the scenario expects (workload.expected_oom_victims)")
    windows = fh.windows
    if obs.ended_by == "finished" and obs.workload_status == 0 and p.finished:
        if obs.client_answers is False:
            return _blocked_on_path(obs, reasons + ["workload finished but the client stopped answering afterwards"])
        ttr = time_to_recover(obs)
        reasons.append(p.summary())
        if windows:
            reasons.append(f"progress resumed after every healed fault (worst wait {ttr} s)" if ttr is not None
                           else "no fault healed during the workload")
        reasons.append("client answered after the pressure")
        return Judgement("recovered", reasons, {"time_to_recover_s": ttr})
    if obs.ended_by == "stall":
        since = obs.stall_since if obs.stall_since is not None else 0.0
        paused = client_not_running(obs.rows, since, obs.pressure_end)
        if paused:
            return Judgement("unknown", reasons + [f"no progress since t={since:.0f} s while the client VM was {paused} "
                                                   "(QMP status): nothing inside it can be judged"])
        starved = host_starvation(obs.rows, since, obs.pressure_end)
        if starved is not None and starved >= STARVED_FRACTION:
            return Judgement("unknown", reasons + [f"no progress since t={since:.0f} s while QEMU waited for a host CPU "
                                                   f"{starved:.0%} of the time (host contention, not the guest)"],
                             {"qemu_wait_fraction": round(starved, 2)})
        trouble = nas_trouble(obs.rows, since, obs.pressure_end)
        if trouble:
            return Judgement("stalled", reasons + [f"no progress since t={since:.0f} s: {trouble}"])
        # Only a fault already in place when progress stopped (1 s of slack) can explain the stall.
        unhealed = [w for w in fh.path_down if w.end is None and w.start <= since + 1.0]
        if unhealed:
            kinds = ", ".join(sorted({w.kind for w in unhealed}))
            return Judgement("stalled", reasons + [
                f"no progress since t={since:.0f} s while a fault ({kinds}) kept the NAS or link down and never healed"])
        last = next((r.get("nas_status") for r in reversed(obs.rows) if r.get("nas_status")), "")
        if last and last not in ("running", "no-qmp"):
            return Judgement("stalled", reasons + [f"no progress since t={since:.0f} s and the NAS was still {last} at the end"])
        busy = cpu_busy_fraction(obs.rows, since)
        healed = fh.healed()
        context = (f"no progress since t={since:.0f} s" + (f", {len(healed)} fault(s) healed" if healed else "")
                   + f" while the NAS was healthy and the link up ({nas_health(obs.rows, since, obs.pressure_end)})")
        cpu_busy = {"client_cpu_busy": round(busy, 2) if busy is not None else None}
        if busy is not None and busy >= BUSY_CPU_FRACTION and reclaim_moving(obs.rows, since):
            j = Judgement("livelocked", reasons + [context, f"client CPU busy {busy:.0%} of a core with allocstall/pgscan "
                                                   "still rising (reclaim spinning)"], cpu_busy)
            j.mechanism = name_mechanism(obs.evidence, obs.facts) if obs.evidence else None
            return j
        cpu = [f"client CPU {busy:.0%} of a core" + ("" if busy >= BUSY_CPU_FRACTION else " (waiting, not spinning)")] if busy is not None else []
        j = _blocked_on_path(obs, reasons + [context] + cpu)
        j.figures.update(cpu_busy)
        return j
    if obs.ended_by == "client-died":
        panic = _console(ev, "panic")
        no_victim = [e for e in ev if e.kind == "console" and e.name == "oom-no-victim"]
        if no_victim or (panic and "Out of memory" in panic[0].data.get("line", "")):
            return Judgement("oom", reasons + ["the kernel ran out of memory with nothing left to kill and panicked"])
        # A crash is the kernel's own word, but under an emulator it may be the emulator's doing: it stays
        # unknown, with what crashed and where in the reason (console-client.log has the whole trace).
        oops = _console(ev, "oops")
        rip = [e for e in _console(ev, "oops-rip") if oops and e.t >= oops[0].t]  # the crash's, not an earlier trace's
        crash = (f"{_kernel_words(oops[0])}" + (f" at {(rip[0].data.get('groups') or ['?'])[0]}" if rip else "") + "; ") if oops else ""
        return Judgement("unknown", reasons + ["the client VM died: " + crash
                                               + (_kernel_words(panic[0]) if panic else "see console-client.log")])
    if obs.ended_by == "total-deadline":
        return Judgement("unknown", reasons + [f"workload still progressing at deadlines.total_s={obs.deadlines.total_s:.0f} s; raise it"])
    if kills and obs.workload_status not in (0, None):
        return Judgement("oom", reasons + ["the workload died after OOM kills"])
    return Judgement("unknown", reasons + [
        f"workload ended with status {obs.workload_status} without a recognised cause: {(p.error or obs.workload_stderr or p.last_words()).strip()[:200]}"])
