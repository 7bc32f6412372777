"""The checker as an ordered table of rules: first match wins. Each rule has a name (a row of the
precedence table in docs/verdicts.md, generated from this table), the evidence it requires, the verdict
it gives, and a small function that returns a Judgement when its evidence holds, else None.

Judged by progress in the guest, not liveness, and only on positive evidence: a testbed failure or a stall
nothing explains is `unknown`, never a product verdict. tests/unit/check/test_precedence.py checks each row
against the rows below it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from testbed.check import completeness
from testbed.check import readings as r
from testbed.check.mechanism import name_mechanism
from testbed.check.observations import Judgement, Observations
from testbed.faults import outcome
from testbed.faults.outcome import FaultHistory
from testbed.store.history import Event
from testbed.workload import expected_victim, shorten


class Case:
    """What several rules read, derived once from the observations."""

    def __init__(self, obs: Observations):
        self.obs = obs
        self.events = obs.events

    @cached_property
    def faults(self) -> FaultHistory:
        """Only what happened up to the end of the pressure phase decides: a heal landing while evidence
        was taken, or a fault's teardown, says nothing about the client's state when it was judged."""
        end = self.obs.pressure_end
        return outcome.read(e for e in self.events if end is None or e.t <= end + 1.0)

    @cached_property
    def measured(self) -> FaultHistory:
        """What the faults measured is said even when it was measured at teardown."""
        return outcome.read(self.events)

    @cached_property
    def remarks(self) -> list[str]:
        return [r.remark_text(x) for x in self.measured.remarks]

    # -- OOM kills ---------------------------------------------------------------------------------
    @cached_property
    def _kills(self) -> tuple[list[Event], list[Event]]:
        """(kills up to the end of the pressure, kills after it): a kill after the workload had already ended
        or stalled (while evidence was taken) did not end it."""
        every = r.console(self.events, "oom-kill")
        end = self.obs.pressure_end
        before = [k for k in every if end is None or k.t <= end + 1.0]
        return before, [k for k in every if k not in before]

    @cached_property
    def unexpected_kills(self) -> list[Event]:
        return [k for k in self._kills[0] if not expected_victim(r.oom_victim(k), self.obs.expected_victims)]

    @cached_property
    def expected_kills(self) -> list[str]:
        return [v for k in self._kills[0] if expected_victim(v := r.oom_victim(k), self.obs.expected_victims)]

    @cached_property
    def path_kills(self) -> list[Event]:
        return [k for k in self.unexpected_kills
                if any(r.oom_victim(k).startswith(s) for s in self.obs.path_processes)]

    @cached_property
    def reasons(self) -> list[str]:
        """What every verdict from the OOM rule on says beside its own reason: late kills, the faults'
        remarks, the NAS's console, kills off the path, expected kills."""
        out = []
        late = [r.oom_victim(k) for k in self._kills[1]]
        if late:
            out.append(f"after the {'stall' if self.stalled else 'pressure ended'}, the OOM killer killed {', '.join(late)}")
        out += self.remarks + r.nas_console(self.events)
        victims = [r.oom_victim(k) for k in self.unexpected_kills]
        if victims:
            out.append(f"the OOM killer killed {', '.join(victims)} (not on the storage path)")
        if self.expected_kills:
            n = self.expected_kills
            names = ", ".join(f"{v} x{n.count(v)}" for v in dict.fromkeys(n))
            out.append(f"the OOM killer killed {names}, as the scenario expects (workload.expected_oom_victims)")
        return out

    # -- a stall -----------------------------------------------------------------------------------
    @property
    def stalled(self) -> bool:
        return self.obs.ended_by == "stall"

    @property
    def since(self) -> float:
        return self.obs.stall_since if self.obs.stall_since is not None else 0.0

    @cached_property
    def busy(self) -> float | None:
        return r.cpu_busy_fraction(self.obs.rows, self.since)

    @cached_property
    def spin(self) -> r.Spin | None:
        return r.reclaim_spin(self.obs.rows, self.since, self.obs.pressure_end)

    @cached_property
    def named_deadlock(self) -> bool:
        """Blocked tasks on the memory/storage path in the dump, with a mechanism rule naming it."""
        ev = self.obs.evidence
        return bool(ev is not None and ev.on_path and name_mechanism(ev, self.obs.facts))

    def context(self) -> str:
        healed = self.faults.healed()
        return (f"no progress since t={self.since:.0f} s" + (f", {len(healed)} fault(s) healed" if healed else "")
                + f" while the NAS was healthy and the link up "
                  f"({r.nas_health(self.obs.rows, self.since, self.obs.pressure_end)})")


def blocked_on_path(obs: Observations, context: list[str]) -> Judgement:
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


# -- the rules, in the order of the table ------------------------------------------------------------

def setup_failed(c: Case) -> Judgement | None:
    if c.obs.setup_error:
        return Judgement("unknown", [f"testbed failed before a verdict could be reached: {c.obs.setup_error}"])
    return None


def vm_lost(c: Case) -> Judgement | None:
    lost = r.vm_lost(c.events)
    return Judgement("unknown", [lost]) if lost else None


def history_incomplete(c: Case) -> Judgement | None:
    gaps = completeness.missing(c.obs)
    if not gaps:  # what the scenario declared is all recorded: the rules below may read it
        return None
    return Judgement("unknown", c.remarks + [f"incomplete: {g}" for g in gaps])


def verification_failed(c: Case) -> Judgement | None:
    m = c.obs.progress.mismatch
    if not (m and "verify" in m):  # the command's own verification said its data is wrong
        return None
    said = " | ".join(str(x) for x in (m.get("output") or [])[-3:])
    return Judgement("corrupted", [f"the verification command `{shorten(m['verify'])}` exited {m.get('status')}"
                                   + (f": {said}" if said else "")])


def data_differs(c: Case) -> Judgement | None:
    m = c.obs.progress.mismatch
    if not m:  # seen, whatever else went wrong
        return None
    return Judgement("corrupted", [f"data read back differs: page {m.get('page')} (pass {m.get('pass')}, word {m.get('word')})"],
                     {"first_bad_page": m.get("page")})


def io_failed(c: Case) -> Judgement | None:
    device = r.storage_device(c.events)
    during = [e for e in r.console(c.events, "swap-write-error", "swap-read-error", "io-error", "sigbus")
              if r.during(e, c.obs)]
    io = [e for e in during if e.name in ("swap-write-error", "swap-read-error")  # the swap device: the case's own
          or (e.name == "io-error" and r.our_device(r.line(e), device))
          or (e.name == "sigbus" and r.names_process(r.line(e), c.obs.path_processes))]
    if not io and c.obs.workload_status != -7:
        return None
    why = io[0].data.get("line", "") if io else "workload killed by SIGBUS"
    return Judgement("io-error", [f"swap or file I/O failed: {why}"])


def fault_failed(c: Case) -> Judgement | None:
    if not c.faults.failures:  # the fault did not happen as planned: no other verdict can be claimed
        return None
    f = c.faults.failures[0]
    return Judgement("unknown", c.remarks + [f"fault operation {f.kind}:{f.op}-failed failed: {f.error}; "
                                             "the testbed cannot say what state it left the path in"])


def mechanism_unseen(c: Case) -> Judgement | None:
    unseen = c.measured.unseen()
    if not unseen:  # the fault was there but what it claims to do was not seen: the case measured something else
        return None
    u = unseen[0]
    return Judgement("unknown", c.remarks + [f"fault {u.kind}: its intended mechanism was not seen ({u.text}); "
                                             "the case did not test what its scenario claims"])


def path_process_killed(c: Case) -> Judgement | None:
    if not c.path_kills:
        return None
    on_path = [r.oom_victim(k) for k in c.path_kills]
    return Judgement("oom", [f"the OOM killer killed {', '.join(on_path)} (on the workload/storage path)",
                             *r.oom_context(c.obs, c.faults, c.path_kills[0].t)])


def finished(c: Case) -> Judgement | None:
    obs, p = c.obs, c.obs.progress
    if not (obs.ended_by == "finished" and obs.workload_status == 0 and p.finished):
        return None
    reasons = list(c.reasons)
    if obs.client_answers is False:
        return blocked_on_path(obs, reasons + ["workload finished but the client stopped answering afterwards"])
    ttr = r.time_to_recover(obs)
    reasons.append(p.summary())
    if c.faults.windows:
        reasons.append(f"progress resumed after every healed fault (worst wait {ttr} s)" if ttr is not None
                       else "no fault healed during the workload")
    reasons.append("client answered after the pressure")
    return Judgement("recovered", reasons, {"time_to_recover_s": ttr})


def client_paused(c: Case) -> Judgement | None:
    paused = r.client_not_running(c.obs.rows, c.since, c.obs.pressure_end) if c.stalled else None
    if not paused:
        return None
    return Judgement("unknown", c.reasons + [f"no progress since t={c.since:.0f} s while the client VM was {paused} "
                                             "(QMP status): nothing inside it can be judged"])


def qemu_starved(c: Case) -> Judgement | None:
    starved = r.host_starvation(c.obs.rows, c.since, c.obs.pressure_end) if c.stalled else None
    if starved is None or starved < r.STARVED_FRACTION:
        return None
    return Judgement("unknown", c.reasons + [f"no progress since t={c.since:.0f} s while QEMU waited for a host CPU "
                                             f"{starved:.0%} of the time (host contention, not the guest)"],
                     {"qemu_wait_fraction": round(starved, 2)})


def nas_probes_down(c: Case) -> Judgement | None:
    trouble = r.nas_trouble(c.obs.rows, c.since, c.obs.pressure_end) if c.stalled else None
    return Judgement("stalled", c.reasons + [f"no progress since t={c.since:.0f} s: {trouble}"]) if trouble else None


def path_down_fault(c: Case) -> Judgement | None:
    # Only a fault already in place when progress stopped (1 s of slack) can explain the stall.
    unhealed = [w for w in c.faults.path_down if w.end is None and w.start <= c.since + 1.0] if c.stalled else []
    if not unhealed:
        return None
    kinds = ", ".join(sorted({w.kind for w in unhealed}))
    return Judgement("stalled", c.reasons + [
        f"no progress since t={c.since:.0f} s while a fault ({kinds}) kept the NAS or link down and never healed"])


def nas_vm_not_running(c: Case) -> Judgement | None:
    last = next((x.get("nas_status") for x in reversed(c.obs.rows) if x.get("nas_status")), "") if c.stalled else ""
    if not last or last in ("running", "no-qmp"):
        return None
    return Judgement("stalled", c.reasons + [f"no progress since t={c.since:.0f} s and the NAS was still {last} at the end"])


def reclaim_spinning(c: Case) -> Judgement | None:
    spin = c.spin
    if not (c.stalled and spin is not None and spin.sustained):
        return None
    if c.named_deadlock:  # blocked tasks on the path name a mechanism: that deadlock wins, the spin is reported
        return None
    j = Judgement("livelocked", c.reasons + [c.context(), f"{spin.text()} (reclaim spinning)"],
                  {"client_cpu_busy": round(spin.busy, 2)})
    j.mechanism = name_mechanism(c.obs.evidence, c.obs.facts) if c.obs.evidence else None
    return j


def blocked_task(c: Case) -> Judgement | None:
    if not c.stalled:
        return None
    busy = c.busy
    cpu = ([f"client CPU {busy:.0%} of a core" + ("" if busy >= r.BUSY_CPU_FRACTION else " (waiting, not spinning)")]
           if busy is not None else [])
    spin = c.spin
    also = [f"{spin.text()}: reclaim spinning too, while blocked tasks name the mechanism"] if c.named_deadlock and spin and spin.sustained else []
    j = blocked_on_path(c.obs, c.reasons + [c.context()] + cpu + also)
    j.figures.update({"client_cpu_busy": round(busy, 2) if busy is not None else None})
    return j


def out_of_memory_panic(c: Case) -> Judgement | None:
    if c.obs.ended_by != "client-died":
        return None
    panic = r.console(c.events, "panic")
    no_victim = [e for e in c.events if e.kind == "console" and e.name == "oom-no-victim"]
    if no_victim or (panic and "Out of memory" in panic[0].data.get("line", "")):
        return Judgement("oom", c.reasons + ["the kernel ran out of memory with nothing left to kill and panicked"])
    return None


def client_died(c: Case) -> Judgement | None:
    if c.obs.ended_by != "client-died":
        return None
    # A crash is the kernel's own word, but under an emulator it may be the emulator's doing: it stays
    # unknown, with what crashed and where in the reason (console-client.log has the whole trace).
    panic = r.console(c.events, "panic")
    oops = r.console(c.events, "oops")
    rip = [e for e in r.console(c.events, "oops-rip") if oops and e.t >= oops[0].t]  # the crash's, not an earlier trace's
    crash = (f"{r.kernel_words(oops[0])}" + (f" at {(rip[0].data.get('groups') or ['?'])[0]}" if rip else "") + "; ") if oops else ""
    return Judgement("unknown", c.reasons + ["the client VM died: " + crash
                                             + (r.kernel_words(panic[0]) if panic else "see console-client.log")])


def total_deadline(c: Case) -> Judgement | None:
    if c.obs.ended_by != "total-deadline":
        return None
    return Judgement("unknown", c.reasons + [f"workload still progressing at deadlines.total_s={c.obs.deadlines.total_s:.0f} s; raise it"])


def died_after_kills(c: Case) -> Judgement | None:
    if c.unexpected_kills and c.obs.workload_status not in (0, None):  # the kills are in c.reasons
        return Judgement("unknown", c.reasons + [f"the workload failed (status {c.obs.workload_status}) after OOM "
                                                 "kills of processes off the storage path: which of them broke it, "
                                                 "if any, is not known"])
    return None


def last_resort(c: Case) -> Judgement | None:
    p, obs = c.obs.progress, c.obs
    return Judgement("unknown", c.reasons + [
        f"workload ended with status {obs.workload_status} without a recognised cause: "
        f"{(p.error or obs.workload_stderr or p.last_words()).strip()[:200]}"])


@dataclass(frozen=True)
class Rule:
    name: str  # the row of the precedence table
    requires: str  # the evidence it needs, as the table says it
    verdict: str  # the verdict it gives (two when the evidence decides between them)
    decide: Callable[[Case], Judgement | None]


# Ordered: first match wins. A testbed failure before any product verdict; data seen before faults; a
# fault that did not happen as planned before anything the client did; a stall's causes from outside
# the client (paused, starved, the NAS, a fault in place) before the client's own (spinning, blocked).
RULES: tuple[Rule, ...] = (
    Rule("setup failed", "an error before the workload began", "unknown", setup_failed),
    Rule("a VM lost under the case", "a `vm exited` record: a VM's QEMU killed by a signal, or the NAS's ended",
         "unknown", vm_lost),
    Rule("history incomplete", "every declared fault's injection (and heal, when it declares a duration), how "
         "the pressure ended, the whole timeline and events, the workload's own lines; after an exit 0: the "
         "argv's pages x passes verified, a declared verification, the client's answer after the pressure",
         "unknown", history_incomplete),
    Rule("verification failed", "a command workload's verification command exited non-zero", "corrupted",
         verification_failed),
    Rule("data read back differs", "tb-work's mismatch record (page, pass, word)", "corrupted", data_differs),
    Rule("I/O error", "during the workload, a console line of an I/O error naming the case's own device, a swap "
         "I/O error, or a SIGBUS naming a process on the path; or the workload killed by SIGBUS", "io-error",
         io_failed),
    Rule("fault operation failed", "a fault's `*-failed` record", "unknown", fault_failed),
    Rule("fault without effect", "a fault whose intended mechanism was measured and not seen", "unknown",
         mechanism_unseen),
    Rule("path process OOM-killed", "an OOM kill of a declared path process (not an expected victim) before "
         "any stall", "oom", path_process_killed),
    Rule("finished", "the workload's exit 0, its verification (tb-work's or the command's), and the client "
         "answering after it (else a deadlock's evidence is needed)", "recovered, deadlocked or unknown", finished),
    Rule("stall: client paused", "the client's QMP status not running at the end of the stall", "unknown",
         client_paused),
    Rule("stall: QEMU starved", "QEMU waiting for a host CPU half the stall while the guest got little", "unknown",
         qemu_starved),
    Rule("stall: NAS side failed", "the NAS probes' last 5 samples: service down, connections refused or ignored, "
         "or all silent", "stalled", nas_probes_down),
    Rule("stall: path-down fault in place", "a path-down fault in place when progress stopped, never healed",
         "stalled", path_down_fault),
    Rule("stall: NAS VM not running", "the NAS VM's QMP status not running at the end", "stalled",
         nas_vm_not_running),
    Rule("stall: reclaim spinning", "over the stall's last 10 s: client CPU >= 50 % of a core and allocstall or "
         "pgscan_direct rising in >= 60 % of the sample intervals; not when blocked tasks on the path name a "
         "mechanism (then the next row's `deadlocked` wins and says the reclaim spins too)", "livelocked",
         reclaim_spinning),
    Rule("stall: blocked on the path", "a blocked task on the memory/storage path in the sysrq dump (else: "
         "stalled without evidence)", "deadlocked or unknown", blocked_task),
    Rule("client died: out of memory", "the kernel's `Out of memory and no killable processes` panic",
         "oom", out_of_memory_panic),
    Rule("client died", "the client's QEMU ended (panic, oops, poweroff): under an emulator, not a product verdict",
         "unknown", client_died),
    Rule("total deadline", "the workload still progressing at deadlines.total_s", "unknown", total_deadline),
    Rule("died after OOM kills", "OOM kills of processes off the path (not expected victims) and the workload's "
         "non-zero exit: the kills are named, the cause is not known", "unknown", died_after_kills),
    Rule("last resort", "nothing above", "unknown", last_resort),
)


def decide(obs: Observations) -> Judgement:
    """The first rule whose evidence holds decides."""
    c = Case(obs)
    for rule in RULES:
        j = rule.decide(c)
        if j is not None:
            j.rule = rule.name
            return j
    raise AssertionError("the last rule always decides")


def _verdicts(text: str) -> str:
    """`recovered, deadlocked or unknown` -> each verdict as code: the first is the rule's own, the others what
    its evidence can turn it into."""
    names = text.replace(" or ", ", ").split(", ")
    return f"`{names[0]}`" + (f" (or {', '.join(f'`{n}`' for n in names[1:])})" if names[1:] else "")


def precedence_markdown() -> str:
    """The precedence table as docs/verdicts.md shows it (a unit test holds them equal)."""
    lines = ["| # | rule | requires | verdict |", "|---|---|---|---|"]
    lines += [f"| {i} | {r.name} | {r.requires} | {_verdicts(r.verdict)} |" for i, r in enumerate(RULES, 1)]
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- precedence table: generated from testbed/check/rules.py -->", "<!-- end of the generated table -->"


def with_table(doc: str) -> str:
    """`doc` with the text between BEGIN and END replaced by the current table."""
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{precedence_markdown()}{END}{tail}"


if __name__ == "__main__":  # python -m testbed.check.rules docs/verdicts.md: writes the table into the page
    import sys
    from pathlib import Path

    for name in sys.argv[1:]:
        page = Path(name)
        page.write_text(with_table(page.read_text()))
