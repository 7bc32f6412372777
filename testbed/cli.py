"""Command line: argument parsing and printing only; the work is done by the modules it calls."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
import traceback

from testbed.cleanup import install_signal_handlers
from testbed.errors import TestbedError, UsageError


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- verbs --------------------------------------------------------------------------------------


def cmd_image_build(args: argparse.Namespace) -> int:
    from testbed.images import cache
    from testbed.images.build import build
    from testbed.images.recipe import recipe_names

    names = recipe_names() if args.name == "all" else [args.name]
    cache.remove_stale_temps()
    for name in names:
        t = time.monotonic()
        image, cached = build(name, rebuild=args.rebuild, say=_err)
        state = "cached" if cached else "built"
        print(f"{name}: {state} {image.hash} kernel {image.kernel_version} in {time.monotonic() - t:.1f} s ({image.dir})")
    return 0


def cmd_image_list(args: argparse.Namespace) -> int:
    from testbed.images import cache
    from testbed.images.recipe import load_recipe, recipe_hash, recipe_names

    current = {n: recipe_hash(load_recipe(n)) for n in recipe_names()}
    rows = cache.all_entries()
    if not rows:
        print("no images built yet: run `testbed image build all`")
        return 0
    print(f"{'name':8} {'hash':16} {'kernel':16} {'size':>8}  {'built at':25} current")
    for i in rows:
        mark = "yes" if current.get(i.name) == i.hash else "no"
        print(f"{i.name:8} {i.hash:16} {i.kernel_version:16} {i.size_bytes / 2**20:7.0f}M  {i.built_at:25} {mark}")
    return 0


def cmd_vm_exec(args: argparse.Namespace) -> int:
    from testbed.vm import oneshot

    command = list(args.command)
    if not command and not args.show_command:
        raise UsageError("vm exec needs a command after --, e.g. `testbed vm exec client -- uname -r`")
    req = oneshot.OneShot(args.role, args.mem, args.vcpus, args.accel, tuple(command), args.timeout)
    if args.show_command:
        print(shlex.join(oneshot.show_command(req, _err)))
        return 0
    res, _ = oneshot.run(req, _err)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    if res.timed_out:
        _err(f"testbed: the command timed out after {args.timeout:.0f} s in the guest")
        return 124
    return res.status if res.status >= 0 else 128 - res.status


def cmd_clean(args: argparse.Namespace) -> int:
    from testbed.cleanup import clean_leftovers

    done = clean_leftovers(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for d in done:
        print(f"{verb} {d}")
    if not done:
        print("nothing of ours to clean")
    return 0


def cmd_bench_boot(args: argparse.Namespace) -> int:
    from testbed import bench

    return bench.boot(args.role, args.mem, args.runs, args.accel, _err)


def cmd_validate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from testbed.config.scenario import load_scenario
    from testbed.errors import ConfigError

    from testbed.config.matrix import is_matrix_file, load_matrix

    bad = 0
    for f in args.files:
        try:
            if is_matrix_file(Path(f)):
                m = load_matrix(Path(f))
                print(f"{f}: ok (matrix {m.spec.name}: {len(m.cases)} cases: {', '.join(c.id for c in m.cases[:4])}"
                      f"{' ...' if len(m.cases) > 4 else ''})")
                continue
            loaded = load_scenario(Path(f), args.set)
            sc = loaded.scenario
            print(f"{f}: ok ({sc.name}: {sc.storage.protocol}, client {sc.client.mem_mb} MB, "
                  f"workload {sc.workload.total_mb(sc.client.mem_mb)} MB, topology {loaded.topology.name})")
        except ConfigError as e:
            bad += 1
            print(f"testbed: error: {e}", file=sys.stderr)
    return 3 if bad else 0


def cmd_run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from testbed.config.scenario import load_scenario
    from testbed.report.progress import Ui
    from testbed.runner import run_case
    from testbed.store import new_run
    from testbed.tags import new_tag

    loaded = [load_scenario(Path(f), args.set) for f in args.files]  # all files checked before anything runs
    ui = Ui(quiet=args.quiet or args.json)
    run = new_run(new_tag(), {"argv": sys.argv, "files": args.files, "set": args.set, "accel": args.accel})
    results = []
    for ls in loaded:
        for r in range(ls.scenario.repeat):
            case_id = ls.scenario.name + (f"-r{r + 1}" if ls.scenario.repeat > 1 else "")
            results.append(run_case(ls, run, case_id, args.accel, ui))
    if len(results) > 1 and not (args.json or args.quiet):
        from testbed.report.progress import summary_table

        summary_table([r.data for r in results])
    if args.json:
        print(json.dumps({"run": run.id, "path": str(run.path), "cases": [r.data for r in results]}, indent=2, default=str))
    return _exit_for(results)


def cmd_bench_case(args: argparse.Namespace) -> int:
    from testbed import bench

    return bench.case_overhead(args.scenario, args.runs, _err)


def cmd_matrix(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from testbed.config.matrix import load_matrix
    from testbed.matrix import parse_shard, run_matrix
    from testbed.report.progress import summary_table
    from testbed.report.runs import load_cases

    matrix = load_matrix(Path(args.file))
    shard = parse_shard(args.shard) if args.shard else None
    mr = run_matrix(matrix, jobs=args.jobs, resume=args.resume, shard=shard, fail_fast=args.fail_fast,
                    accel=args.accel, quiet=args.quiet or args.json)
    if args.json:
        print(json.dumps({"run": mr.run.id, "path": str(mr.run.path), "skipped": mr.skipped,
                          "cases": [r.data for r in mr.results]}, indent=2, default=str))
    elif not args.quiet:
        summary_table([r.data for r in mr.results])
        _print_pivot(load_cases(str(mr.run.path)), "storage.protocol", "topology.links.*.mtu")
        print(f"run {mr.run.id}: {mr.run.path}")
    return _exit_for(mr.results)


def _exit_for(results: list) -> int:
    if any(r.verdict == "unknown" and r.expected != "unknown" for r in results):
        return 2
    return 0 if all(r.ok for r in results) else 1


def _print_pivot(cases: list, rows: str, cols: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from testbed.report.runs import pivot

    header, body = pivot(cases, rows, cols)
    t = Table(title="verdicts (median time to recover)")
    for h in header:
        t.add_column(h)
    for line in body:
        t.add_row(*line)
    Console(width=160, highlight=False).print(t)


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from testbed.report import junit
    from testbed.report.runs import load_cases, resolve_run

    cases = load_cases(args.run)
    _print_pivot(cases, args.rows, args.cols)
    if args.junit:
        junit.write(cases, resolve_run(args.run).name, Path(args.junit))
        print(f"JUnit XML: {args.junit}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from testbed.report.runs import find_case, find_case_path, load_cases, show_lines

    recs = [find_case(args.ref)] if find_case_path(args.ref) else load_cases(args.ref)
    for rec in recs:
        print("\n".join(show_lines(rec)))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from testbed.report.runs import compare, load_cases

    changes, only = compare(load_cases(args.run_a), load_cases(args.run_b), args.threshold)
    for c in changes:
        mark = "WORSE" if c.worse else "changed"
        print(f"{mark:7} {c.case_id}: {c.what} {c.before} -> {c.after}")
    for line in only:
        print(line)
    if not changes:
        print("no verdict changed; no figure moved by more than " f"{args.threshold:.0%}")
    return 1 if any(c.worse for c in changes) else 0


def cmd_index(args: argparse.Namespace) -> int:
    from testbed import index

    if not args.rebuild:
        raise UsageError("index: say --rebuild (the index is otherwise kept up to date by every run)")
    n = index.rebuild()
    print(f"indexed {n} case(s) into {index.index_path()}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from testbed import index, store
    from testbed.tags import new_tag

    run = store.merge([Path(d) for d in args.dirs], new_tag())
    index.rebuild()
    print(f"merged into run {run.id}: {run.path}")
    return 0


# ---- parser -------------------------------------------------------------------------------------


def _case_options(p: argparse.ArgumentParser) -> None:
    """The options every verb that runs cases shares (run, matrix)."""
    p.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    p.add_argument("--quiet", action="store_true", help="only the verdict lines")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="testbed", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="verb", required=True)

    img = sub.add_parser("image", help="build and list guest images").add_subparsers(dest="image_verb", required=True)
    b = img.add_parser("build", help="build (or find cached) guest images")
    b.add_argument("name", help="client, nas or all")
    b.add_argument("--rebuild", action="store_true", help="build even if a cached image matches the recipe")
    b.set_defaults(func=cmd_image_build)
    img.add_parser("list", help="list cached images").set_defaults(func=cmd_image_list)

    vm = sub.add_parser("vm", help="boot a guest").add_subparsers(dest="vm_verb", required=True)
    e = vm.add_parser("exec", help="boot a guest, run one command through the agent, shut down")
    e.add_argument("role", choices=["client", "nas"])
    e.add_argument("--mem", type=int, default=128, help="VM RAM in MB (QEMU -m)")
    e.add_argument("--vcpus", type=int, default=1)
    e.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    e.add_argument("--timeout", type=float, default=120, help="seconds the command may run in the guest")
    e.add_argument("--show-command", action="store_true", help="print the QEMU argv and run nothing")
    e.add_argument("command", nargs="*", help="after --: the command to run in the guest")
    e.set_defaults(func=cmd_vm_exec)

    c = sub.add_parser("clean", help="remove leftovers of earlier runs (ours only, found by tag)")
    c.add_argument("--dry-run", action="store_true")
    c.set_defaults(func=cmd_clean)

    v = sub.add_parser("validate", help="check scenario files; touches nothing")
    v.add_argument("files", nargs="+")
    v.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    v.set_defaults(func=cmd_validate)

    r = sub.add_parser("run", help="run scenarios end to end and judge each case")
    r.add_argument("files", nargs="+")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field, e.g. storage.nfs.version=4.2")
    _case_options(r)
    r.set_defaults(func=cmd_run)

    m = sub.add_parser("matrix", help="run every case of a matrix file")
    m.add_argument("file")
    m.add_argument("--jobs", type=int, default=1, help="cases at once (capped by free cores and memory)")
    m.add_argument("--resume", metavar="RUN_ID", help="finish an interrupted run: complete cases are kept")
    m.add_argument("--shard", metavar="I/N", help="run a deterministic 1/N of the cases (shard I)")
    m.add_argument("--fail-fast", action="store_true", help="stop after the first case not as expected")
    _case_options(m)
    m.set_defaults(func=cmd_matrix)

    rp = sub.add_parser("report", help="pivot table of a run's verdicts; JUnit XML")
    rp.add_argument("run", help="run id, `latest`, or a run folder")
    rp.add_argument("--rows", default="storage.protocol", help="axis for rows (a scenario field path)")
    rp.add_argument("--cols", default="topology.links.*.mtu", help="axis for columns")
    rp.add_argument("--junit", metavar="FILE")
    rp.set_defaults(func=cmd_report)

    sh = sub.add_parser("show", help="a case's verdict, reasons, figures and evidence (RUN or RUN/CASE)")
    sh.add_argument("ref")
    sh.set_defaults(func=cmd_show)

    cp = sub.add_parser("compare", help="cases whose verdict changed or figures moved; exit 1 if worse")
    cp.add_argument("run_a")
    cp.add_argument("run_b")
    cp.add_argument("--threshold", type=float, default=0.25, help="relative change of a figure worth reporting")
    cp.set_defaults(func=cmd_compare)

    ix = sub.add_parser("index", help="rebuild results/index.sqlite from the case folders")
    ix.add_argument("--rebuild", action="store_true")
    ix.set_defaults(func=cmd_index)

    mg = sub.add_parser("merge", help="fold results from several machines (runs or results folders) into one run")
    mg.add_argument("dirs", nargs="+")
    mg.set_defaults(func=cmd_merge)

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
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "--" in argv:  # everything after -- belongs to the guest command, never to our options
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1 :]
    args = parser().parse_args(argv)
    if hasattr(args, "command"):
        args.command = list(args.command) + rest
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # qemu.qmp logs every refused connection while QEMU starts; our errors say what matters.
    logging.getLogger("qemu.qmp").setLevel(logging.DEBUG if args.debug else logging.CRITICAL)
    install_signal_handlers()
    try:
        return int(args.func(args) or 0)
    except TestbedError as e:
        if args.debug:
            traceback.print_exc()
        _err(f"testbed: error: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        _err("testbed: interrupted; everything we started was stopped and removed")
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
