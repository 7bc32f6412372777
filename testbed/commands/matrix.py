"""`testbed matrix`: run every case of a matrix file (jobs, resume, shards, fail-fast, --repeat, and
adaptive repeats with --until-ci)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from testbed.commands.common import case_options, check_kernels, exit_for, print_pivot, write_run_html
from testbed.config.matrix import load_matrix
from testbed.errors import UsageError
from testbed.engine.matrix import DEFAULT_MAX_REPEAT, parse_shard, run_matrix
from testbed.report.progress import summary_table
from testbed.report.runs import load_cases


def check_repeat_options(args: argparse.Namespace) -> None:
    """The repeat options among themselves, before the matrix is read: one line per mistake."""
    if args.repeat is not None and args.repeat < 1:
        raise UsageError(f"--repeat {args.repeat}: must be at least 1")
    if args.until_ci is None:
        if args.max_repeat is not None:
            raise UsageError("--max-repeat only applies with --until-ci W")
        return
    if args.shard:
        raise UsageError("--until-ci cannot be combined with --shard: a shard's cases are fixed up front; "
                         "give the shards a fixed --repeat, or run the matrix unsharded")
    if not 0 < args.until_ci <= 1:
        raise UsageError(f"--until-ci {args.until_ci:g}: must be an interval width above 0 and at most 1, e.g. 0.3")
    if args.max_repeat is not None and args.max_repeat < 1:
        raise UsageError(f"--max-repeat {args.max_repeat}: must be at least 1")


def cmd_matrix(args: argparse.Namespace) -> int:
    check_repeat_options(args)
    shard = parse_shard(args.shard) if args.shard else None
    max_repeat = args.max_repeat or DEFAULT_MAX_REPEAT
    adaptive = args.until_ci is not None
    matrix = load_matrix(Path(args.file), repeat=args.repeat, max_repeat=max_repeat if adaptive else None)
    check_kernels([c.loaded.scenario for c in matrix.cases], quiet=args.quiet or args.json)
    batch = None
    if args.engine == "ray":
        from testbed.engine.ray_engine import RayBatch  # Ray is an optional extra: only --engine ray imports it

        batch = RayBatch(args.address)
    elif args.address:
        raise UsageError("--address only applies with --engine ray")
    mr = run_matrix(matrix, jobs=args.jobs, resume=args.resume, shard=shard, fail_fast=args.fail_fast,
                    accel=args.accel, quiet=args.quiet or args.json,
                    until_ci=args.until_ci, max_repeat=max_repeat, batch=batch)
    rows, cols = matrix.spec.pivot["rows"], matrix.spec.pivot["cols"]
    write_run_html(mr.run.path, args, rows, cols)
    if args.json:
        out = {"run": mr.run.id, "path": str(mr.run.path), "skipped": mr.skipped,
               "cases": [r.data for r in mr.results]}
        if adaptive:
            out["until_ci"] = {"width": args.until_ci, "max_repeat": max_repeat,
                               "cells": [c.to_dict() for c in mr.cells]}
        print(json.dumps(out, indent=2, default=str))
    elif not args.quiet:
        summary_table([r.data for r in mr.results])
        print_pivot(load_cases(str(mr.run.path)), rows, cols)
        if adaptive:
            print(f"--until-ci {args.until_ci:g} (at most {max_repeat} judged runs per cell):")
            for c in mr.cells:
                lo, hi = c.rate.interval
                print(f"  {c.label}: {c.cases} case(s), fail {c.rate.failures}/{c.rate.runs} "
                      f"[{100 * lo:.0f}%-{100 * hi:.0f}%] - {c.why}")
        print(f"run {mr.run.id}: {mr.run.path}")
    return exit_for(mr.results)


def add_parser(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser(
        "matrix", help="run every case of a matrix file",
        description="Run every case of a matrix file. A cell is one assignment of the axes; its cases differ only "
                    "by their repeat index (ids ending in -r<N>).",
        epilog="--until-ci W runs each cell the file's repeat (or --repeat) times, then adds repeats in rounds to "
               "the cells that still need them, until a cell's 95% Wilson interval of the failure rate is narrower "
               "than W or it has --max-repeat judged runs (unknown verdicts, testbed failures, do not count; a cell "
               "the testbed fails max(2, N/2) times stops). Time goes where the answer is uncertain: a cell that "
               "never fails is done after 4 runs at W=0.5 (0/4: [0%, 49%]) and 9 at W=0.3, but at a 50% rate a "
               "0.3-wide interval needs ~40 runs and a 0.5-wide one ~12, so raise --max-repeat for flaky cells. "
               "New repeats continue the ids (-r6, -r7, ...); --resume counts the complete cases already there; "
               "--shard is refused (its cases are fixed up front).")
    m.add_argument("file")
    m.add_argument("--jobs", type=int, default=1, help="cases at once (capped by free cores and memory)")
    m.add_argument("--resume", metavar="RUN_ID", help="finish an interrupted run: complete cases are kept")
    m.add_argument("--shard", metavar="I/N", help="run a deterministic 1/N of the cases (shard I)")
    m.add_argument("--fail-fast", action="store_true", help="stop after the first case not as expected")
    m.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local (default): this machine, --jobs at once; ray: each case a task on a Ray cluster's "
                        "nodes (pip install '.[ray]'; nodes join with `ray start ... --resources "
                        "\"$(testbed node-resources)\"`)")
    m.add_argument("--address", help="with --engine ray: the cluster's address (default: auto, the local cluster)")
    m.add_argument("--repeat", type=int, metavar="N", help="runs per cell, instead of the file's `repeat:`")
    m.add_argument("--until-ci", type=float, metavar="W",
                   help="adaptive: repeat each cell until its failure rate's 95%% interval is narrower than W "
                        "(e.g. 0.3) or it has --max-repeat judged runs")
    m.add_argument("--max-repeat", type=int, metavar="N",
                   help=f"with --until-ci: at most N judged runs per cell (default {DEFAULT_MAX_REPEAT})")
    case_options(m)
    m.set_defaults(func=cmd_matrix)
