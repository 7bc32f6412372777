"""`testbed bench boot|case|until-ci|html|phases`: boot-to-ready times, a case's overhead over its workload,
where finished cases' time went,
the case-minutes an adaptive matrix run saved against fixed repeats, and the HTML report's render time."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from testbed.engine import bench
from testbed.commands.common import err
from testbed.errors import UsageError
from testbed.report import phases, savings


def cmd_bench_boot(args: argparse.Namespace) -> int:
    return bench.boot(args.role, args.mem, args.runs, args.accel, err)


def cmd_bench_case(args: argparse.Namespace) -> int:
    source = Path(args.source)
    if not source.is_file():
        raise UsageError(f"bench case: {source} is not a file")
    modes = args.modes.split(",")
    if not modes or any(m not in bench.boot_modes() for m in modes):
        raise UsageError(f"bench case --modes {args.modes}: a comma-separated list of {', '.join(bench.boot_modes())}")
    out = bench.case_modes(source, args.runs, modes, err, iperf=args.iperf, keep=args.keep)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


def cmd_bench_modes(args: argparse.Namespace) -> int:
    from testbed.report.runs import resolve_run  # only this verb reads a stored run

    out = bench.kept_modes(resolve_run(args.run))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def cmd_bench_until_ci(args: argparse.Namespace) -> int:
    s = savings.savings(args.run, args.fixed, args.against)
    if args.out:
        savings.write(s, Path(args.out))
    print(json.dumps(s.to_dict(), indent=2) if args.json else savings.render(s))
    return 0


def cmd_bench_html(args: argparse.Namespace) -> int:
    sources = [Path(p) for p in args.cases_from] if args.cases_from else sorted(
        p.parent for p in Path("results").glob("*/*/verdict.json"))
    if not sources:
        raise UsageError("bench html: no case folder to copy (give --cases-from DIR ...)")
    out = bench.html_render(args.cases, sources, err)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def cmd_bench_phases(args: argparse.Namespace) -> int:
    s = phases.summarize(args.runs)
    print(json.dumps(s.to_dict(), indent=2) if args.json else phases.render(s))
    return 0


def cmd_bench_soak(args: argparse.Namespace) -> int:
    from testbed.engine.soak import soak  # runs cases: only this verb needs the runner

    out = soak(Path(args.file), args.cases, args.accel, err, args.set)
    print(json.dumps(out, indent=2) if args.json else
          f"soak: {out['cases']} cases {out['verdicts']}; leftovers after {len(out['cases_with_leftovers'])} case(s); "
          f"fds {out['fds']}, threads {out['threads']}, rss MB {out['rss_mb']}, host available MB "
          f"{out['mem_available_mb']}; {'flat' if out['flat'] else 'GROWING'}; run {out['run']}")
    return 0 if out["ok"] else 1


def cmd_bench_controls(args: argparse.Namespace) -> int:
    from testbed.engine.nightly import CONTROLS  # the controls the nightly gate requires: one list

    if args.runs < 1:
        raise UsageError(f"bench controls --runs {args.runs}: must be at least 1")
    out = bench.controls(args.files or list(CONTROLS), args.runs, args.resume, args.accel, err)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out, indent=2))
    return 0 if out["all_as_expected"] else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    bn = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_verb", required=True)
    bb = bn.add_parser("boot", help="boot-to-ready times and the warm image build time")
    bb.add_argument("--role", choices=["client", "nas"], default="client")
    bb.add_argument("--mem", type=int, default=128)
    bb.add_argument("--runs", type=int, default=5)
    bb.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    bb.set_defaults(func=cmd_bench_boot)
    bc = bn.add_parser("case", help="a case's phases, ready times, case/workload wall and cases per hour, cold vs restored",
                       description="Runs a scenario (or every case of a matrix) --runs times per boot mode, "
                                   "interleaved, and prints the modes side by side.")
    bc.add_argument("source", nargs="?", default="scenarios/nfs-swap.yaml", help="a scenario or matrix file")
    bc.add_argument("--runs", type=int, default=3, help="runs per case and mode (default 3)")
    bc.add_argument("--modes", default="cold,restore", help="columns, comma-separated: cold (both VMs booted), restore "
                    "(both restored from ready snapshots), netns / docker (restored client, NAS as userspace servers in a "
                    "namespace / a container); default cold,restore")
    bc.add_argument("--iperf", action="store_true", help="also measure iperf3 client->NAS over the same path")
    bc.add_argument("--keep", action="store_true", help="keep the cases as a run under results/ (default: removed)")
    bc.add_argument("--out", help="also write the figures as JSON to this file (e.g. benchmarks/results/case.json)")
    bc.add_argument("--json", action="store_true")
    bc.set_defaults(func=cmd_bench_case)
    bm = bn.add_parser("modes", help="the tables of a kept `bench case --keep` run, read back from its cases")
    bm.add_argument("run", help="the run (id, `latest` or path)")
    bm.add_argument("--out", help="also write the figures as JSON to this file")
    bm.set_defaults(func=cmd_bench_modes)
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
    bh = bn.add_parser("html", help="time to write the HTML report of a large run (copies of real case folders)")
    bh.add_argument("--cases", type=int, default=300)
    bh.add_argument("--cases-from", nargs="+", metavar="CASE_DIR", help="real case folders to copy (default: results/*/*)")
    bh.add_argument("--out", help="also write the figures as JSON to this file")
    bh.set_defaults(func=cmd_bench_html)
    bp = bn.add_parser("phases", help="where finished cases' time went: median per phase, overhead, cases per hour")
    bp.add_argument("runs", nargs="+", help="runs (id, `latest` or path) whose cases to read")
    bp.add_argument("--json", action="store_true")
    bp.set_defaults(func=cmd_bench_phases)
    bs = bn.add_parser("soak", help="many short cases in one process: leftovers after each, fds/threads/memory flat")
    bs.add_argument("file", nargs="?", default="scenarios/soak.yaml")
    bs.add_argument("--cases", type=int, default=100)
    bs.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    bs.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    bs.add_argument("--json", action="store_true")
    bs.set_defaults(func=cmd_bench_soak)
    bk = bn.add_parser("controls", help="every control N times: how often each gives its expect, with the interval",
                       description="Runs the controls (default: the nightly gate's five) round by round into one run; "
                                   "--resume RUN goes on with such a run (spread it over several sittings). Exit 1 "
                                   "when any run of any control missed its expect.")
    bk.add_argument("files", nargs="*", help="control scenario files (default: the nightly controls)")
    bk.add_argument("--runs", type=int, default=10, help="runs per control (default 10: 10/10 bounds a miss rate "
                    "below ~28 %% at 95 %%)")
    bk.add_argument("--resume", metavar="RUN", help="go on with a run this command started (id, `latest` or path)")
    bk.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    bk.add_argument("--out", help="also write the rates as JSON to this file (e.g. benchmarks/results/controls.json)")
    bk.add_argument("--json", action="store_true")
    bk.set_defaults(func=cmd_bench_controls)
