"""What several verbs share: the options of verbs that run cases, the exit status of a set of
cases, the verdict pivot table, and messages on stderr."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from testbed.report.runs import pivot


def err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def case_options(p: argparse.ArgumentParser) -> None:
    """The options every verb that runs cases shares (run, matrix)."""
    p.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    p.add_argument("--quiet", action="store_true", help="only the verdict lines")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")


def exit_for(results: list) -> int:
    """2 if the testbed itself failed a case, 1 if a case was not as expected, else 0."""
    if any(r.verdict == "unknown" and r.expected != "unknown" for r in results):
        return 2
    return 0 if all(r.ok for r in results) else 1


def print_pivot(cases: list, rows: str, cols: str) -> None:
    header, body = pivot(cases, rows, cols)
    t = Table(title="verdicts (median time to recover)")
    for h in header:
        t.add_column(h)
    for line in body:
        t.add_row(*line)
    Console(width=160, highlight=False).print(t)
