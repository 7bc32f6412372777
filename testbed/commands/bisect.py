"""`testbed bisect FILE --kernels K1 K2 ...`: which kernel in an ordered list first answers a scenario
differently from the first one, with repeats per step (testbed/engine/bisect.py holds the rules)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from testbed.engine import bisect
from testbed.commands.common import case_options, err, write_run_html
from testbed.config.scenario import load_scenario
from testbed.errors import KernelError, TestbedError, UsageError
from testbed.kernels import preflight
from testbed.kernels import ref as kernel_ref
from testbed.report.progress import Ui
from testbed.engine.runner import run_case
from testbed.store.runs import new_run
from testbed.host.tags import new_tag


def cmd_bisect(args: argparse.Namespace) -> int:
    if len(args.kernels) < 2:
        raise UsageError("--kernels needs at least two kernels, in order (the first is the reference)")
    if len(set(args.kernels)) != len(args.kernels):
        raise UsageError("--kernels: a kernel is named twice")
    if args.repeat < 1:
        raise UsageError(f"--repeat {args.repeat}: must be at least 1")
    overrides = [s for s in args.set if not s.startswith("client.kernel=")]
    # Every kernel's scenario is checked up front (a typo stops here); a kernel's folder only at its step
    # (a path kernel built later, or gone, is that step's skip).
    loaded = {k: load_scenario(Path(args.file), [*overrides, f"client.kernel={k}"]) for k in args.kernels}
    quiet = args.quiet or args.json
    say = (lambda m: None) if quiet else err
    ui = Ui(quiet=quiet)
    run = new_run(new_tag(), {"argv": sys.argv, "file": args.file, "set": args.set, "kernels": args.kernels,
                              "repeat": args.repeat, "accel": args.accel, "bisect": True})
    slugs = {k: kernel_ref.slug(k) for k in args.kernels}
    if len(set(slugs.values())) != len(slugs):  # two paths ending in the same folder name
        slugs = {k: f"k{i + 1}-{s}" for i, (k, s) in enumerate(slugs.items())}

    def evaluate(kernel: str) -> bisect.Step:
        ls = loaded[kernel]
        sc = ls.scenario
        try:
            kernels = preflight.prepare(sc, sc.path, say)
        except KernelError as e:
            step = bisect.Step(kernel, "skip", f"cannot run this scenario: {e.message}")
        except TestbedError as e:  # e.g. a download that failed: this step is lost, not the bisection
            step = bisect.Step(kernel, "skip", f"kernel not prepared: {e}")
        else:
            results = []
            for r in range(args.repeat):
                case_id = f"{sc.name}-{slugs[kernel]}" + (f"-r{r + 1}" if args.repeat > 1 else "")
                results.append(run_case(ls, run, case_id, args.accel, ui, axes={"client.kernel": kernel}))
            step = bisect.step_from(kernel, [r.verdict for r in results], sc.expect, kernels.client.release,
                                    tuple(r.case_id for r in results))
        done.append(step)
        (run.path / "bisect.json").write_text(json.dumps({"steps": [s.to_dict() for s in done]}, indent=2) + "\n")
        if not quiet:
            release = f" ({step.release})" if step.release else ""
            print(f"bisect: {kernel}{release}: {step.answer.upper()} - {step.why}; {step.rate_text()}", flush=True)
        return step

    done: list[bisect.Step] = []  # written after each step: hours of steps survive an interrupted bisection

    outcome = bisect.search(list(args.kernels), evaluate)
    (run.path / "bisect.json").write_text(json.dumps(outcome.to_dict(), indent=2) + "\n")
    write_run_html(run.path, args, rows="client.kernel", cols="storage.protocol")
    if args.json:
        print(json.dumps({"run": run.id, "path": str(run.path), **outcome.to_dict()}, indent=2))
    else:
        print(f"bisect: {outcome.message}")
        print(f"bisect: steps and cases in {run.path} (bisect.json)")
    return 0 if outcome.concluded else 2


def add_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bisect", help="find the first kernel in a list whose answer differs from the first's")
    b.add_argument("file", help="a scenario file")
    b.add_argument("--kernels", nargs="+", required=True, metavar="K",
                   help="kernels in order, oldest first: debian:<suite>, debian:<package>=<version>, path:<dir>")
    b.add_argument("--repeat", type=int, default=1, help="runs per step (a flaky scenario needs several; default 1)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    case_options(b)
    b.set_defaults(func=cmd_bisect)
