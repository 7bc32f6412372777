"""`testbed search`: the breaking point of a numeric axis. Bisection (testbed/engine/search.py) with N repeats per
probe; the probes are the cases of one ordinary run (index, report, show), run by the matrix's runner."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from testbed.host.cleanup import INTERRUPTED
from testbed.commands.common import case_options, write_run_html
from testbed.config.assign import parse_overrides
from testbed.config.matrix import axis_matrix, is_matrix_file
from testbed.errors import UsageError
from testbed.engine.matrix import MatrixUi, cap_jobs, run_batch
from testbed.report.stats import judged
from testbed.engine.search import Bisection, SearchResult, fmt_value, grid
from testbed.store.runs import new_run, write_atomic
from testbed.host.tags import new_tag

SEARCH_FILE = "search.json"  # in the run folder: the probes in order and the statement


def _number(text: str, what: str) -> int | float:
    try:
        x = float(text)
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a number") from None
    return int(x) if x.is_integer() and "." not in text and "e" not in text.lower() else x


def parse_range(text: str) -> tuple[int | float, int | float]:
    lo_text, sep, hi_text = text.partition(":")
    if not sep:
        raise UsageError(f"--range {text}: must look like LO:HI, e.g. 96:256")
    lo, hi = _number(lo_text.strip(), f"--range {text}"), _number(hi_text.strip(), f"--range {text}")
    if not lo < hi:
        raise UsageError(f"--range {text}: LO must be below HI")
    return lo, hi


def plan(args: argparse.Namespace) -> tuple[Bisection, Any]:
    """Every check before a VM boots: the options, the file, the axis path and both ends of the range on
    the scenario (a bad field is a ConfigError naming it, exit 3)."""
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{args.file}: no such scenario file")
    if is_matrix_file(path):
        raise UsageError(f"{args.file} is a matrix file: search takes a scenario file (its other axes as --set)")
    if args.repeat < 1:
        raise UsageError(f"--repeat {args.repeat}: must be at least 1")
    lo, hi = parse_range(args.range)
    step = _number(args.step, "--step") if args.step is not None else None
    if step is not None and not step > 0:
        raise UsageError(f"--step {args.step}: must be above 0")
    if not args.axis or args.axis.startswith(".") or args.axis.endswith(".") or ".." in args.axis:
        raise UsageError(f"--axis {args.axis!r}: must be a dotted field path, e.g. client.mem_mb")
    values = grid(lo, hi, step)
    fixed = parse_overrides(args.set, f"{args.file} (--set)")
    if args.axis in fixed:
        raise UsageError(f"--set {args.axis}: is the searched --axis")
    m = axis_matrix(path, args.axis, values, args.repeat, fixed)
    for i in (0, len(values) - 1):  # the path and both ends, on the scenario itself
        m.case(i, 1)
    expect = m.case(0, 1).loaded.scenario.expect
    ok_word = "recovers" if expect in (None, "recovered") else f"is {expect} (as expected)"
    return Bisection(lo, hi, step, axis=args.axis, ok_word=ok_word), m


def cmd_search(args: argparse.Namespace) -> int:
    bis, m = plan(args)
    name = m.spec.name
    index = {v: i for i, v in enumerate(bis.values)}
    request = {"argv": sys.argv, "search": {"file": args.file, "axis": args.axis, "range": args.range,
                                            "step": args.step, "grid": len(bis.values), "repeat": args.repeat,
                                            "set": args.set}, "accel": args.accel}
    run = new_run(new_tag(), request)
    ui = MatrixUi(0, args.quiet or args.json)
    cases_of: dict[Any, list[str]] = {}
    try:
        INTERRUPTED.clear()
        jobs = cap_jobs([m.case(0, 1), m.case(len(bis.values) - 1, 1)], args.jobs, ui, name)
        ui.note(name, f"searching {args.axis} in [{fmt_value(bis.values[0])}, {fmt_value(bis.values[-1])}] "
                      f"({len(bis.values)} grid values), {args.repeat} run(s) per probe; run {run.id}")
        while (v := bis.next_value()) is not None:
            cases = [m.case(index[v], r) for r in range(1, args.repeat + 1)]
            ui.add_cases(len(cases))
            results, _ = run_batch(name, cases, run, ui, jobs, False, args.accel)
            cases_of[v] = [r.case_id for r in results]
            oks = [r.ok for r in results if judged(r.data)]
            bis.record(v, oks)
            p = bis.probes[index[v]]
            lo, hi = p.interval
            unknown = len(results) - len(oks)
            ui.note(name, f"probe {p.order + 1}: {args.axis}={fmt_value(v, bis.unit)}: fail {p.counts()} "
                          f"[{100 * lo:.0f}%-{100 * hi:.0f}%]" + (f" +{unknown} unknown" if unknown else "")
                          + f" -> {'fails' if p.fails else 'recovers' if p.runs else 'no judged run'}")
    finally:
        ui.close()
    res = bis.result()
    found = {**res.to_dict(), "cases": {str(k): v for k, v in cases_of.items()}}
    write_atomic(run.path / SEARCH_FILE, json.dumps(found, indent=2, default=str) + "\n")
    write_run_html(run.path, args, rows=args.axis, cols="storage.protocol")
    if args.json:
        print(json.dumps({"run": run.id, "path": str(run.path), **found}, indent=2, default=str))
    else:
        if not args.quiet:
            curve_table(res)
        print(res.statement)
        for note in res.notes:
            print(f"  {note}")
        print(f"run {run.id}: {run.path}  (curve: testbed report {run.id} --rows {args.axis})")
    return 2 if res.outcome == "no-judged-run" else 0


def curve_table(res: SearchResult) -> None:
    t = Table(title=f"failure rate by {res.axis}", show_lines=False)
    for col in ("value", "probe", "fail", "rate", "95% interval", "side"):
        t.add_column(col, justify="right" if col != "side" else "left")
    for p in res.curve:
        lo, hi = p.interval
        t.add_row(fmt_value(p.value, res.unit), str(p.order + 1), p.counts(),
                  "-" if p.rate is None else f"{100 * p.rate:.0f}%", f"{100 * lo:.0f}%-{100 * hi:.0f}%",
                  "fails" if p.fails else "recovers" if p.runs else "no judged run")
    Console(highlight=False, width=120).print(t)


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "search", help="find the value of a numeric axis where the failure rate crosses 50%%",
        description="Bisect a numeric field of a scenario for the value at which the failure rate crosses 50%: "
                    "both ends of --range first, then the middle of the bracket, on the grid LO, LO+STEP, ..., HI, "
                    "until the failing and the recovering value are neighbours. Each probe is --repeat cases; a "
                    "probe fails when at least half of its judged runs failed (unknown verdicts are left out). "
                    "Ends with e.g. 'fails at <= 104 MB (3/3), recovers at >= 112 MB (0/3); boundary in "
                    "(104, 112] MB', or says that both ends agree (no boundary in the range).",
        epilog="The probes are the cases of one run (ids like mem104-r2, the value in their axes): "
               "`testbed report RUN --rows AXIS` shows the curve value -> rate, and search.json in the run "
               "folder the probes in order. Exit 0 when the search concluded, 2 when a probe had no judged "
               "run (the testbed failed), 3 for a bad option or field (checked before any VM boots).")
    s.add_argument("file", help="a scenario file")
    s.add_argument("--axis", required=True, metavar="PATH",
                   help="a numeric field path, as matrix axes name them, e.g. client.mem_mb, faults.0.rate_mbit, "
                        "client.sysctl.vm.min_free_kbytes, topology.links.*.mtu")
    s.add_argument("--range", required=True, metavar="LO:HI", help="the values searched, e.g. 96:256")
    s.add_argument("--step", metavar="S",
                   help="grid step: probes are LO + k*S (and HI); default 1 for an integer range, else (HI-LO)/32")
    s.add_argument("--repeat", type=int, required=True, metavar="N", help="cases per probe, e.g. 3")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override another field for every probe")
    s.add_argument("--jobs", type=int, default=1, help="cases of a probe at once (capped by free cores and memory)")
    case_options(s)
    s.set_defaults(func=cmd_search)


