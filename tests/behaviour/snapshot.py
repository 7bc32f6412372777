"""Deterministic plain-text snapshot of the CLI's observable behaviour, to diff before/after a refactor.

    python tests/behaviour/snapshot.py --root REPO_DIR > out.txt

Everything runs the code of the checkout REPO_DIR (PYTHONPATH=REPO_DIR, cwd=REPO_DIR, `python -m testbed`
with this interpreter); REPO_DIR is replaced by <ROOT> in all output so two checkouts compare equal.
Sections: 0 which testbed is imported, 1 `testbed validate`, 2 `--help` of every verb and sub-verb,
3 verdicts of committed case folders re-judged by the checkout's checker.

Not a pytest module (no test_ functions, the file name does not match test_*.py). Boots nothing.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------------
# The only place that knows the checker's input: adapt this function when the checker's API changes.
# It runs in a child process whose `testbed` is the checkout's.
# ---------------------------------------------------------------------------------------------------


def observations_from_folder(case_dir):  # type: ignore[no-untyped-def]
    """Rebuild testbed.check.verdict.Observations from a finished case folder, as faithfully as the
    stored files allow (see testbed/engine/runner.py, which fills it during a run).

    Reconstructed exactly (or to the stored rounding):
      - events: events.jsonl, one Event(t, kind, name, data) per line, `wall` dropped; the `verdict`
        event is left out (it is written after judging).
      - rows: timeline.csv, typed as Timeline keeps them in memory: t, agent_age_s, ping_ms, client_cpu_s
        float; phase, client_status, nas_status str ("" stays ""); every other column int; an empty cell
        (None written by csv) is None. No timeline.csv (some evidence folders) -> no rows, as a case that
        never started its timeline.
      - deadlines: scenario.yaml `deadlines`.
      - ended_by: verdict.json.
      - pressure_start: t of the phase event "workload" (the runner takes it a moment later, after the
        agent started the job).
      - pressure_end: t of the workload "stall" / "exit" / "channel-closed" event (the runner takes it just
        after); for total-deadline, pressure_start + deadlines.total_s (the runner: the first 0.5 s poll
        past it); for a client that died without "channel-closed", t of the first error event or of the
        teardown phase after the pressure started (an upper bound).
      - stall_since: `last_progress_t` of the workload "stall" event (rounded there to 0.1 s).
      - workload_status / workload_stderr: the workload "exit" event (stderr there is only its last 500
        characters).
      - client_answers: the probe "client-answers" event.
      - setup_error: `message` of the runner's error event (kind error, named after the exception class),
        unless ended_by is client-died (the runner sets no setup_error then).
      - progress.done / total: the verdict's figures progress_pages / progress_total (the checker's own
        copy of them), else the last timeline row (else the stall event's `progress`).
      - progress.finished: when the workload exit status is 0, {"done": true, "pages", "passes",
        "seconds"} as tb-work prints it: pages = size_mb * 256 and passes from the workload argv (phase
        event), seconds from the figure workload_s.
      - progress.mismatch: only from a stored `corrupted` verdict (figure first_bad_page and its reason
        text "page P (pass S, word W)"), i.e. circular: tb-work's mismatch line itself is not stored.

    Cannot be reconstructed (not stored anywhere): progress.error (tb-work's {"error": ...} line; it only
    shows in the final `unknown` reason), progress.pass_ / phase / other (not used by the checker), the
    full workload stderr beyond 500 characters, and data keys of an event named `t` or `wall` (they
    overwrote the event's own fields in events.jsonl).
    """
    import csv
    import dataclasses
    import json
    import re
    from pathlib import Path

    import yaml

    try:  # since `testbed judge`, the product reads a case folder itself (evidence.json included)
        from testbed.check import casefile
    except ImportError:
        casefile = None
    if casefile is not None:
        return casefile.load(Path(case_dir)).observations

    from testbed.check.verdict import Observations
    from testbed.config.scenario import Deadlines
    from testbed.store.history import Event
    from testbed.workload import Progress

    d = Path(case_dir)
    verdict = json.loads((d / "verdict.json").read_text())
    figures = verdict.get("figures") or {}
    ended_by = verdict.get("ended_by") or ""

    scenario = yaml.safe_load((d / "scenario.yaml").read_text()) if (d / "scenario.yaml").exists() else {}
    known = {f.name for f in dataclasses.fields(Deadlines)}
    deadlines = Deadlines(**{k: v for k, v in ((scenario or {}).get("deadlines") or {}).items() if k in known})

    events: list = []
    if (d / "events.jsonl").exists():
        for line in (d / "events.jsonl").read_text().splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:  # a line cut short by a crash
                continue
            t, kind, name = row.pop("t"), row.pop("kind"), row.pop("name")
            row.pop("wall", None)
            if kind == "verdict":
                continue
            events.append(Event(t, kind, name, row))

    float_cols, str_cols = {"t", "agent_age_s", "ping_ms", "client_cpu_s"}, {"phase", "client_status", "nas_status"}

    def typed(key: str, value: str):  # type: ignore[no-untyped-def]
        if key in str_cols:
            return value
        if value == "":
            return None
        if key in float_cols:
            return float(value)
        try:
            return int(value)
        except ValueError:
            return float(value)

    rows: list = []
    if (d / "timeline.csv").exists():
        with open(d / "timeline.csv", newline="") as f:
            rows = [{k: typed(k, v) for k, v in r.items()} for r in csv.DictReader(f)]

    def first(kind: str, name: str):  # type: ignore[no-untyped-def]
        return next((e for e in events if e.kind == kind and e.name == name), None)

    start_ev = first("phase", "workload")
    pressure_start = start_ev.t if start_ev else None
    argv = (start_ev.data.get("argv") if start_ev else None) or []
    exit_ev, stall_ev = first("workload", "exit"), first("workload", "stall")
    channel_ev = first("workload", "channel-closed")
    answers_ev = first("probe", "client-answers")
    runner_errors = [e for e in events if e.kind == "error"
                     and e.name not in ("traceback", "teardown", "interrupted", "timeline-sample")]

    pressure_end = None
    if ended_by == "stall" and stall_ev:
        pressure_end = stall_ev.t
    elif ended_by in ("finished", "workload-failed") and exit_ev:
        pressure_end = exit_ev.t
    elif ended_by == "total-deadline" and pressure_start is not None:
        pressure_end = pressure_start + deadlines.total_s
    elif ended_by == "client-died":
        if channel_ev:
            pressure_end = channel_ev.t
        elif pressure_start is not None:
            after = [e.t for e in events if e.t >= pressure_start
                     and (e in runner_errors or (e.kind == "phase" and e.name == "teardown"))]
            pressure_end = after[0] if after else None

    progress = Progress()
    if figures.get("progress_pages") is not None:
        progress.done = int(figures["progress_pages"])
        progress.total = int(figures.get("progress_total") or 0)
    elif rows:
        progress.done, progress.total = int(rows[-1]["progress"] or 0), int(rows[-1]["total"] or 0)
    elif stall_ev and stall_ev.data.get("progress") is not None:
        progress.done = int(stall_ev.data["progress"])
    workload_status = exit_ev.data.get("status") if exit_ev else None
    if workload_status == 0:
        pages = passes = None
        if len(argv) >= 3:
            try:
                pages, passes = int(argv[-3]) * 256, int(argv[-2])
            except ValueError:
                pass
        progress.finished = {"done": True, "pages": pages, "passes": passes, "seconds": figures.get("workload_s")}
    if verdict.get("verdict") == "corrupted" and "first_bad_page" in figures:
        m = next((re.search(r"page (\S+) \(pass (\S+), word (\S+)\)", r) for r in verdict.get("reasons", [])
                  if "data read back differs" in r), None)

        def num(s: str):  # type: ignore[no-untyped-def]
            return None if s == "None" else int(s) if s.lstrip("-").isdigit() else s

        progress.mismatch = ({"page": num(m.group(1)), "pass": num(m.group(2)), "word": num(m.group(3))} if m
                             else {"page": figures["first_bad_page"]})

    extra = {}
    if "path_processes" in {f.name for f in dataclasses.fields(Observations)}:
        # After the roles declared their processes: the case's own scenario says which they are.
        from testbed.config.scenario import Scenario
        from testbed.config.strict import from_dict

        data = {k: v for k, v in (scenario or {}).items() if k != "topology_resolved"}
        extra["path_processes"] = from_dict(Scenario, data, str(d / "scenario.yaml")).path_processes()
    return Observations(
        **extra,
        deadlines=deadlines,
        progress=progress,
        events=events,
        rows=rows,
        setup_error=(runner_errors[0].data.get("message", "") if runner_errors and ended_by != "client-died" else None),
        ended_by=ended_by,
        workload_status=workload_status,
        workload_stderr=(exit_ev.data.get("stderr") or "") if exit_ev else "",
        pressure_start=pressure_start,
        pressure_end=pressure_end,
        stall_since=(stall_ev.data.get("last_progress_t") if stall_ev and ended_by == "stall" else None),
        client_answers=(answers_ev.data.get("ok") if answers_ev else None),
    )


def judge_folder(case_dir):  # type: ignore[no-untyped-def]
    """Child side: the checkout's checker on the rebuilt observations (public API only)."""
    from testbed.check.verdict import judge

    j = judge(observations_from_folder(case_dir))
    return {"verdict": j.verdict, "reasons": list(j.reasons), "figures": dict(j.figures)}


# ---------------------------------------------------------------------------------------------------
# Driver: subprocesses only; no testbed import in this process.
# ---------------------------------------------------------------------------------------------------

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

EVIDENCE = Path("/work/shared/evidence")
TIMEOUT_S = 120
SCRIPT = Path(__file__).resolve()

BAD_INPUTS = [
    ("scenarios/faults/ipsec.yaml", ["storage.protocol=aoe"]),
    ("scenarios/faults/link-cut.yaml", ["faults.0.kind=nope"]),
    ("scenarios/nfs-swap.yaml", ["client.mem_mb=64"]),
    ("scenarios/nfs-swap.yaml", ["storage.nfs.transport=udp"]),
    ("scenarios/faults/dhcp-renew.yaml", ["storage.nfs.transport=udp"]),
    ("scenarios/faults/multiplexed.yaml", ["storage.nfs.transport=udp"]),
    ("scenarios/faults/dhcp-renew.yaml", ["storage.protocol=local"]),
    ("scenarios/faults/multiplexed.yaml", ["storage.protocol=local"]),
    ("scenarios/nfs-swap.yaml", ["storage.iscsi.lun_mb=10", "storage.protocol=iscsi"]),
]


class Env:
    def __init__(self, given: Path):
        root = self.root = given.resolve()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TESTBED_", "PYTHON", "FORCE_COLOR"))}
        env.update(PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0", COLUMNS="120",
                   LINES="50", NO_COLOR="1", LC_ALL="C.UTF-8", LANG="C.UTF-8", TERM="dumb")
        self.env = env
        self.prefixes = sorted({str(root), str(given.absolute())}, key=len, reverse=True)

    def strip(self, text: str) -> str:
        for p in self.prefixes:
            text = text.replace(p, "<ROOT>")
        return text

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        try:
            p = subprocess.run([sys.executable, *argv], cwd=self.root, env=self.env, capture_output=True, text=True,
                               timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
            return p.returncode, self.strip(p.stdout), self.strip(p.stderr)
        except subprocess.TimeoutExpired:
            return -1, "", f"TIMEOUT after {TIMEOUT_S} s"

    def testbed(self, args: list[str]) -> tuple[int, str, str]:
        return self.run(["-m", "testbed", *args])


def block(label: str, text: str) -> list[str]:
    lines = text.splitlines()
    if not lines:
        return [f"{label}: (empty)"]
    return [f"{label}:"] + [f"  | {line}".rstrip() for line in lines] + ([] if text.endswith("\n") else ["  (no final newline)"])


def command_record(args: list[str], result: tuple[int, str, str]) -> list[str]:
    status, out, err = result
    return [f"$ testbed {' '.join(args)}".rstrip(), f"exit: {status}", *block("stdout", out), *block("stderr", err), ""]


def section_import(env: Env) -> list[str]:
    status, out, err = env.run(["-c", "import testbed; print(testbed.__file__)"])
    return ["=== 0. testbed imported from", f"exit: {status}", *block("stdout", out), *block("stderr", err), ""]


def section_validate(env: Env) -> list[str]:
    files = sorted(p.relative_to(env.root).as_posix() for p in (env.root / "scenarios").rglob("*.yaml") if p.is_file())
    runs: list[list[str]] = [[f] for f in files]
    for f, sets in BAD_INPUTS:
        runs.append([x for s in sets for x in ("--set", s)] + [f])
    out = [f"=== 1. validate ({len(runs)} runs: {len(files)} files, {len(BAD_INPUTS)} overrides)", ""]
    for r in runs:
        out += command_record(["validate", *r], env.testbed(["validate", *r]))
    return out


SUBVERBS = re.compile(r"(?<!\[)\{([^{}\s]+)\} \.\.\.")


def subverbs(help_text: str) -> list[str]:
    usage = help_text.split("\n\n", 1)[0]  # the usage block, wrapped or not
    m = SUBVERBS.search(usage)
    return m.group(1).split(",") if m else []


def section_help(env: Env) -> list[str]:
    records: list[list[str]] = []

    def visit(path: list[str]) -> None:
        args = [*path, "--help"]
        result = env.testbed(args)
        records.append(command_record(args, result))
        for v in subverbs(result[1]) if result[0] == 0 else []:
            visit([*path, v])

    visit([])
    bare = env.testbed([])
    records.append(command_record([], bare))
    out = [f"=== 2. help ({len(records)} commands)", ""]
    for r in records:
        out += r
    return out


def case_dirs(root: Path) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    if (root / "results").is_dir():
        found += sorted((p.parent.relative_to(root).as_posix(), p.parent) for p in (root / "results").rglob("verdict.json"))
    if EVIDENCE.is_dir():
        found += sorted((str(p.parent), p.parent) for p in EVIDENCE.rglob("verdict.json"))
    return found


def section_verdicts(env: Env) -> list[str]:
    cases = case_dirs(env.root)
    out = [f"=== 3. re-judged verdicts ({len(cases)} cases)", ""]
    for label, d in cases:
        stored = json.loads((d / "verdict.json").read_text())
        status, so, se = env.run([str(SCRIPT), "--judge", str(d)])
        out.append(f"--- {label}")
        out.append(f"stored:    {stored.get('verdict')} (ended_by {stored.get('ended_by')!r})")
        try:
            if status != 0:
                raise ValueError
            j = json.loads(so)
        except ValueError:
            out += [f"rejudged:  FAILED (exit {status})", *block("stdout", so), *block("stderr", se), ""]
            continue
        same = "same" if j["verdict"] == stored.get("verdict") else "DIFFERS"
        out.append(f"rejudged:  {j['verdict']} ({same})")
        out += [f"  reason: {r}" for r in j["reasons"]]
        out.append(f"  figures: {json.dumps(j['figures'], sort_keys=True, default=repr)}")
        if se:
            out += block("stderr", se)
        out.append("")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, help="the checkout whose code runs")
    ap.add_argument("--judge", metavar="CASE_DIR", help=argparse.SUPPRESS)  # child mode
    a = ap.parse_args()
    if a.judge:
        import testbed

        # PYTHONPATH must have won over any installed (e.g. editable) copy.
        where = Path(testbed.__file__).resolve()
        expect = Path(os.environ["PYTHONPATH"].split(os.pathsep)[0]).resolve()
        if expect not in where.parents:
            print(f"testbed imported from {where}, not from {expect}", file=sys.stderr)
            return 2
        print(json.dumps(judge_folder(a.judge), sort_keys=True, default=repr))
        return 0
    if not a.root:
        ap.error("--root is required")
    env = Env(a.root)
    lines = [f"# behaviour snapshot of <ROOT> (python {sys.version_info.major}.{sys.version_info.minor})", ""]
    for section in (section_import, section_validate, section_help, section_verdicts):
        lines += section(env)
    sys.stdout.write("\n".join(lines).rstrip("\n") + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
