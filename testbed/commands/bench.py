"""`testbed bench boot|case`: boot-to-ready times, and a case's overhead over its workload."""

from __future__ import annotations

import argparse

from testbed import bench
from testbed.commands.common import err


def cmd_bench_boot(args: argparse.Namespace) -> int:
    return bench.boot(args.role, args.mem, args.runs, args.accel, err)


def cmd_bench_case(args: argparse.Namespace) -> int:
    return bench.case_overhead(args.scenario, args.runs, err)


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
