"""Reading runs back: resolve RUN arguments, pivot tables of verdicts, case details, run-to-run comparison."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.errors import UsageError
from testbed.index import CaseRecord, read_case, read_run
from testbed.paths import results_dir
from testbed.check.verdict import is_ok

FAILURES = ("deadlocked", "livelocked", "stalled", "oom", "io-error", "corrupted")


def resolve_run(ref: str) -> Path:
    """A run id under results/, `latest`, or a path to a run folder."""
    for cand in (Path(ref), results_dir() / ref):
        if (cand / "run.json").exists():
            return cand.resolve()
    raise UsageError(f"no run {ref!r} (looked in {results_dir()}); `ls {results_dir()}` lists the runs")


def load_cases(ref: str) -> list[CaseRecord]:
    cases = read_run(resolve_run(ref))
    if not cases:
        raise UsageError(f"run {ref} has no complete case")
    return cases


def _fmt(v: Any) -> str:
    return "-" if v is None else str(v)


def pivot(cases: list[CaseRecord], rows: str, cols: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows: verdict counts and median time to recover per (row value, column value)."""
    cells: dict[tuple[str, str], list[CaseRecord]] = defaultdict(list)
    rvals, cvals = [], []
    for c in cases:
        r, k = _fmt(c.value(rows)), _fmt(c.value(cols))
        cells[(r, k)].append(c)
        if r not in rvals:
            rvals.append(r)
        if k not in cvals:
            cvals.append(k)
    header = [f"{rows} \\ {cols}", *cvals]
    body = []
    for r in rvals:
        line = [r]
        for k in cvals:
            group = cells.get((r, k), [])
            if not group:
                line.append("")
                continue
            counts = Counter(c.verdict["verdict"] for c in group)
            text = " ".join(f"{v}:{n}" for v, n in sorted(counts.items()))
            ttr = [c.verdict.get("figures", {}).get("time_to_recover_s") for c in group]
            ttr = [t for t in ttr if t is not None]
            if ttr:
                text += f" ttr {statistics.median(ttr):.1f}s"
            line.append(text)
        body.append(line)
    return header, body


def show_lines(rec: CaseRecord) -> list[str]:
    v = rec.verdict
    out = [f"{rec.run}/{rec.case_id}: {v['verdict']}" + (f" (expected {v['expected']})" if v.get("expected") else "")]
    if rec.axes:
        out.append("axes: " + ", ".join(f"{k}={val}" for k, val in rec.axes.items()))
    out += [f"  reason: {r}" for r in v.get("reasons", [])]
    if v.get("mechanism"):
        out.append(f"  mechanism: {v['mechanism']['sentence']}")
    for k, val in v.get("figures", {}).items():
        out.append(f"  {k}: {_fmt(val)}")
    out.append("evidence:")
    out += [f"  {p}" for p in sorted(rec.path.iterdir())]
    return out


@dataclass
class Change:
    case_id: str
    what: str
    before: Any
    after: Any
    worse: bool


COMPARED = ("time_to_recover_s", "case_wall_s", "workload_wall_s", "swap_out_mb", "pfmemalloc_drop_peak", "allocstall")
# Figures where growth is a regression (others are reported, not judged).
WORSE_WHEN_UP = ("time_to_recover_s",)


def compare(a: list[CaseRecord], b: list[CaseRecord], threshold: float) -> tuple[list[Change], list[str]]:
    """Verdict changes and figures that moved by more than `threshold` (relative); plus cases in one run only."""
    by_a, by_b = {c.case_id: c for c in a}, {c.case_id: c for c in b}
    changes: list[Change] = []
    for cid in sorted(set(by_a) & set(by_b)):
        va, vb = by_a[cid].verdict, by_b[cid].verdict
        if va["verdict"] != vb["verdict"]:
            was, now = is_ok(va["verdict"], va.get("expected")), is_ok(vb["verdict"], vb.get("expected"))
            changes.append(Change(cid, "verdict", va["verdict"], vb["verdict"], was and not now))
        fa, fb = va.get("figures", {}), vb.get("figures", {})
        for k in COMPARED:
            x, y = fa.get(k), fb.get(k)
            if isinstance(x, (int, float)) and isinstance(y, (int, float)) and x != y:
                base = max(abs(x), 1e-9)
                if abs(y - x) / base > threshold:
                    changes.append(Change(cid, k, x, y, k in WORSE_WHEN_UP and y > x))
    only = [f"only in {name}: {cid}" for name, mine, other in (("A", by_a, by_b), ("B", by_b, by_a)) for cid in sorted(set(mine) - set(other))]
    return changes, only


def find_case_path(ref: str) -> Path | None:
    """RUN/CASE (run id, `latest` or a path) -> the case folder, if that is what `ref` names."""
    for cand in (Path(ref), results_dir() / ref):
        if (cand / "verdict.json").exists():
            return cand
    return None


def find_case(ref: str) -> CaseRecord:
    path = find_case_path(ref)
    rec = read_case(path) if path else None
    if not rec:
        raise UsageError(f"no complete case at {ref}")
    return rec
