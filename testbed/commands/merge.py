"""`testbed merge`: fold results from several machines (runs or results folders) into one new run."""

from __future__ import annotations

import argparse
from pathlib import Path

from testbed.store import index

from testbed.store import runs as store
from testbed.host.tags import new_tag


def cmd_merge(args: argparse.Namespace) -> int:
    run = store.merge([Path(d) for d in args.dirs], new_tag())
    index.rebuild()
    print(f"merged into run {run.id}: {run.path}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    mg = sub.add_parser("merge", help="fold results from several machines (runs or results folders) into one run")
    mg.add_argument("dirs", nargs="+")
    mg.set_defaults(func=cmd_merge)
