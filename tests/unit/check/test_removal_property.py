"""Removing evidence never yields a verdict whose own required evidence was removed, and never turns a
failure into `recovered` (hypothesis, over committed case folders): delete or truncate a file the judge
reads, delete an event, or blank a field of one, then judge the copy again.

What each verdict requires is stated here as records a folder must still hold when that verdict is
given (the rule table's `requires`, as checks): a `recovered` needs the workload's exit 0, the client's
answer after it, the workload's own `done` line, every declared fault's injection, and events closed
by their final record; a `deadlocked` needs the stall record and a dump of blocked tasks."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.check import casefile
from testbed.check.verdict import judge

RESULTS = Path(__file__).parents[3] / "results"
FOLDERS = [RESULTS / p for p in (
    "20261128-032624-tb245036/nfs-swap",  # recovered, anon, format 2
    "20261127-211457-tbb3cc1c/restart-service-r1",  # recovered through a nas-outage fault
    "20261203-071542-tbd5c6fb/nfs",  # recovered, fio with its verification
    "20261128-001915-tb507179/nfs-cold-1",  # deadlocked
    "20261207-180316-tb80411b/control-nas-frozen-r1",  # stalled
)]
JUDGED = ("events.jsonl", "timeline.csv", "scenario.yaml", "workload.jsonl", "evidence.json", "sysrq-client.txt")
ORIGINAL = {f: judge(casefile.load(f).observations).verdict for f in FOLDERS}


def lines(case: Path, name: str) -> list[str]:
    p = case / name
    return p.read_text(errors="replace").splitlines() if p.exists() else []


def events(case: Path) -> list[dict]:
    out = []
    for x in lines(case, "events.jsonl"):
        try:
            out.append(json.loads(x))
        except ValueError:
            pass
    return out


def has(case: Path, kind: str, name: str, **want: object) -> bool:
    return any(e.get("kind") == kind and e.get("name") == name and all(e.get(k) == v for k, v in want.items())
               for e in events(case))


def recovered_evidence(case: Path) -> list[str]:
    """What a `recovered` verdict needs, missing from this folder."""
    missing = []
    rows = events(case)
    if not rows or rows[-1].get("kind") != "verdict":
        missing.append("final record")
    if not has(case, "workload", "exit", status=0):
        missing.append("exit 0")
    if not has(case, "probe", "client-answers", ok=True):
        missing.append("client answer")
    command = any(x.strip().startswith("kind: command") for x in lines(case, "scenario.yaml"))
    if not command and not any(x.replace(" ", "").startswith('{"done":true') for x in lines(case, "workload.jsonl")):
        missing.append("done line")
    declared = sum(1 for x in lines(case, "scenario.yaml") if x.lstrip().startswith("- kind:"))
    injected = {e.get("index") for e in rows if e.get("kind") == "fault" and str(e.get("name", "")).endswith(":inject")}
    if len(injected) < declared:
        missing.append("fault injection")
    return missing


def deadlocked_evidence(case: Path) -> list[str]:
    missing = [] if has(case, "workload", "stall") else ["stall record"]
    dump = (case / "evidence.json").exists() or "Show Blocked State" in "\n".join(lines(case, "sysrq-client.txt"))
    return missing + ([] if dump else ["blocked-task dump"])


@st.composite
def mutations(draw: st.DrawFn) -> tuple[Path, str, str, int, int]:
    folder = draw(st.sampled_from(FOLDERS))
    name = draw(st.sampled_from([n for n in JUDGED if (folder / n).exists()]))
    op = draw(st.sampled_from(["delete-file", "truncate", "delete-line", "blank-field"]))
    return folder, name, op, draw(st.integers(0, 10_000)), draw(st.integers(0, 50))


def mutate(case: Path, name: str, op: str, at: int, field_at: int) -> None:
    p = case / name
    text = p.read_text(errors="replace").splitlines(keepends=True)
    if op == "delete-file" or not text:
        p.unlink()
    elif op == "truncate":
        p.write_text("".join(text)[: at % max(1, len("".join(text)))])
    elif op == "delete-line":
        del text[at % len(text)]
        p.write_text("".join(text))
    elif name == "events.jsonl":  # blank-field: one key of one event
        i = at % len(text)
        row = json.loads(text[i])
        keys = [k for k in row if k not in ("t", "kind", "name")] or ["name"]
        row[keys[field_at % len(keys)]] = None
        text[i] = json.dumps(row) + "\n"
        p.write_text("".join(text))
    else:  # blank-field elsewhere: one line emptied
        text[at % len(text)] = "\n"
        p.write_text("".join(text))


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations())
def test_removing_evidence_never_yields_a_verdict_without_its_evidence(m: tuple[Path, str, str, int, int]) -> None:
    folder, name, op, at, field_at = m
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(tmp) / folder.name
        case.mkdir()
        for f in (*JUDGED, "verdict.json", "zoneinfo-start.txt"):
            if (folder / f).exists():
                shutil.copy(folder / f, case / f)
        mutate(case, name, op, at, field_at)
        v = judge(casefile.load(case).observations).verdict
        where = f"{folder.name}: {op} {name} @{at}/{field_at}"
        if ORIGINAL[folder] != "recovered":
            assert v != "recovered", f"{where}: a {ORIGINAL[folder]} case became recovered"
        if v == "recovered":
            assert not recovered_evidence(case), f"{where}: recovered without {recovered_evidence(case)}"
        if v == "deadlocked":
            assert not deadlocked_evidence(case), f"{where}: deadlocked without {deadlocked_evidence(case)}"
