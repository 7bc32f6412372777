"""`testbed compare`: two runs cell by cell (cells paired by axis values); exit 1 only for a significant
regression or a control that broke."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from testbed.commands.common import err
from testbed.host.paths import results_dir
from testbed.report.runs import (CellDiff, Comparison, FigureMove, compare_runs, comparison_json, load_cases,
                                 resolve_run)
from testbed.report.stats import CORRECTION_NAMES, CellRate


def _rate(c: CellRate) -> str:
    if not c.runs:
        return "no judged run" + (f" ({c.unknowns} unknown)" if c.unknowns else "")
    lo, hi = c.interval
    text = f"{c.failures}/{c.runs} ({c.rate:.0%} [{lo:.0%}-{hi:.0%}])"
    return text + (f" +{c.unknowns} unknown" if c.unknowns else "")


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def _figure(f: FigureMove) -> str:
    head = f"{f.name} median {f.median_a:g} -> {f.median_b:g} ({f.moved:+.0%})"
    if f.p is None:
        return f"{head}; runs {f.n_a} vs {f.n_b}: under 3 a side, no claim"
    claim = ("REGRESSION" if f.regression else "significant") if f.significant else "within noise"
    return f"{head}; Mann-Whitney p {_p(f.p)}, adjusted p {_p(f.p_adj)}: {claim}"


def _cell_lines(d: CellDiff, threshold: float, correction: str) -> list[str]:
    figs = [f for f in d.figures if f.significant or abs(f.moved) > threshold]
    unknowns_moved = d.a.unknowns != d.b.unknowns
    if d.direction == "same" and not d.control_broke and not figs and not unknowns_moved:
        return []
    if d.control_broke:
        mark = "CONTROL BROKE"
    elif d.significant or any(f.regression for f in d.figures):
        mark = "REGRESSION"
    elif d.direction == "same":
        mark = "same rate"
    else:
        mark = d.direction
    lines = [f"{mark}: {d.label}"]
    if d.a.runs and d.b.runs:
        tail = {"worse": "significant" if d.significant else "within noise",
                "better": "not tested (the test is for regressions)", "same": "no change"}[d.direction]
        lines.append(f"    failures {_rate(d.a)} -> {_rate(d.b)}; one-sided Fisher p {_p(d.p)}, "
                     f"{CORRECTION_NAMES[correction]}-adjusted p {_p(d.p_adj)}: {tail}")
    else:
        lines.append(f"    failures {_rate(d.a)} -> {_rate(d.b)}: not tested (no judged run on a side)")
    if unknowns_moved:
        lines.append(f"    unknown (testbed failures, not in the rates) {d.a.unknowns} -> {d.b.unknowns}")
    if d.control_broke:
        lines.append(f"    a control (expect {'/'.join(d.a.expected)}) as expected in every run of A fails in B")
    lines += [f"    {_figure(f)}" for f in figs]
    return lines


def exit_line(cmp: Comparison) -> str:
    regs, broken = cmp.regressions, cmp.broken_controls
    if regs or broken:
        return (f"exit 1: {len(regs)} significant regression(s), {len(broken)} broken control(s): "
                + "; ".join(d.label for d in [*regs, *[b for b in broken if b not in regs]]))
    return "exit 0: no significant regression, no broken control"


def guest_packages(cases: list) -> dict[str, set[str]]:
    """Image name -> the package-list hashes its cases ran with ("" where a verdict predates the record)."""
    out: dict[str, set[str]] = {}
    for rec in cases:
        for name, img in (rec.verdict.get("images") or {}).items():
            if isinstance(img, dict):
                out.setdefault(name, set()).add(str(img.get("packages_hash") or ""))
    return out


def guests_line(a: dict[str, set[str]], b: dict[str, set[str]]) -> str:
    """Whether the two runs' guests had the same packages: only then are their results comparable."""
    differ, unknown = [], []
    for name in sorted(set(a) | set(b)):
        ha, hb = a.get(name, set()), b.get(name, set())
        if "" in ha or "" in hb or not ha or not hb:
            unknown.append(name)
        elif ha != hb:
            differ.append(f"{name} {'/'.join(sorted(ha))} in A, {'/'.join(sorted(hb))} in B")
    if differ:
        return ("guests DIFFER: " + "; ".join(differ) + ": their package lists do not match, so a change may be the "
                "guest's, not the axis's (`testbed image list --packages`)")
    if unknown:
        return f"guests: package lists not recorded for {', '.join(unknown)} on one side (runs before they were): not checked"
    return "guests: the same package lists on both sides"


def cmd_compare(args: argparse.Namespace) -> int:
    ra, rb = resolve_run(args.run_a).name, resolve_run(args.run_b).name
    cases_a, cases_b = load_cases(args.run_a), load_cases(args.run_b)
    guests = guests_line(guest_packages(cases_a), guest_packages(cases_b))
    cmp = compare_runs(cases_a, cases_b, args.alpha, args.correction)
    if args.html is not None:
        from testbed.report.html import render  # plotly and jinja2 (~0.4 s): only when a page is asked for

        out = Path(args.html) if args.html else results_dir() / f"compare-{ra}-{rb}"
        rep = render.compare_report(cmp, ra, rb, out, exit_line(cmp))
        err(f"HTML: {rep.index}")
    if args.json:
        print(json.dumps({**comparison_json(cmp, ra, rb), "guests": guests}, indent=2))
        return cmp.exit_code
    name = CORRECTION_NAMES[args.correction]
    m = len(cmp.tested)
    print(f"A {ra} -> B {rb}: {len(cmp.cells)} cell(s) paired by axis values, {m} with judged runs on both sides")
    print(guests)
    print(f"failure rates: one-sided Fisher exact test (B fails more often than A), {name}-corrected for {m} cell(s), "
          f"alpha {args.alpha:g}")
    print(f"figures: medians; Mann-Whitney U where both sides have 3+ runs ({name}-corrected per figure), "
          "else no claim")
    if cmp.one_run_per_side:
        print("one run per cell on each side: nothing can be significant (repeat the cells: `repeat:` in the matrix)")
    elif not cmp.can_be_significant:
        print(f"with these run counts no change of a failure rate can be significant (smallest possible adjusted p "
              f"{cmp.best_p:.2g} > alpha {args.alpha:g}): more repeats needed")
    quiet = 0
    for d in cmp.cells:
        lines = _cell_lines(d, args.threshold, args.correction)
        if lines:
            print("\n".join(lines))
        else:
            quiet += 1
    if quiet:
        print(f"{quiet} cell(s) unchanged (same failure rate, no figure moved by more than {args.threshold:.0%})")
    for label in cmp.only_a:
        print(f"only in A: {label}")
    for label in cmp.only_b:
        print(f"only in B: {label}")
    print(exit_line(cmp))
    return cmp.exit_code


def add_parser(sub: argparse._SubParsersAction) -> None:
    cp = sub.add_parser("compare", help="two runs cell by cell (paired by axis values); "
                                        "exit 1 for a significant regression or a broken control")
    cp.add_argument("run_a")
    cp.add_argument("run_b")
    cp.add_argument("--alpha", type=float, default=0.05, help="significance level after correction (default 0.05)")
    cp.add_argument("--correction", choices=sorted(CORRECTION_NAMES), default="holm",
                    help="multiple-comparison correction over the cells: holm (default) or bh (Benjamini-Hochberg)")
    cp.add_argument("--threshold", type=float, default=0.25,
                    help="relative change of a figure's median worth showing without a test (default 0.25)")
    cp.add_argument("--json", action="store_true", help="the comparison as JSON on stdout")
    cp.add_argument("--html", nargs="?", const="", metavar="DIR",
                    help="also write the comparison as an HTML page (default folder: results/compare-A-B/)")
    cp.set_defaults(func=cmd_compare)
