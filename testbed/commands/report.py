"""`testbed report`: pivot table of a run's verdicts; optionally JUnit XML."""

from __future__ import annotations

import argparse
from pathlib import Path

from testbed.commands.common import print_pivot
from testbed.report import junit
from testbed.report.runs import load_cases, resolve_run


def cmd_report(args: argparse.Namespace) -> int:
    cases = load_cases(args.run)
    print_pivot(cases, args.rows, args.cols)
    if args.junit:
        junit.write(cases, resolve_run(args.run).name, Path(args.junit))
        print(f"JUnit XML: {args.junit}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    rp = sub.add_parser("report", help="pivot table of a run's verdicts; JUnit XML")
    rp.add_argument("run", help="run id, `latest`, or a run folder")
    rp.add_argument("--rows", default="storage.protocol", help="axis for rows (a scenario field path)")
    rp.add_argument("--cols", default="topology.links.*.mtu", help="axis for columns")
    rp.add_argument("--junit", metavar="FILE")
    rp.set_defaults(func=cmd_report)
