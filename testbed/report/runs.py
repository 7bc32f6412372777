"""Reading runs back: resolve RUN arguments, pivot tables of rates per cell, case details, run-to-run comparison
by cells (axis values) with the tests of testbed.report.stats."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import UsageError
from testbed.forensics import show as forensics_show
from testbed.store.index import CaseRecord, read_case, read_run
from testbed.host.paths import results_dir
from testbed.report.stats import (CONFIDENCE, CORRECTION_NAMES, CORRECTIONS, CellRate, agreement, figure,
                                  fisher_one_sided, judged, mann_whitney, median, smallest_fisher_p)

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


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def cell_key(rec: CaseRecord) -> str:
    """What pairs a case with its repeats and with the same cell of another run: its axis values
    (not its id, so repeats and shards line up); a case without axes, by its scenario name
    (a matrix without axes names its repeats `NAME-rN`). A control's `expect:` is part of its cell."""
    scenario = str(rec.verdict.get("scenario") or rec.case_id)
    key = dict(rec.axes) if rec.axes else {"scenario": re.sub(r"-r\d+$", "", scenario)}
    if rec.verdict.get("expected"):
        key["expect"] = rec.verdict["expected"]
    return json.dumps(key, sort_keys=True, default=str)


def cell_label(key: str) -> str:
    return ", ".join(f"{k}={v}" for k, v in json.loads(key).items())


@dataclass
class RatePivot:
    rows: str
    cols: str
    rvals: list[str]
    cvals: list[str]
    cells: dict[tuple[str, str], CellRate]
    configs: dict[tuple[str, str], int]  # distinct axis assignments in a pivot cell (>1: the pivot merges cells)
    agree: int  # cells (by axis values) whose repeats all gave the same verdict ...
    multi: int  # ... of the cells with 2+ judged runs


def rate_pivot(cases: list[CaseRecord], rows: str, cols: str) -> RatePivot:
    """Per (row value, column value): the cell's rate (stats.CellRate); and the run's repeat agreement."""
    groups: dict[tuple[str, str], list[CaseRecord]] = defaultdict(list)
    rvals, cvals = [], []
    for c in cases:
        r, k = _fmt(c.value(rows)), _fmt(c.value(cols))
        groups[(r, k)].append(c)
        if r not in rvals:
            rvals.append(r)
        if k not in cvals:
            cvals.append(k)
    cells = {rk: CellRate.from_verdicts(c.verdict for c in g) for rk, g in groups.items()}
    configs = {rk: len({cell_key(c) for c in g}) for rk, g in groups.items()}
    agree, multi = repeat_agreement(cases)
    return RatePivot(rows, cols, axis_order(rvals), axis_order(cvals), cells, configs, agree, multi)


def axis_order(values: list[str]) -> list[str]:
    """An axis's values in numeric order when they are numbers (a search's 64, 96, 112, not the case
    ids' 112, 64, 96), numbers before words (`8192`, `default`); else as first seen."""
    def num(v: str) -> float | None:
        try:
            return float(v)
        except ValueError:
            return None

    if not any(num(v) is not None for v in values):
        return values
    return sorted(values, key=lambda v: (0, num(v), "") if num(v) is not None else (1, 0.0, v))


def repeat_agreement(cases: list[CaseRecord]) -> tuple[int, int]:
    """(cells whose judged runs all gave the same verdict, cells with 2+ judged runs), cells by axis values."""
    by_cell: dict[str, list[str]] = defaultdict(list)
    for c in cases:
        if judged(c.verdict):
            by_cell[cell_key(c)].append(c.verdict["verdict"])
    return agreement(by_cell.values())


def cell_text(cr: CellRate) -> str:
    """One pivot cell: verdict counts (`recovered:3 deadlocked:1`), failures/judged runs with the rate and
    its Wilson interval, time to recover (median, p90), mechanisms."""
    lines = [" ".join(f"{v}:{n}" for v, n in cr.verdicts.items())]
    if cr.runs:
        lo, hi = cr.interval
        flaky = " FLAKY" if cr.flaky else ""
        lines.append(f"fail {cr.failures}/{cr.runs} {_pct(cr.rate or 0)} [{_pct(lo)}-{_pct(hi)}]{flaky}")
    else:
        lines.append("no judged run")
    if cr.unknowns:
        lines[-1] += f" +{cr.unknowns} unknown"
    if cr.ttr_median is not None:
        lines.append(f"ttr {cr.ttr_median:.1f}s p90 {cr.ttr_p90:.1f}s")
    if cr.wall_median is not None:
        speed = f" swap {cr.swap_mb_s_median:.1f} MB/s" if cr.swap_mb_s_median else ""
        lines.append(f"wall {cr.wall_median:.0f}s{speed}")
    if cr.mechanisms:
        lines.append("mech " + " ".join(k + (f"\u00d7{n}" if n > 1 else "") for k, n in cr.mechanisms.items()))
    if cr.controls:
        lines.append("expect " + "/".join(cr.expected))
    return "\n".join(lines)


def pivot(cases: list[CaseRecord], rows: str, cols: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the pivot table: cell_text per (row value, column value), "" where no case."""
    return pivot_table(rate_pivot(cases, rows, cols))


def pivot_table(rp: RatePivot) -> tuple[list[str], list[list[str]]]:
    header = [f"{rp.rows} \\ {rp.cols}", *rp.cvals]
    body = [[r, *(cell_text(rp.cells[(r, k)]) if (r, k) in rp.cells else "" for k in rp.cvals)] for r in rp.rvals]
    return header, body


def agreement_line(agree: int, multi: int) -> str:
    if not multi:
        return "repeat agreement: no cell has 2+ judged runs, nothing to agree on (one run is an anecdote)"
    return (f"repeat agreement: {agree}/{multi} cells ({_pct(agree / multi)}) whose repeats all gave the same verdict "
            "(cells by axis values, with 2+ judged runs)")


def pivot_json(run: str, cases: list[CaseRecord], rows: str, cols: str) -> dict[str, Any]:
    rp = rate_pivot(cases, rows, cols)
    return {
        "run": run,
        "rows": rows,
        "cols": cols,
        "confidence": CONFIDENCE,
        "cells": [{"row": r, "col": k, "configs": rp.configs[(r, k)], **rp.cells[(r, k)].to_dict()}
                  for r in rp.rvals for k in rp.cvals if (r, k) in rp.cells],
        "repeat_agreement": {"agree": rp.agree, "cells": rp.multi,
                             "share": rp.agree / rp.multi if rp.multi else None},
    }


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
    for name, whose in ((forensics_show.FILE, "client"), (forensics_show.NAS_FILE, "NAS")):
        state = rec.path / name
        if state.exists():
            try:
                out += forensics_show.state_lines(json.loads(state.read_text()), whose)
            except (ValueError, KeyError, TypeError) as e:
                out.append(f"state: {state.name} unreadable ({type(e).__name__})")
    out.append("evidence:")
    out += [f"  {p}" for p in sorted(rec.path.iterdir())]
    return out


COMPARED = ("time_to_recover_s", "case_wall_s", "workload_wall_s", "swap_out_mb", "pfmemalloc_drop_peak", "allocstall")
# Figures where growth is a regression (others are reported, not judged).
WORSE_WHEN_UP = ("time_to_recover_s",)


@dataclass
class FigureMove:
    name: str
    median_a: float
    median_b: float
    n_a: int
    n_b: int
    p: float | None = None  # Mann-Whitney U (two-sided), None when a side has fewer than 3 runs
    p_adj: float | None = None  # corrected over the cells where this figure was tested
    significant: bool = False
    regression: bool = False  # a judged figure (WORSE_WHEN_UP) significantly up

    @property
    def moved(self) -> float:
        return (self.median_b - self.median_a) / max(abs(self.median_a), 1e-9)


@dataclass
class CellDiff:
    key: str
    a: CellRate
    b: CellRate
    p: float = 1.0  # one-sided Fisher: B fails more often than A
    p_adj: float = 1.0
    significant: bool = False  # a regression at alpha after correction
    control_broke: bool = False
    figures: list[FigureMove] = field(default_factory=list)

    @property
    def label(self) -> str:
        return cell_label(self.key)

    @property
    def direction(self) -> str:
        ra, rb = self.a.rate, self.b.rate
        if ra is None or rb is None or ra == rb:
            return "same"
        return "worse" if rb > ra else "better"


@dataclass
class Comparison:
    alpha: float
    correction: str
    cells: list[CellDiff]
    only_a: list[str]
    only_b: list[str]
    best_p: float  # the smallest corrected p these run counts allow: above alpha, nothing can be significant
    one_run_per_side: bool

    @property
    def tested(self) -> list[CellDiff]:
        return [c for c in self.cells if c.a.runs and c.b.runs]

    @property
    def can_be_significant(self) -> bool:
        return self.best_p <= self.alpha

    @property
    def regressions(self) -> list[CellDiff]:
        return [c for c in self.cells if c.significant or any(f.regression for f in c.figures)]

    @property
    def broken_controls(self) -> list[CellDiff]:
        return [c for c in self.cells if c.control_broke]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions or self.broken_controls else 0


def _by_cell(cases: list[CaseRecord]) -> dict[str, list[CaseRecord]]:
    out: dict[str, list[CaseRecord]] = defaultdict(list)
    for c in cases:
        out[cell_key(c)].append(c)
    return out


def _figures(a: list[CaseRecord], b: list[CaseRecord]) -> list[FigureMove]:
    out = []
    for name in COMPARED:
        xa = [x for c in a if judged(c.verdict) and (x := figure(c.verdict, name)) is not None]
        xb = [x for c in b if judged(c.verdict) and (x := figure(c.verdict, name)) is not None]
        if xa and xb:
            out.append(FigureMove(name, median(xa), median(xb), len(xa), len(xb), mann_whitney(xa, xb)))
    return out


def compare_runs(a: list[CaseRecord], b: list[CaseRecord], alpha: float = 0.05, correction: str = "holm") -> Comparison:
    """Pair the cells of two runs by axis values; per cell, B's failure rate against A's (one-sided Fisher,
    corrected over the cells tested), figures by medians (Mann-Whitney U where both sides have 3+ runs,
    corrected per figure over the cells tested), and controls (cases with `expect:`) that broke: as
    expected in every judged run of A, a failure in B."""
    adjust = CORRECTIONS[correction]
    ca, cb = _by_cell(a), _by_cell(b)
    cells = []
    for key in [k for k in ca if k in cb]:
        d = CellDiff(key, CellRate.from_verdicts(c.verdict for c in ca[key]),
                     CellRate.from_verdicts(c.verdict for c in cb[key]))
        if d.a.runs and d.b.runs:
            d.p = fisher_one_sided(d.a.failures, d.a.runs, d.b.failures, d.b.runs)
        d.control_broke = bool(d.a.controls and d.a.runs and d.a.failures == 0 and d.b.failures > 0)
        d.figures = _figures(ca[key], cb[key])
        cells.append(d)
    tested = [d for d in cells if d.a.runs and d.b.runs]
    for d, q in zip(tested, adjust([d.p for d in tested])):
        d.p_adj = q
        d.significant = q <= alpha and d.direction == "worse"
    for name in COMPARED:
        moves = [f for d in cells for f in d.figures if f.name == name and f.p is not None]
        for f, q in zip(moves, adjust([f.p for f in moves])):
            f.p_adj = q
            f.significant = q <= alpha and f.median_b != f.median_a
            f.regression = f.significant and name in WORSE_WHEN_UP and f.median_b > f.median_a
    m = len(tested)
    best = min((smallest_fisher_p(d.a.runs, d.b.runs) for d in tested), default=1.0)
    best_adj = min(1.0, best * m) if correction == "holm" else best  # BH's smallest adjusted p is at best the raw p
    one_each = all(len(ca[k]) <= 1 for k in ca) and all(len(cb[k]) <= 1 for k in cb)
    return Comparison(alpha, correction, cells, [cell_label(k) for k in ca if k not in cb],
                      [cell_label(k) for k in cb if k not in ca], best_adj, one_each)


def comparison_json(cmp: Comparison, run_a: str, run_b: str) -> dict[str, Any]:
    def cell(d: CellDiff) -> dict[str, Any]:
        return {"cell": json.loads(d.key), "a": d.a.to_dict(), "b": d.b.to_dict(), "direction": d.direction,
                "p": d.p, "p_adjusted": d.p_adj, "significant_regression": d.significant,
                "control_broke": d.control_broke, "figures": [{**asdict(f), "moved": f.moved} for f in d.figures]}
    return {"a": run_a, "b": run_b, "alpha": cmp.alpha, "test": "Fisher exact, one-sided (B fails more often than A)",
            "correction": CORRECTION_NAMES[cmp.correction], "cells_tested": len(cmp.tested),
            "can_be_significant": cmp.can_be_significant, "smallest_possible_adjusted_p": cmp.best_p,
            "one_run_per_side": cmp.one_run_per_side, "cells": [cell(d) for d in cmp.cells],
            "only_in_a": cmp.only_a, "only_in_b": cmp.only_b,
            "regressions": [d.label for d in cmp.regressions],
            "controls_broken": [d.label for d in cmp.broken_controls],
            "exit": cmp.exit_code}


def find_case_path(ref: str) -> Path | None:
    """RUN/CASE (run id, `latest` or a path) -> the case folder, if that is what `ref` names."""
    for cand in (Path(ref), results_dir() / ref):
        if (cand / "verdict.json").exists():
            return cand
    return None


def find_case(ref: str) -> CaseRecord:
    path = find_case_path(ref)
    rec = read_case(path, strict=True) if path else None
    if not rec:
        raise UsageError(f"no complete case at {ref}")
    return rec
