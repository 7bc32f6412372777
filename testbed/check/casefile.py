"""Reading a finished case folder back into the checker's input, so a verdict is a function of the
folder (`testbed judge`). Folders written before a file existed are read from what they hold, and
every stand-in is named in `notes`."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from testbed.store.index import DamagedCase, read_json
from testbed.check.evidence import Evidence, read_evidence
from testbed.check.mechanism import StallFacts
from testbed.check.verdict import Observations
from testbed.config.scenario import Deadlines, Scenario
from testbed.config.strict import from_dict
from testbed.errors import ConfigError, UsageError
from testbed.store.history import Event
from testbed import workload
from testbed.workload import CommandProgress, Progress

WORKLOAD_LINES = "workload.jsonl"  # the workload's own output, a line each, as it printed them
EVIDENCE = "evidence.json"  # taken at a stall: the parsed sysrq dump and the mechanism rules' facts
SYSRQ = "sysrq-client.txt"
FLOAT_UNITS = ("_s", "_ms")  # timeline columns in seconds or milliseconds (t too) are floats
STR_COLS = {"phase", "client_status", "nas_status", "nas_connect_error"}


@dataclass
class CaseFile:
    path: Path
    observations: Observations
    stored: dict[str, Any]  # verdict.json as written
    notes: list[str] = field(default_factory=list)  # what had to be reconstructed, and how


def _events(d: Path) -> list[Event]:
    out: list[Event] = []
    if not (d / "events.jsonl").exists():
        return out
    for line in (d / "events.jsonl").read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
            t, kind, name = float(row.pop("t")), str(row.pop("kind")), str(row.pop("name"))
        except (ValueError, KeyError, TypeError, AttributeError):  # a line cut short by a crash, or damaged
            continue
        row.pop("wall", None)
        if kind != "verdict":  # written after judging
            out.append(Event(t, kind, name, row))
    return out


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


def _rows(d: Path) -> list[dict[str, Any]]:
    if not (d / "timeline.csv").exists():
        return []
    with open(d / "timeline.csv", newline="") as f:
        return [{k: _typed(k, v) for k, v in r.items()} for r in csv.DictReader(f)]


def _scenario(d: Path) -> Scenario | None:
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
    ended_by = stored.get("ended_by") or ""
    notes: list[str] = []
    sc = _scenario(d)
    if sc is None:
        notes.append("scenario.yaml missing or no longer valid: default deadlines, no declared path processes")
    deadlines = sc.deadlines if sc else Deadlines()
    events, rows = _events(d), _rows(d)
    slow = next((e for e in events if e.kind == "fact" and e.name == "slowdown"), None)
    if slow and isinstance(slow.data.get("deadlines"), dict):  # as the run scaled them for its host
        deadlines = Deadlines(**slow.data["deadlines"])
    if not rows:
        notes.append("no timeline.csv: figures and recovery times from the timeline cannot be computed")
    w = _window_of(events, ended_by, deadlines, notes)
    status = w.exit_ev.data.get("status") if w.exit_ev else None
    progress = _progress(d, sc, stored, rows, events, w, status, notes)
    evidence, facts = load_evidence(d, notes)
    if sc is not None and not facts.protocol:
        facts = replace(facts, protocol=sc.storage.protocol)
    obs = Observations(
        deadlines=deadlines, progress=progress, events=events, rows=rows,
        setup_error=w.errors[0].data.get("message", "") if w.errors and ended_by != "client-died" else None,
        ended_by=ended_by, workload_status=status,
        workload_stderr=(w.exit_ev.data.get("stderr") or "") if w.exit_ev else "",
        pressure_start=w.start, pressure_end=w.end,
        stall_since=w.stall_ev.data.get("last_progress_t") if w.stall_ev and ended_by == "stall" else None,
        client_answers=w.answers_ev.data.get("ok") if w.answers_ev else None,
        path_processes=sc.path_processes() if sc else (),
        expected_victims=sc.workload.expected_oom_victims if sc else (),
        evidence=evidence, facts=facts,
    )
    return CaseFile(d, obs, stored, notes)


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
    exit_ev, channel_ev = first("workload", "exit"), first("workload", "channel-closed")
    stall_ev = next((e for e in reversed(events) if (e.kind, e.name) == ("workload", "stall")), None)  # the last: earlier ones may be withdrawn
    errors = [e for e in events if e.kind == "error" and e.name not in ("traceback", "teardown", "interrupted", "timeline-sample", "nas-probe")]
    end_ev = {"stall": stall_ev, "finished": exit_ev, "workload-failed": exit_ev, "client-died": channel_ev}.get(ended_by)
    end = end_ev.t if end_ev else None
    if end is None and ended_by == "total-deadline" and start is not None:
        end = start + deadlines.total_s
    elif end is None and ended_by == "client-died" and start is not None:
        after = [e.t for e in events if e.t >= start and (e in errors or (e.kind, e.name) == ("phase", "teardown"))]
        end = after[0] if after else None
        notes.append("end of the pressure taken from the first error or the teardown (no channel-closed event)")
    return _Window(start_ev, exit_ev, stall_ev, first("probe", "client-answers"), errors, start, end)


def _progress(d: Path, sc: Scenario | None, stored: dict[str, Any], rows: list[dict[str, Any]], events: list[Event],
              w: _Window, status: int | None, notes: list[str]) -> Progress:
    """The workload's progress as its lines (or, for a command, its lines and CPU) recorded it; rebuilt from
    the verdict's figures for a case older than workload.jsonl."""
    figures = stored.get("figures") or {}
    progress = workload.get(sc.workload.kind).new_progress(sc.workload) if sc else Progress()
    lines = d / WORKLOAD_LINES
    if isinstance(progress, CommandProgress):
        command_progress(progress, lines, rows, events)
    elif lines.exists():
        for line in lines.read_text().splitlines():
            progress.feed(line)
    else:
        notes.append(f"no {WORKLOAD_LINES} (written since 2026-11-27): the workload's result rebuilt from the "
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
    verify = next((e for e in events if (e.kind, e.name) == ("workload", "verify")), None)
    finished = next((e for e in events if (e.kind, e.name) == ("workload", "finished")), None)
    if finished:
        p.finished = dict(finished.data)
    elif verify and isinstance(status := verify.data.get("status"), int) and status > 0 and status not in (126, 127) \
            and not verify.data.get("timed_out"):
        p.mismatch = {"verify": verify.data.get("argv") or [], "status": verify.data.get("status"),
                      "output": verify.data.get("output") or []}
    elif verify:
        p.error = verify.data.get("error") or f"the verification command did not finish or could not check (status {verify.data.get('status')})"


def load_evidence(d: Path, notes: list[str]) -> tuple[Evidence | None, StallFacts]:
    if (d / EVIDENCE).exists():
        data = json.loads((d / EVIDENCE).read_text())
        return Evidence.from_dict(data["evidence"]), StallFacts.from_dict(data.get("facts"))
    if (d / SYSRQ).exists() and "Show Blocked State" in (d / SYSRQ).read_text(errors="replace"):
        notes.append(f"no {EVIDENCE} (written since 2026-11-27): the blocked tasks parsed from {SYSRQ}")
        return read_evidence((d / SYSRQ).read_text(), sources=(SYSRQ,)), StallFacts()
    return None, StallFacts()
