"""`testbed run`: run scenario files end to end, one case per repeat, and judge each case."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from testbed.engine import bisect
from testbed.commands.common import case_options, check_kernels, err, exit_for, write_run_html
from testbed.errors import KernelError, TestbedError, UsageError
from testbed.config.scenario import load_scenario
from testbed.report.progress import Ui, summary_table
from testbed.engine.runner import run_case
from testbed.store.runs import new_run
from testbed.host.tags import new_tag


def cmd_run(args: argparse.Namespace) -> int:
    if args.bisect:
        return run_bisect_step(args)
    return run_files(args)


def run_files(args: argparse.Namespace) -> int:
    if args.repeat is not None and args.repeat < 1:
        raise UsageError(f"--repeat {args.repeat}: must be at least 1")
    sets = args.set + (["evidence.keep_dumps=true"] if args.keep_dumps else [])
    loaded = [load_scenario(Path(f), sets) for f in args.files]  # all files checked before anything runs
    check_kernels([ls.scenario for ls in loaded], quiet=args.quiet or args.json)
    ui = Ui(quiet=args.quiet or args.json)
    run = new_run(new_tag(), {"argv": sys.argv, "files": args.files, "set": args.set, "accel": args.accel,
                              "repeat": args.repeat, "bisect": args.bisect})
    results = []
    for ls in loaded:
        repeat = args.repeat or ls.scenario.repeat
        for r in range(repeat):
            case_id = ls.scenario.name + (f"-r{r + 1}" if repeat > 1 else "")
            results.append(run_case(ls, run, case_id, args.accel, ui))
    args.results = results
    args.kernel = loaded[0].scenario.client.kernel
    write_run_html(run.path, args)
    if len(results) > 1 and not (args.json or args.quiet):
        summary_table([r.data for r in results])
    if args.json and not args.bisect:
        print(json.dumps({"run": run.id, "path": str(run.path), "cases": [r.data for r in results]}, indent=2, default=str))
    args.run_path = run.path
    return exit_for(results)


def run_bisect_step(args: argparse.Namespace) -> int:
    """`--bisect`: one `git bisect run` step. Exit 0 good (as expected), 1 bad, 125 skip (the testbed could
    not judge, or the kernel cannot run the scenario: no image, or its config lacks an option); any other
    error exits 128, which makes `git bisect run` stop rather than mark a commit bad for our mistake."""
    try:
        if len(args.files) != 1:
            raise UsageError("--bisect judges one scenario file")
        run_files(args)
    except KernelError as e:
        print(f"bisect: skip (125): {e}", flush=True)
        return bisect.EXIT["skip"]
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - anything but a verdict must not read as "bad" to git bisect
        if not isinstance(e, TestbedError):
            traceback.print_exc()
        err(f"testbed: error: {e}")
        print("bisect: abort (128): not a verdict; git bisect run stops here", flush=True)
        return 128
    results = args.results
    sc_expect = results[0].expected if results else None
    release = results[0].data.get("kernel", "") if results else ""
    step = bisect.step_from(args.kernel, [r.verdict for r in results], sc_expect, release,
                            tuple(r.case_id for r in results))
    (args.run_path / "bisect-step.json").write_text(json.dumps(step.to_dict(), indent=2) + "\n")
    if args.json:
        print(json.dumps({"run": args.run_path.name, "path": str(args.run_path), **step.to_dict(),
                          "exit": bisect.EXIT[step.answer]}, indent=2))
    else:
        print(f"bisect: {step.answer} ({bisect.EXIT[step.answer]}): {step.why}; {step.rate_text()}", flush=True)
    return bisect.EXIT[step.answer]


def add_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run scenarios end to end and judge each case")
    r.add_argument("files", nargs="+")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field, e.g. storage.nfs.version=4.2")
    r.add_argument("--repeat", type=int, default=None, metavar="N", help="runs per scenario (default: its repeat:)")
    r.add_argument("--bisect", action="store_true",
                   help="a `git bisect run` step: exit 0 good, 1 bad, 125 skip (rules: testbed/engine/bisect.py)")
    r.add_argument("--keep-dumps", action="store_true",
                   help="copy each memory dump into its case folder (dumps/), beyond the cache's bound (evidence.keep_dumps)")
    case_options(r)
    r.set_defaults(func=cmd_run)
