"""Running a matrix: shards, resume, parallel jobs as far as the machine allows, progress with ETA, and
adaptive repeats (`--until-ci`): each cell is repeated until its failure rate's interval is narrow enough.

`run_batch` is the one loop that runs cases (in order or in parallel, fail-fast, Ctrl-C); `testbed search`
runs its probes through it too."""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from testbed.host.cleanup import INTERRUPTED
from testbed.config.matrix import Matrix, MatrixCase
from testbed.errors import UsageError
from testbed.store.index import read_case
from testbed.host.paths import results_dir
from testbed.report.progress import Ui
from testbed.report.stats import CellRate
from testbed.check.verdict import is_ok
from testbed.engine.runner import CaseResult, run_case
from testbed.store.runs import RunDir, new_run
from testbed.host.tags import new_tag

HOST_OVERHEAD_MB = 400  # QEMU and the testbed itself, per case
DEFAULT_MAX_REPEAT = 10
K = TypeVar("K")


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


def needs_run(verdicts: Sequence[dict[str, Any]], width: float, max_repeat: int) -> bool:
    """Whether a cell of an adaptive run (`--until-ci`) needs another run, from its verdicts so far:
    yes while its Wilson interval is not narrower than `width`, it has fewer than `max_repeat` judged
    runs (unknowns do not count), and the testbed has not failed it (unknown) unknown_cap times."""
    return cell_status(verdicts, width, max_repeat)[0]


def unknown_cap(max_repeat: int) -> int:
    """Testbed failures (unknown) after which an adaptive cell stops: it cannot be measured here."""
    return max(2, max_repeat // 2)


def cell_status(verdicts: Sequence[dict[str, Any]], width: float, max_repeat: int) -> tuple[bool, str]:
    """(needs another run, why) for one cell; see needs_run."""
    cr = CellRate.from_verdicts(verdicts)
    lo, hi = cr.interval
    if cr.runs >= max_repeat:
        return False, f"done: {cr.runs} judged runs (--max-repeat {max_repeat})"
    if cr.runs and hi - lo < width:
        return False, f"done: interval {hi - lo:.2f} narrower than {width:g}"
    if cr.unknowns >= unknown_cap(max_repeat):
        return False, f"stopped: the testbed failed it {cr.unknowns} times (unknown)"
    return True, f"interval {hi - lo:.2f} >= {width:g}: another run"


def cells_needing_runs(cells: Mapping[K, Sequence[dict[str, Any]]], width: float, max_repeat: int) -> list[K]:
    """The cells (keys, in the mapping's order) that need another run; each value is the cell's verdicts
    so far (verdict.json dicts: `verdict`, `expected`). Pure: the adaptive loop's only decision."""
    return [k for k, vs in cells.items() if needs_run(vs, width, max_repeat)]


def cell_progress(label: str, verdicts: Sequence[dict[str, Any]], width: float, max_repeat: int) -> str:
    """A cell's progress line: cases, failures/judged runs with the rate and its interval, what happens next."""
    cr = CellRate.from_verdicts(verdicts)
    lo, hi = cr.interval
    unknown = f" +{cr.unknowns} unknown" if cr.unknowns else ""
    rate = f"fail {cr.failures}/{cr.runs} [{100 * lo:.0f}%-{100 * hi:.0f}%]" if cr.runs else "no judged run"
    return f"{label}: {len(verdicts)} run(s), {rate}{unknown}, {cell_status(verdicts, width, max_repeat)[1]}"


@dataclass
class CellStatus:
    """Where an adaptive run left a cell."""

    cell: int
    label: str
    cases: int
    rate: CellRate
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"cell": self.label, "cases": self.cases, "why": self.why, **self.rate.to_dict()}


@dataclass
class MatrixRun:
    run: RunDir
    results: list[CaseResult]
    skipped: list[str]
    cells: list[CellStatus] = field(default_factory=list)  # adaptive runs only


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

    def add_cases(self, n: int) -> None:
        """More cases to run than at the start (adaptive repeats, search probes)."""
        with self._lock:
            self.total += n
            if self.bar:
                self.bar.update(self.task, total=self.total)

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


def resolve_run_dir(resume: str) -> RunDir:
    path = (Path(resume) if "/" in resume else results_dir() / resume).resolve()  # `latest` -> its run
    if not (path / "run.json").exists():
        raise UsageError(f"--resume {resume}: no run at {path}")
    return RunDir(path)


def _cell_patterns(matrix: Matrix) -> list[re.Pattern[str]]:
    """Per cell, the ids of its repeats (any r) as this matrix names them."""
    pats = []
    for c in matrix.cells:
        dup = f"-{c.dup}" if c.dup > 1 else ""
        rep = r"-r(\d+)" if matrix.suffixed else r"()"
        pats.append(re.compile(re.escape(c.stem) + rep + re.escape(dup)))
    return pats


def existing_cases(matrix: Matrix, run: RunDir) -> dict[tuple[int, int], CaseResult]:
    """The run's complete cases of this matrix, by (cell, repeat index). A case whose axes are a cell's
    but whose id is not named as this matrix names that cell's repeats (a run started with another
    --repeat/--max-repeat: `nfs` against `nfs-r1`) is refused: it would be neither counted nor rerun."""
    where = _locator(matrix)
    found: dict[tuple[int, int], CaseResult] = {}
    for folder in sorted(p for p in run.path.iterdir() if p.is_dir()):
        done = _result_from_folder(folder)
        if not done:
            continue
        axes = done.data.get("axes", {})
        hit = where(folder.name)
        if hit is None:
            cell = next((c for c in matrix.cells if c.assignments == axes), None)
            if cell is not None:
                raise UsageError(f"--resume {run.id}: case {folder.name} ({cell.label}) is named otherwise than this "
                                 f"matrix names that cell's repeats ({cell.case_id(1, matrix.suffixed)}, ...): the run "
                                 "was started with other --repeat/--until-ci options; resume it with those")
            continue
        if axes != matrix.cells[hit[0]].assignments:
            raise UsageError(f"--resume {run.id}: case {folder.name} was run with {axes}, the matrix now "
                             f"says {matrix.cells[hit[0]].assignments}: the matrix changed; start a new run")
        found[hit] = done
    return found


def run_matrix(matrix: Matrix, *, jobs: int = 1, resume: str | None = None, shard: tuple[int, int] | None = None,
               fail_fast: bool = False, accel: str = "auto", quiet: bool = False,
               until_ci: float | None = None, max_repeat: int = DEFAULT_MAX_REPEAT,
               batch: Callable[..., tuple[list[CaseResult], bool]] | None = None) -> MatrixRun:
    """Run the matrix's cases; with `until_ci`, repeat each cell until its interval is narrower than
    until_ci or it has max_repeat judged runs (load the matrix with max_repeat so its ids carry -r<N>)."""
    if until_ci is not None:
        if shard:
            raise UsageError("--until-ci cannot be combined with --shard: a shard's cases are fixed up front; "
                             "give the shards a fixed --repeat, or run the matrix unsharded")
        if not 0 < until_ci <= 1:
            raise UsageError(f"--until-ci {until_ci}: must be an interval width above 0 and at most 1, e.g. 0.3")
        if max_repeat < 1:
            raise UsageError(f"--max-repeat {max_repeat}: must be at least 1")
        if max_repeat > 1 and not matrix.suffixed:
            raise UsageError("--until-ci: load the matrix with max_repeat so its case ids carry -r<N>")
    cases = shard_cases(matrix.cases, shard)
    if until_ci is not None:
        cases = [c for c in cases if c.repeat_index <= max_repeat]
    if not cases:
        raise UsageError(f"{matrix.path}: shard {shard} holds no case")
    if resume:
        run = resolve_run_dir(resume)
        found = existing_cases(matrix, run)
    else:
        request: dict[str, Any] = {"matrix": str(matrix.path), "shard": shard, "cases": [c.id for c in cases],
                                   "accel": accel, "repeat": matrix.repeat}
        if until_ci is not None:
            request.update(until_ci=until_ci, max_repeat=max_repeat)
        run = new_run(new_tag(), request)
        found = {}
    results: list[CaseResult] = []
    skipped: list[str] = []
    todo: list[MatrixCase] = []
    for c in cases:
        done = found.get((c.cell, c.repeat_index))
        if done:
            results.append(done)
            skipped.append(c.id)
        else:
            shutil.rmtree(run.path / f"{c.id}.incomplete", ignore_errors=True)
            todo.append(c)
    extra: dict[tuple[int, int], CaseResult] = {}
    if until_ci is not None:  # a resumed adaptive run: the repeats it had added count too
        initial = {(c.cell, c.repeat_index) for c in cases}
        extra = {k: r for k, r in found.items() if k not in initial}
        results += extra.values()
        skipped += [r.case_id for r in extra.values()]
    ui = MatrixUi(len(cases) + len(extra), quiet)  # after every check that can fail: its live bar must be closed
    ui.done = len(skipped)
    try:
        if ui.bar:
            ui.bar.update(ui.task, completed=ui.done)
        if skipped:
            ui.note(matrix.spec.name, f"resuming {run.id}: {len(skipped)} case(s) already complete, {len(todo)} to run")
        INTERRUPTED.clear()  # a matrix interrupted earlier in this process does not stop this one
        jobs = cap_jobs(cases, jobs, ui, matrix.spec.name)
        batch = batch or run_batch
        new, stopped = batch(matrix.spec.name, todo, run, ui, jobs, fail_fast, accel)
        results += new
        cells: list[CellStatus] = []
        if until_ci is not None and not stopped:
            results, cells = _adapt(matrix, results, run, ui, jobs, fail_fast, accel, until_ci, max_repeat, batch)
    finally:
        ui.close()
    where = _locator(matrix)
    results.sort(key=lambda r: where(r.case_id) or (len(matrix.cells), 0))  # the matrix's order: cell, repeat
    return MatrixRun(run, results, skipped, cells)


def _locator(matrix: Matrix):
    """case id -> (cell, repeat index), or None for an id this matrix does not name."""
    pats = _cell_patterns(matrix)

    def where(case_id: str) -> tuple[int, int] | None:
        return next(((i, int(m.group(1) or 1)) for i, p in enumerate(pats) if (m := p.fullmatch(case_id))), None)

    return where


def _adapt(matrix: Matrix, results: list[CaseResult], run: RunDir, ui: MatrixUi, jobs: int, fail_fast: bool,
           accel: str, width: float, max_repeat: int,
           batch: Callable[..., tuple[list[CaseResult], bool]]) -> tuple[list[CaseResult], list[CellStatus]]:
    """Rounds of new repeats for the cells whose interval is still too wide (cells_needing_runs)."""
    index = _locator(matrix)
    name = matrix.spec.name
    changed = set(range(len(matrix.cells)))
    for round_no in range(1, 10_000):
        by_cell: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(matrix.cells))}
        last_r: dict[int, int] = {i: 0 for i in range(len(matrix.cells))}
        for r in results:
            if (k := index(r.case_id)) is not None:
                by_cell[k[0]].append(r.data)
                last_r[k[0]] = max(last_r[k[0]], k[1])
        for i in sorted(changed):
            ui.note(name, cell_progress(matrix.cells[i].label, by_cell[i], width, max_repeat))
        need = cells_needing_runs(by_cell, width, max_repeat)
        if not need:
            break
        # Enough new repeats per cell to keep the jobs busy, never beyond the cap.
        per_cell = max(1, jobs // len(need))
        todo = []
        for i in need:
            judged_runs = CellRate.from_verdicts(by_cell[i]).runs
            for r in range(last_r[i] + 1, last_r[i] + 1 + min(per_cell, max_repeat - judged_runs)):
                todo.append(matrix.case(i, r))
        ui.note(name, f"--until-ci round {round_no}: {len(need)} cell(s) need more runs, "
                      f"{len(matrix.cells) - len(need)} done; {len(todo)} case(s) more")
        ui.add_cases(len(todo))
        new, stopped = batch(name, todo, run, ui, jobs, fail_fast, accel)
        results = results + new
        changed = {c.cell for c in todo}
        if stopped:
            break
    cells = []
    for i, c in enumerate(matrix.cells):
        vs = [r.data for r in results if (k := index(r.case_id)) is not None and k[0] == i]
        cells.append(CellStatus(i, c.label, len(vs), CellRate.from_verdicts(vs), cell_status(vs, width, max_repeat)[1]))
    return results, cells


def cap_jobs(cases: Sequence[MatrixCase], jobs: int, ui: Ui, name: str) -> int:
    """--jobs, capped by what the machine holds (allowed_jobs), with a note when capped."""
    cap, why = allowed_jobs(list(cases))
    if jobs > cap:
        ui.note(name, f"--jobs {jobs} capped to {cap} ({why})")
        return cap
    return max(1, jobs)


def run_batch(name: str, todo: Sequence[MatrixCase], run: RunDir, ui: MatrixUi, jobs: int, fail_fast: bool,
              accel: str) -> tuple[list[CaseResult], bool]:
    """Run cases into `run`, `jobs` at a time: (their results in the order they finished, whether
    --fail-fast stopped the batch). Ctrl-C stops the running cases, which clean up, and re-raises."""
    results: list[CaseResult] = []

    def one(c: MatrixCase) -> CaseResult:
        ui.case_started(c.id)
        t = time.monotonic()
        r = run_case(c.loaded, run, c.id, accel, ui, c.assignments)
        ui.case_finished(time.monotonic() - t)
        return r

    stop = False
    if jobs <= 1:
        for c in todo:
            r = one(c)
            results.append(r)
            if fail_fast and not r.ok:
                ui.note(name, f"--fail-fast: stopping after {c.id} ({r.verdict})")
                stop = True
                break
    else:
        with ThreadPoolExecutor(jobs, thread_name_prefix="case") as pool:
            pending: set[Future[CaseResult]] = set()
            queue = list(todo)
            try:
                while queue or pending:
                    while queue and len(pending) < jobs and not stop:
                        pending.add(pool.submit(one, queue.pop(0)))
                    if not pending:
                        break
                    # In slices: a signal the kernel hands to a worker thread must still reach us soon.
                    finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
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
                ui.note(name, f"interrupted: stopping {len(pending)} running case(s) and cleaning up")
                wait(pending)
                raise
    return results, stop
