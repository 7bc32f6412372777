"""`testbed index --rebuild`: rebuild results/index.sqlite from the case folders."""

from __future__ import annotations

import argparse

from testbed.store import index
from testbed.errors import UsageError


def cmd_index(args: argparse.Namespace) -> int:
    if not args.rebuild:
        raise UsageError("index: say --rebuild (the index is otherwise kept up to date by every run)")
    n = index.rebuild()
    print(f"indexed {n} case(s) into {index.index_path()}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    ix = sub.add_parser("index", help="rebuild results/index.sqlite from the case folders")
    ix.add_argument("--rebuild", action="store_true")
    ix.set_defaults(func=cmd_index)
