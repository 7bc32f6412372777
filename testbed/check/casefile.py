"""Reading a finished case folder back into the checker's input, so a verdict is a function of the
folder (`testbed judge`), never of a previous verdict.json. Each folder is read by the rules of its
format (FORMATS): a record its format did not have yet is stood in for, and every stand-in is named in
`notes`; a record its format has and the folder lacks, or a file cut short, is named in
`Observations.incomplete`, which makes the verdict `unknown`."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from testbed.store.index import DamagedCase, read_json
from testbed.check import completeness
from testbed.check.evidence import Evidence, read_evidence
from testbed.check.mechanism import StallFacts
from testbed.check.state import DumpState
from testbed.forensics.read import FILE as FORENSICS  # a memory dump of the client read with drgn: the state
from testbed.check.verdict import Observations
from testbed.config.scenario import Deadlines, Scenario
from testbed.config.strict import from_dict
from testbed.errors import ConfigError, UsageError
from testbed.store.history import Event
from testbed import workload
from testbed.workload import CommandProgress, Progress

# The folder formats, by what a folder holds. A folder records its format (fact `format`) since 3;
# an older one is told by the date of its first event (the commit that brought the records).
FORMATS = {
    1: "before 2026-11-27 18:15 UTC: no workload.jsonl or evidence.json; the workload's result is rebuilt "
       "from the verdict's figures and its exit status",
    2: "since 2026-11-27 18:15 UTC (49905cb): workload.jsonl (the workload's own lines), evidence.json at a stall",
    3: "since 2026-12-07: records its format, the end of the pressure by a deadline or a VM gone, and each "
       "fault whose time never came",
}
FORMAT = max(FORMATS)
FORMAT_2_SINCE = "2026-11-27T18:15"
WORKLOAD_LINES = "workload.jsonl"  # the workload's own output, a line each, as it printed them
EVIDENCE = "evidence.json"  # taken at a stall: the parsed sysrq dump and the mechanism rules' facts
SYSRQ = "sysrq-client.txt"
TIMELINE_SLACK_S = 3.0  # a 1 Hz timeline whose last sample may come before the end's record
FLOAT_UNITS = ("_s", "_ms")  # timeline columns in seconds or milliseconds (t too) are floats
STR_COLS = {"phase", "client_status", "nas_status", "nas_connect_error"}


@dataclass
class CaseFile:
    path: Path
    observations: Observations
    stored: dict[str, Any]  # verdict.json as written
    notes: list[str] = field(default_factory=list)  # what had to be reconstructed, and how


def _events(d: Path, incomplete: list[str]) -> tuple[list[Event], str]:
    """The events but the final verdict record (written after judging), and the first one's wall time."""
    out: list[Event] = []
    if not (d / "events.jsonl").exists():
        incomplete.append("events.jsonl missing")
        return out, ""
    closed, first_wall, damaged = False, "", 0
    for line in (d / "events.jsonl").read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
            t, kind, name = float(row.pop("t")), str(row.pop("kind")), str(row.pop("name"))
        except (ValueError, KeyError, TypeError, AttributeError):  # a line cut short by a crash, or damaged
            damaged += 1
            continue
        first_wall = first_wall or str(row.get("wall") or "")
        row.pop("wall", None)
        closed = kind == "verdict"
        if kind != "verdict":
            out.append(Event(t, kind, name, row))
    if not closed:
        incomplete.append("events.jsonl does not end with its final verdict record (cut short)")
    if damaged:
        incomplete.append(f"events.jsonl has {damaged} unreadable line(s)")
    return out, first_wall


def folder_format(events: list[Event], first_wall: str) -> int:
    rec = next((e for e in events if (e.kind, e.name) == ("fact", "format")), None)
    if rec is not None and isinstance(rec.data.get("version"), int):
        return int(rec.data["version"])
    return 2 if first_wall >= FORMAT_2_SINCE else 1


def ended_by(events: list[Event]) -> str:
    """How the pressure phase ended, from its records (the last stall counts unless withdrawn)."""
    end = ""
    for e in events:
        if e.kind != "workload":
            continue
        if e.name == "stall":
            end = "stall"
        elif e.name == "stall-withdrawn":
            end = ""
        elif e.name == "exit":
            end = "finished" if e.data.get("status") == 0 else "workload-failed"
        elif e.name in ("channel-closed", "client-gone"):
            end = "client-died"
        elif e.name == "total-deadline":
            end = "total-deadline"
    return end


def _typed(key: str, value: str | None) -> Any:
    if key in STR_COLS:
        return value or ""
    if value in ("", None):
        return None
    if key == "t" or key.endswith(FLOAT_UNITS):
        return float(value)
    try:
        return int(value)
    except ValueError:
        return float(value)


def _rows(d: Path, incomplete: list[str]) -> list[dict[str, Any]]:
    if not (d / "timeline.csv").exists():
        incomplete.append("timeline.csv missing")
        return []
    out = []
    with open(d / "timeline.csv", newline="") as f:
        for r in csv.DictReader(f):
            try:
                out.append({k: _typed(k, v) for k, v in r.items() if k is not None})
            except (ValueError, TypeError):  # a row cut short
                incomplete.append(f"timeline.csv row {len(out) + 2} is damaged")
                break
    return out


def _timeline_ends(rows: list[dict[str, Any]], end: float | None, incomplete: list[str]) -> None:
    """The timeline is sampled each second until teardown: it must reach the end of the pressure."""
    if end is None or not rows:
        return
    last = rows[-1].get("t")
    if not isinstance(last, float) or last < end - TIMELINE_SLACK_S:
        incomplete.append(f"timeline.csv ends at t={last} s, before the pressure ended at t={end:.1f} s")


def case_scenario(d: Path) -> Scenario | None:
    """The scenario a case folder ran (its scenario.yaml without the resolved topology); None when missing
    or no longer valid."""
    f = d / "scenario.yaml"
    if not f.exists():
        return None
    try:
        data = yaml.safe_load(f.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    data = {k: v for k, v in data.items() if k != "topology_resolved"}
    try:
        return from_dict(Scenario, data, str(f))
    except ConfigError:
        return None


def load(case_dir: Path) -> CaseFile:
    d = Path(case_dir)
    if not (d / "verdict.json").is_file():
        raise UsageError(f"{d}: not a finished case folder (no verdict.json)")
    stored = read_json(d / "verdict.json")
    if not isinstance(stored, dict):
        raise DamagedCase(f"{d / 'verdict.json'}: not a verdict mapping")
    notes: list[str] = []
    incomplete: list[str] = []
    sc = case_scenario(d)
    if sc is None:
        incomplete.append("scenario.yaml missing or no longer valid: what the case declared cannot be checked")
    deadlines = sc.deadlines if sc else Deadlines()
    events, first_wall = _events(d, incomplete)
    rows = _rows(d, incomplete)
    fmt = folder_format(events, first_wall)
    if fmt < FORMAT:
        notes.append(f"folder format {fmt} ({FORMATS[fmt]}): judged by that format's rules")
    slow = next((e for e in events if e.kind == "fact" and e.name == "slowdown"), None)
    if slow and isinstance(slow.data.get("deadlines"), dict):  # as the run scaled them for its host
        deadlines = Deadlines(**slow.data["deadlines"])
    end = ended_by(events)
    if not end and fmt < 3:
        end = _legacy_end(events, deadlines, notes)
    w = _window_of(events, end, deadlines, notes)
    _timeline_ends(rows, w.end, incomplete)
    status = w.exit_ev.data.get("status") if w.exit_ev else None
    progress = _progress(d, sc, stored, fmt, rows, events, w, status, notes, incomplete)
    evidence, facts = load_evidence(d, notes, incomplete)
    if sc is not None and not facts.protocol:
        facts = replace(facts, protocol=sc.storage.protocol)
    facts = replace(facts, state=load_state(d, notes))
    obs = Observations(
        deadlines=deadlines, progress=progress, events=events, rows=rows,
        setup_error=w.errors[0].data.get("message", "") if w.errors and end != "client-died" else None,
        ended_by=end, workload_status=status,
        workload_stderr=(w.exit_ev.data.get("stderr") or "") if w.exit_ev else "",
        pressure_start=w.start, pressure_end=w.end,
        stall_since=w.stall_ev.data.get("last_progress_t") if w.stall_ev and end == "stall" else None,
        client_answers=w.answers_ev.data.get("ok") if w.answers_ev else None,
        path_processes=sc.path_processes() if sc else (),
        expected_victims=sc.workload.expected_oom_victims if sc else (),
        evidence=evidence, facts=facts,
        declared_faults=completeness.declared_faults(sc) if sc else (),
        declared_verify=completeness.declared_verify(sc) if sc else False,
        incomplete=incomplete,
    )
    return CaseFile(d, obs, stored, notes)


def _legacy_end(events: list[Event], deadlines: Deadlines, notes: list[str]) -> str:
    """A folder before format 3 recorded no end of its own for a client VM gone or the total deadline:
    read from what its events do hold (the client's QEMU exiting; a teardown past the deadline)."""
    start = next((e.t for e in events if (e.kind, e.name) == ("phase", "workload")), None)
    if start is None:
        return ""
    if any((e.kind, e.name) == ("vm", "exited") and e.data.get("vm") == "client" and e.t >= start for e in events):
        notes.append("the client's end read from its QEMU's exit record (no client-gone record before format 3)")
        return "client-died"
    teardown = next((e.t for e in events if (e.kind, e.name) == ("phase", "teardown") and e.t >= start), None)
    if teardown is not None and teardown - start >= deadlines.total_s:
        notes.append("the total deadline read from the teardown's time (no total-deadline record before format 3)")
        return "total-deadline"
    return ""


@dataclass
class _Window:
    """The pressure phase as the events recorded it, and the records that bound it."""

    start_ev: Event | None
    exit_ev: Event | None
    stall_ev: Event | None
    answers_ev: Event | None
    errors: list[Event]
    start: float | None
    end: float | None


def _window_of(events: list[Event], ended_by: str, deadlines: Deadlines, notes: list[str]) -> _Window:
    def first(kind: str, name: str) -> Event | None:
        return next((e for e in events if e.kind == kind and e.name == name), None)

    start_ev = first("phase", "workload")
    start = start_ev.t if start_ev else None
    exit_ev = first("workload", "exit")
    channel_ev = first("workload", "channel-closed") or first("workload", "client-gone")
    stall_ev = next((e for e in reversed(events) if (e.kind, e.name) == ("workload", "stall")), None)  # the last: earlier ones may be withdrawn
    errors = [e for e in events if e.kind == "error" and e.name not in ("traceback", "teardown", "interrupted", "timeline-sample", "nas-probe")]
    end_ev = {"stall": stall_ev, "finished": exit_ev, "workload-failed": exit_ev, "client-died": channel_ev,
              "total-deadline": first("workload", "total-deadline")}.get(ended_by)
    end = end_ev.t if end_ev else None
    if end is None and ended_by == "total-deadline" and start is not None:
        end = start + deadlines.total_s
    elif end is None and ended_by == "client-died" and start is not None:
        after = [e.t for e in events if e.t >= start and (e in errors or (e.kind, e.name) == ("phase", "teardown"))]
        end = after[0] if after else None
        notes.append("end of the pressure taken from the first error or the teardown (no channel-closed event)")
    return _Window(start_ev, exit_ev, stall_ev, first("probe", "client-answers"), errors, start, end)


def _progress(d: Path, sc: Scenario | None, stored: dict[str, Any], fmt: int, rows: list[dict[str, Any]],
              events: list[Event], w: _Window, status: int | None, notes: list[str], incomplete: list[str]) -> Progress:
    """The workload's progress as its lines (or, for a command, its lines and CPU) recorded it; for a folder of
    format 1 (before workload.jsonl), rebuilt from the verdict's figures, as that format's rules did."""
    figures = stored.get("figures") or {}
    progress = workload.get(sc.workload.kind).new_progress(sc.workload) if sc else Progress()
    lines = d / WORKLOAD_LINES
    if isinstance(progress, CommandProgress):
        command_progress(progress, lines, rows, events)
    elif lines.exists():
        for line in lines.read_text(errors="replace").splitlines():
            progress.feed(line)
    elif fmt >= 2:
        if w.start_ev is not None:  # the workload ran: its lines are part of the record
            incomplete.append(f"{WORKLOAD_LINES} missing (the workload's own lines: what it verified)")
    else:
        notes.append(f"no {WORKLOAD_LINES} (format 1): the workload's result rebuilt from the "
                     "verdict's figures and its exit status; a data mismatch cannot be re-derived")
        progress.done = int(figures.get("progress_pages") or 0)
        progress.total = int(figures.get("progress_total") or 0)
        argv = (w.start_ev.data.get("argv") if w.start_ev else None) or []
        if status == 0 and len(argv) >= 3 and argv[-3].isdigit():
            progress.finished = {"done": True, "pages": int(argv[-3]) * 256, "passes": int(argv[-2]),
                                 "seconds": figures.get("workload_s")}
        if stored.get("verdict") == "corrupted":
            m = next((re.search(r"page (\S+) \(pass", r) for r in stored.get("reasons", []) if "data read back" in r), None)
            progress.mismatch = {"page": m.group(1) if m else figures.get("first_bad_page")}
    return progress


def command_progress(p: CommandProgress, lines: Path, rows: list[dict[str, Any]], events: list[Event]) -> None:
    """A command workload's progress as the run saw it: its output lines, its group's CPU time (the
    timeline's workload_user_s), and what its end and verification recorded."""
    if lines.exists():
        for line in lines.read_text(errors="replace").splitlines():
            p.feed(line)
    for r in rows:
        user, system = r.get("workload_user_s"), r.get("workload_system_s")
        if user is not None:
            p.feed_cpu({"user_usec": round(user * 1e6), "system_usec": round((system or 0) * 1e6)})
    # The verification's own record decides whether the command finished: a `finished` record beside a
    # verification that did not exit 0 is never taken for it.
    verify = next((e for e in events if (e.kind, e.name) == ("workload", "verify")), None)
    finished = next((e for e in events if (e.kind, e.name) == ("workload", "finished")), None)
    status = verify.data.get("status") if verify else None
    if verify and isinstance(status, int) and status > 0 and status not in (126, 127) and not verify.data.get("timed_out"):
        p.mismatch = {"verify": verify.data.get("argv") or [], "status": status, "output": verify.data.get("output") or []}
    elif verify and status != 0:
        p.error = verify.data.get("error") or f"the verification command did not finish or could not check (status {status})"
    elif finished:
        p.finished = {k: v for k, v in finished.data.items() if k != "verify"}  # only its own record says so
        if verify:  # exit 0
            p.finished["verify"] = {"argv": verify.data.get("argv") or [], "status": 0}


def load_state(d: Path, notes: list[str]) -> DumpState | None:
    """The guest's state at the stall from forensics.json (a memory dump read with drgn), if the case has one."""
    f = d / FORENSICS
    if not f.exists():
        return None
    try:
        return DumpState.from_forensics(json.loads(f.read_text(errors="replace")))
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # damaged: the stacks still judge
        notes.append(f"{FORENSICS} unreadable ({type(e).__name__}): the mechanism is named from the stacks alone")
        return None


def load_evidence(d: Path, notes: list[str], incomplete: list[str] | None = None) -> tuple[Evidence | None, StallFacts]:
    if (d / EVIDENCE).exists():
        try:
            data = json.loads((d / EVIDENCE).read_text(errors="replace"))
            return Evidence.from_dict(data["evidence"]), StallFacts.from_dict(data.get("facts"))
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # cut short or damaged: no evidence
            (incomplete if incomplete is not None else notes).append(f"{EVIDENCE} unreadable ({type(e).__name__})")
            return None, StallFacts()
    if (d / SYSRQ).exists() and "Show Blocked State" in (d / SYSRQ).read_text(errors="replace"):
        notes.append(f"no {EVIDENCE} (written since 2026-11-27): the blocked tasks parsed from {SYSRQ}")
        return read_evidence((d / SYSRQ).read_text(), sources=(SYSRQ,)), StallFacts()
    return None, StallFacts()
