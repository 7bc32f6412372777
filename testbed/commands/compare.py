"""`testbed compare`: cases of two runs whose verdict changed or whose figures moved; exit 1 if worse."""

from __future__ import annotations

import argparse

from testbed.report.runs import compare, load_cases


def cmd_compare(args: argparse.Namespace) -> int:
    changes, only = compare(load_cases(args.run_a), load_cases(args.run_b), args.threshold)
    for c in changes:
        mark = "WORSE" if c.worse else "changed"
        print(f"{mark:7} {c.case_id}: {c.what} {c.before} -> {c.after}")
    for line in only:
        print(line)
    if not changes:
        print("no verdict changed; no figure moved by more than " f"{args.threshold:.0%}")
    return 1 if any(c.worse for c in changes) else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    cp = sub.add_parser("compare", help="cases whose verdict changed or figures moved; exit 1 if worse")
    cp.add_argument("run_a")
    cp.add_argument("run_b")
    cp.add_argument("--threshold", type=float, default=0.25, help="relative change of a figure worth reporting")
    cp.set_defaults(func=cmd_compare)
