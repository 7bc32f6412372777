"""`testbed matrix`: run every case of a matrix file (jobs, resume, shards, fail-fast)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from testbed.commands.common import case_options, exit_for, print_pivot
from testbed.config.matrix import load_matrix
from testbed.matrix import parse_shard, run_matrix
from testbed.report.progress import summary_table
from testbed.report.runs import load_cases


def cmd_matrix(args: argparse.Namespace) -> int:
    matrix = load_matrix(Path(args.file))
    shard = parse_shard(args.shard) if args.shard else None
    mr = run_matrix(matrix, jobs=args.jobs, resume=args.resume, shard=shard, fail_fast=args.fail_fast,
                    accel=args.accel, quiet=args.quiet or args.json)
    if args.json:
        print(json.dumps({"run": mr.run.id, "path": str(mr.run.path), "skipped": mr.skipped,
                          "cases": [r.data for r in mr.results]}, indent=2, default=str))
    elif not args.quiet:
        summary_table([r.data for r in mr.results])
        print_pivot(load_cases(str(mr.run.path)), "storage.protocol", "topology.links.*.mtu")
        print(f"run {mr.run.id}: {mr.run.path}")
    return exit_for(mr.results)


def add_parser(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("matrix", help="run every case of a matrix file")
    m.add_argument("file")
    m.add_argument("--jobs", type=int, default=1, help="cases at once (capped by free cores and memory)")
    m.add_argument("--resume", metavar="RUN_ID", help="finish an interrupted run: complete cases are kept")
    m.add_argument("--shard", metavar="I/N", help="run a deterministic 1/N of the cases (shard I)")
    m.add_argument("--fail-fast", action="store_true", help="stop after the first case not as expected")
    case_options(m)
    m.set_defaults(func=cmd_matrix)
