"""`testbed show`: a case's verdict, reasons, figures and evidence (RUN or RUN/CASE)."""

from __future__ import annotations

import argparse

from testbed.report.runs import find_case, find_case_path, load_cases, show_lines


def cmd_show(args: argparse.Namespace) -> int:
    recs = [find_case(args.ref)] if find_case_path(args.ref) else load_cases(args.ref)
    for rec in recs:
        print("\n".join(show_lines(rec)))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    sh = sub.add_parser("show", help="a case's verdict, reasons, figures and evidence (RUN or RUN/CASE)")
    sh.add_argument("ref")
    sh.set_defaults(func=cmd_show)
