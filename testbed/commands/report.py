"""`testbed report`: pivot table of a run's rates per cell (failure rate with its Wilson interval, verdict
counts, time to recover, mechanisms, flaky cells) and its repeat agreement; JSON; optionally JUnit XML."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from testbed.commands.common import err, print_pivot
from testbed.report import junit
from testbed.report.runs import load_cases, pivot_json, resolve_run


def cmd_report(args: argparse.Namespace) -> int:
    cases = load_cases(args.run)
    run = resolve_run(args.run).name
    if args.json:
        print(json.dumps(pivot_json(run, cases, args.rows, args.cols), indent=2))
    else:
        print_pivot(cases, args.rows, args.cols)
    if args.junit:
        junit.write(cases, run, Path(args.junit))
        (err if args.json else print)(f"JUnit XML: {args.junit}")
    if args.html is not None:
        from testbed.report.html import render  # plotly and jinja2 (~0.4 s): only when a page is asked for

        out = Path(args.html) if args.html else resolve_run(args.run) / render.HTML_DIR
        rep = render.run_report(resolve_run(args.run), out, args.rows, args.cols)
        (err if args.json else print)(f"HTML: {rep.index} ({rep.pages} pages)")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    rp = sub.add_parser("report", help="rates per cell of a run (failure rate, interval, flaky cells); JUnit XML")
    rp.add_argument("run", help="run id, `latest`, or a run folder")
    rp.add_argument("--rows", default="storage.protocol", help="axis for rows (a scenario field path)")
    rp.add_argument("--cols", default="topology.links.*.mtu", help="axis for columns")
    rp.add_argument("--json", action="store_true", help="the same data as JSON on stdout")
    rp.add_argument("--junit", metavar="FILE")
    rp.add_argument("--html", nargs="?", const="", metavar="DIR",
                    help=f"also write the run's HTML report: a run page and a page per case (default folder: "
                         f"RUN/html/); self-contained, opens from file://")
    rp.set_defaults(func=cmd_report)
