"""Running a matrix: shards, resume, parallel jobs as far as the machine allows, progress with ETA."""

from __future__ import annotations

import os
import shutil
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from testbed.cleanup import INTERRUPTED
from testbed.config.matrix import Matrix, MatrixCase
from testbed.errors import UsageError
from testbed.index import read_case
from testbed.paths import results_dir
from testbed.report.progress import Ui
from testbed.check.verdict import is_ok
from testbed.runner import CaseResult, run_case
from testbed.store import RunDir, new_run
from testbed.tags import new_tag

HOST_OVERHEAD_MB = 400  # QEMU and the testbed itself, per case


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text}: must look like I/N, e.g. 1/2") from None
    if not 1 <= i <= n:
        raise UsageError(f"--shard {text}: I must be between 1 and N")
    return i, n


def shard_cases(cases: tuple[MatrixCase, ...], shard: tuple[int, int] | None) -> list[MatrixCase]:
    """Deterministic 1/N of the cases by sorted id: N machines together run each case exactly once."""
    if not shard:
        return list(cases)
    i, n = shard
    mine = {c.id for k, c in enumerate(sorted(cases, key=lambda c: c.id)) if k % n == i - 1}
    return [c for c in cases if c.id in mine]  # chosen by sorted id, run in the matrix's order


def allowed_jobs(cases: list[MatrixCase]) -> tuple[int, str]:
    """How many cases fit at once: each guest has its vCPUs to itself; memory must hold all guests."""
    cores = os.cpu_count() or 1
    per_case_cpus = max(c.loaded.scenario.client.vcpus + c.loaded.scenario.nas.vcpus for c in cases)
    per_case_mb = max(c.loaded.scenario.client.mem_mb + c.loaded.scenario.nas.mem_mb for c in cases) + HOST_OVERHEAD_MB
    try:
        avail_mb = int(next(line for line in open("/proc/meminfo") if line.startswith("MemAvailable")).split()[1]) // 1024
    except (OSError, StopIteration):
        avail_mb = per_case_mb
    by_cpu, by_mem = max(1, cores // per_case_cpus), max(1, avail_mb // per_case_mb)
    why = f"{cores} cores / {per_case_cpus} vCPUs per case, {avail_mb} MB available / {per_case_mb} MB per case"
    return min(by_cpu, by_mem), why


@dataclass
class MatrixRun:
    run: RunDir
    results: list[CaseResult]
    skipped: list[str]


class MatrixUi(Ui):
    """Ui plus a line per case start with done/total, elapsed and ETA; on a terminal also a live bar
    (cases done/total, current case and phase, elapsed, ETA) under the phase lines."""

    def __init__(self, total: int, quiet: bool = False):
        super().__init__(quiet)
        self.total, self.done = total, 0
        self.durations: list[float] = []
        self._lock = threading.Lock()
        self.bar: Any = None
        if not quiet and self.console.is_terminal:
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TimeRemainingColumn(), console=self.console)
            self.task = self.bar.add_task("matrix", total=total)
            self.bar.start()

    def phase(self, case: str, name: str, detail: str = "") -> None:
        super().phase(case, name, detail)
        if self.bar:
            self.bar.update(self.task, description=f"{case}: {name}")

    def close(self) -> None:
        if self.bar:
            self.bar.stop()

    def case_started(self, case_id: str) -> None:
        with self._lock:
            elapsed = time.monotonic() - self.t0
            eta = ""
            if self.durations:
                left = (self.total - self.done) * (sum(self.durations) / len(self.durations))
                eta = f", ETA {left / 60:.0f} min"
            if not self.quiet:
                self.console.print(f"[bold]case {self.done + 1}/{self.total}[/bold] {case_id} (elapsed {elapsed / 60:.1f} min{eta})")

    def case_finished(self, seconds: float) -> None:
        with self._lock:
            self.done += 1
            self.durations.append(seconds)
            if self.bar:
                self.bar.update(self.task, completed=self.done)


def _result_from_folder(folder: Path) -> CaseResult | None:
    rec = read_case(folder)
    if not rec:
        return None
    v = rec.verdict
    return CaseResult(rec.case_id, v["verdict"], v.get("expected"), is_ok(v["verdict"], v.get("expected")), str(folder), v)


def run_matrix(matrix: Matrix, *, jobs: int = 1, resume: str | None = None, shard: tuple[int, int] | None = None,
               fail_fast: bool = False, accel: str = "auto", quiet: bool = False) -> MatrixRun:
    cases = shard_cases(matrix.cases, shard)
    if not cases:
        raise UsageError(f"{matrix.path}: shard {shard} holds no case")
    if resume:
        path = (Path(resume) if "/" in resume else results_dir() / resume).resolve()  # `latest` -> its run
        if not (path / "run.json").exists():
            raise UsageError(f"--resume {resume}: no run at {path}")
        run = RunDir(path)
    else:
        request: dict[str, Any] = {"matrix": str(matrix.path), "shard": shard, "cases": [c.id for c in cases], "accel": accel}
        run = new_run(new_tag(), request)
    results: list[CaseResult] = []
    skipped: list[str] = []
    todo: list[MatrixCase] = []
    for c in cases:
        done = _result_from_folder(run.path / c.id)
        if done and done.data.get("axes", {}) != c.assignments:
            raise UsageError(f"--resume {run.id}: case {c.id} was run with {done.data.get('axes')}, the matrix now "
                             f"says {c.assignments}: the matrix changed; start a new run")
        if done:
            results.append(done)
            skipped.append(c.id)
        else:
            shutil.rmtree(run.path / f"{c.id}.incomplete", ignore_errors=True)
            todo.append(c)
    ui = MatrixUi(len(cases), quiet)  # after every check that can fail: its live bar must be closed
    ui.done = len(skipped)
    try:
        return _run_cases(matrix, cases, todo, skipped, results, run, ui, jobs, fail_fast, accel)
    finally:
        ui.close()


def _run_cases(matrix: Matrix, cases: list[MatrixCase], todo: list[MatrixCase], skipped: list[str],
               results: list[CaseResult], run: RunDir, ui: MatrixUi, jobs: int, fail_fast: bool, accel: str) -> MatrixRun:
    if ui.bar:
        ui.bar.update(ui.task, completed=ui.done)
    if skipped:
        ui.note(matrix.spec.name, f"resuming {run.id}: {len(skipped)} case(s) already complete, {len(todo)} to run")
    INTERRUPTED.clear()  # a matrix interrupted earlier in this process does not stop this one
    cap, why = allowed_jobs(cases)
    if jobs > cap:
        ui.note(matrix.spec.name, f"--jobs {jobs} capped to {cap} ({why})")
        jobs = cap

    def one(c: MatrixCase) -> CaseResult:
        ui.case_started(c.id)
        t = time.monotonic()
        r = run_case(c.loaded, run, c.id, accel, ui, c.assignments)
        ui.case_finished(time.monotonic() - t)
        return r

    if jobs <= 1:
        for c in todo:
            r = one(c)
            results.append(r)
            if fail_fast and not r.ok:
                ui.note(matrix.spec.name, f"--fail-fast: stopping after {c.id} ({r.verdict})")
                break
    else:
        with ThreadPoolExecutor(jobs, thread_name_prefix="case") as pool:
            pending: set[Future[CaseResult]] = set()
            queue = list(todo)
            stop = False
            try:
                while queue or pending:
                    while queue and len(pending) < jobs and not stop:
                        pending.add(pool.submit(one, queue.pop(0)))
                    if not pending:
                        break
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in finished:
                        r = f.result()
                        results.append(r)
                        if fail_fast and not r.ok:
                            stop = True
                            queue.clear()
            except KeyboardInterrupt:
                # The workers' cases stop at their next check and undo what they made; wait for them.
                INTERRUPTED.set()
                queue.clear()
                ui.note(matrix.spec.name, f"interrupted: stopping {len(pending)} running case(s) and cleaning up")
                wait(pending)
                raise
    order = {c.id: i for i, c in enumerate(cases)}
    results.sort(key=lambda r: order.get(r.case_id, 0))
    return MatrixRun(run, results, skipped)
