"""What several verbs share: the options of verbs that run cases, the exit status of a set of
cases, the verdict pivot table, and messages on stderr."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from testbed.config.scenario import Scenario
from testbed.report.runs import agreement_line, pivot_table, rate_pivot


def err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def check_kernels(scenarios: list[Scenario], quiet: bool = False) -> None:
    """Every kernel the scenarios name, prepared (fetched, unpacked) and its config checked against what
    each scenario needs, before the first case boots: a missing option is a ConfigError (exit 3)."""
    from testbed.kernels import preflight  # imports the image builder: only for verbs that run cases

    for sc in scenarios:
        preflight.prepare(sc, sc.path, (lambda m: None) if quiet else err)


def case_options(p: argparse.ArgumentParser) -> None:
    """The options every verb that runs cases shares (run, matrix)."""
    p.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    p.add_argument("--quiet", action="store_true", help="only the verdict lines")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.add_argument("--no-html", action="store_true", help="do not write the run's HTML report (RUN/html/) at the end")


def write_run_html(run_path: Path, args: argparse.Namespace, rows: str = "storage.protocol",
                   cols: str = "topology.links.*.mtu") -> None:
    """The run's HTML report into RUN/html/ when the run ends. A report that cannot be drawn is said on
    stderr and never changes the run's exit status: the verdicts are the product, the page a view of them."""
    if args.no_html or not any(p.is_dir() and (p / "verdict.json").exists() for p in run_path.iterdir()):
        return
    from testbed.report.html import render  # plotly and jinja2 (~0.4 s): only when a page is written

    try:
        rep = render.run_report(run_path, run_path / render.HTML_DIR, rows, cols)
    except Exception as e:  # noqa: BLE001 - a view of the results must not fail the run that made them
        err(f"HTML report not written: {e!r} (`testbed report {run_path.name} --html` tries again)")
        return
    if not args.quiet:
        err(f"HTML report: {rep.index}")


def exit_for(results: list) -> int:
    """2 if the testbed itself failed a case, 1 if a case was not as expected, else 0."""
    if any(r.verdict == "unknown" and r.expected != "unknown" for r in results):
        return 2
    return 0 if all(r.ok for r in results) else 1


def print_pivot(cases: list, rows: str, cols: str) -> None:
    """The pivot of rates per cell (runs.cell_text), the run's repeat agreement, and how to read them."""
    rp = rate_pivot(cases, rows, cols)
    header, body = pivot_table(rp)
    t = Table(title="verdicts and failure rates per cell", show_lines=True)
    for h in header:
        t.add_column(h, overflow="fold")
    for line in body:
        t.add_row(*line)
    Console(width=160, highlight=False).print(t)
    print("fail k/n: judged runs whose verdict is not the case's expect (default recovered), the rate "
          "[95% Wilson interval]; FLAKY: both outcomes occurred")
    print("unknown: a testbed failure, counted apart and never in n; ttr: time to recover (median, p90); "
          "mech: mechanisms seen; wall, swap: medians over the recovered runs")
    print(agreement_line(rp.agree, rp.multi))
    merged = sum(1 for n in rp.configs.values() if n > 1)
    if merged:
        print(f"{merged} pivot cell(s) hold several cells (other axis values or scenarios than --rows/--cols "
              "tell apart): their rates mix configurations")
