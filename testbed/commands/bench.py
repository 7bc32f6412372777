"""`testbed bench boot|case|until-ci`: boot-to-ready times, a case's overhead over its workload, and
the case-minutes an adaptive matrix run saved against fixed repeats."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from testbed import bench
from testbed.commands.common import err
from testbed.report import savings


def cmd_bench_boot(args: argparse.Namespace) -> int:
    return bench.boot(args.role, args.mem, args.runs, args.accel, err)


def cmd_bench_case(args: argparse.Namespace) -> int:
    return bench.case_overhead(args.scenario, args.runs, err)


def cmd_bench_until_ci(args: argparse.Namespace) -> int:
    s = savings.savings(args.run, args.fixed, args.against)
    if args.out:
        savings.write(s, Path(args.out))
    print(json.dumps(s.to_dict(), indent=2) if args.json else savings.render(s))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    bn = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_verb", required=True)
    bb = bn.add_parser("boot", help="boot-to-ready times and the warm image build time")
    bb.add_argument("--role", choices=["client", "nas"], default="client")
    bb.add_argument("--mem", type=int, default=128)
    bb.add_argument("--runs", type=int, default=5)
    bb.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    bb.set_defaults(func=cmd_bench_boot)
    bc = bn.add_parser("case", help="case overhead over the workload, swap vs iperf3 throughput")
    bc.add_argument("--scenario", default="scenarios/nfs-swap.yaml")
    bc.add_argument("--runs", type=int, default=3)
    bc.set_defaults(func=cmd_bench_case)
    bu = bn.add_parser("until-ci", help="case-minutes an adaptive (--until-ci) matrix run saved against fixed repeats",
                       description="Reads a finished `testbed matrix FILE --until-ci W` run: per cell, the case-minutes "
                                   "it used against fixed repeats of the same cells (by default --max-repeat runs at "
                                   "the cell's median case time; with --against, a real fixed-repeat run's times).")
    bu.add_argument("run", help="the adaptive run (id, `latest` or path)")
    bu.add_argument("--fixed", type=int, help="fixed repeats per cell to compare with (default: the run's --max-repeat)")
    bu.add_argument("--against", metavar="RUN", help="a fixed-repeat run of the same matrix: its measured times")
    bu.add_argument("--out", help="also write the figures as JSON to this file (e.g. benchmarks/results/until-ci.json)")
    bu.add_argument("--json", action="store_true")
    bu.set_defaults(func=cmd_bench_until_ci)
