"""`testbed run`: run scenario files end to end, one case per repeat, and judge each case."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from testbed.commands.common import case_options, check_kernels, exit_for, write_run_html
from testbed.config.scenario import load_scenario
from testbed.report.progress import Ui, summary_table
from testbed.runner import run_case
from testbed.store import new_run
from testbed.tags import new_tag


def cmd_run(args: argparse.Namespace) -> int:
    loaded = [load_scenario(Path(f), args.set) for f in args.files]  # all files checked before anything runs
    check_kernels([ls.scenario for ls in loaded], quiet=args.quiet or args.json)
    ui = Ui(quiet=args.quiet or args.json)
    run = new_run(new_tag(), {"argv": sys.argv, "files": args.files, "set": args.set, "accel": args.accel})
    results = []
    for ls in loaded:
        for r in range(ls.scenario.repeat):
            case_id = ls.scenario.name + (f"-r{r + 1}" if ls.scenario.repeat > 1 else "")
            results.append(run_case(ls, run, case_id, args.accel, ui))
    write_run_html(run.path, args)
    if len(results) > 1 and not (args.json or args.quiet):
        summary_table([r.data for r in results])
    if args.json:
        print(json.dumps({"run": run.id, "path": str(run.path), "cases": [r.data for r in results]}, indent=2, default=str))
    return exit_for(results)


def add_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run scenarios end to end and judge each case")
    r.add_argument("files", nargs="+")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field, e.g. storage.nfs.version=4.2")
    case_options(r)
    r.set_defaults(func=cmd_run)
