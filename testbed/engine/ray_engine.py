"""`testbed matrix FILE --engine ray [--address ADDR]`: each case a Ray task on whichever node has room.

Nodes say what they can hold with custom resources when they join (`testbed node-resources` prints
them for `ray start --resources`): `testbed_case` (cases at once, by cores and memory, as `--jobs` is
capped) and `kvm` where the probe found real KVM. A task runs its case into a folder local to its node
and returns it as a tar archive with the case's result; the driver unpacks it into the run folder
(under `<case>.incomplete`, then renamed, as the runner completes a case) and indexes it, so the
progress, the run folder and the index stay the driver's. Ray's own retries are off
(`max_retries=0`): a task whose worker or node was lost is resubmitted once by the driver, and the
retry is recorded (the run's `engine.jsonl`, the case's `verdict.json` under `engine`), after each
node has cleaned the dead attempt's leftovers (`testbed clean`'s rule: QEMUs, namespaces and runtime
folders whose owning process is gone). Ctrl-C cancels the tasks (each stops like a case on Ctrl-C and
cleans up), then every node cleans its own leftovers."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testbed.store import index
from testbed.host.cleanup import INTERRUPTED
from testbed.errors import UsageError
from testbed.store.runs import RunDir, new_run, write_atomic

CASE_RESOURCE = "testbed_case"
KVM_RESOURCE = "kvm"
ENGINE_LOG = "engine.jsonl"
# What says the worker or its node went away (a retry may succeed), as against the case's own code
# failing on the node (RayTaskError: the same error again; no retry).
LOST = ("WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OutOfMemoryError", "LocalRayletDiedError",
        "OwnerDiedError", "ActorDiedError")
CANCEL_WAIT_S = 90  # cancelled cases stop at their next check and tear down: give them this long


def _ray() -> Any:
    try:
        import ray  # optional extra: only --engine ray needs it
    except ImportError:
        raise UsageError("--engine ray needs Ray: pip install '.[ray]' (or pip install 'ray>=2.9'); "
                         "--engine local (the default) needs nothing") from None
    return ray


def node_resources() -> dict[str, float]:
    """What this host advertises to a Ray cluster: cases at once (cores / 2 vCPUs, memory / 512 MB per
    case, as --jobs is capped) and `kvm` when the accelerator probe found real KVM here."""
    from testbed.images.build import ensure  # the probe needs the image and boots a VM: only asked for here
    from testbed.vm.accel import choose  # see above

    cores = os.cpu_count() or 1
    try:
        avail = int(next(x for x in open("/proc/meminfo") if x.startswith("MemAvailable")).split()[1]) // 1024
    except (OSError, StopIteration):
        avail = 1024
    out = {CASE_RESOURCE: float(max(1, min(cores // 2, avail // 1024)))}
    if choose("auto", ensure("client", say=lambda m: None), say=lambda m: None).accel == "kvm":
        out[KVM_RESOURCE] = 1.0
    return out


def _pack(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return buf.getvalue()


def run_remote(loaded: Any, case_id: str, axes: dict[str, Any], accel: str) -> dict[str, Any]:
    """On a node: the case, run into a folder of this node, returned packed with its result."""
    from testbed.report.progress import Ui  # on the node, where the case runs
    from testbed.engine.runner import run_case  # on the node, where the case runs

    with tempfile.TemporaryDirectory(prefix="testbed-ray-") as tmp:
        run = new_run("tbray0000", {"engine": "ray", "case": case_id}, root=Path(tmp))
        r = run_case(loaded, run, case_id, accel, Ui(quiet=True), axes)
        return {"data": r.data, "tar": _pack(Path(r.path)), "node": socket.gethostname(), "pid": os.getpid()}


def clean_node() -> list[str]:
    """On a node: remove leftovers of cases whose owner is gone (a lost attempt), as `testbed clean` does."""
    from testbed.host.leftovers import clean_leftovers  # on the node, after a lost attempt

    return clean_leftovers()


def unpack(run: RunDir, case_id: str, tar: bytes, engine: dict[str, Any]) -> Path:
    """The returned case into the run folder: unpacked beside it, `engine` facts added to its
    verdict, then renamed into place (a case is complete only when its folder has its name)."""
    work = run.path / f"{case_id}.incoming"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        with tarfile.open(fileobj=io.BytesIO(tar), mode="r:gz") as t:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: refuse links and paths out of the folder
                t.extractall(work, filter="data")
            else:
                t.extractall(work)
        src = work / case_id
        if not (src / "verdict.json").is_file():
            raise RuntimeError(f"case {case_id}: the node returned no verdict.json")
        v = json.loads((src / "verdict.json").read_text())
        v["engine"] = engine
        write_atomic(src / "verdict.json", json.dumps(v, indent=2, default=str) + "\n")
        final = run.path / case_id
        if final.exists():
            shutil.rmtree(final)
        os.replace(src, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # what was unpacked and not moved into place
    return final


def not_run(run: RunDir, c: Any, why: str, engine: dict[str, Any]) -> Path:
    """A case the engine could not bring back (lost twice, or its code failed on the node): an
    `unknown` case saying why, as a local case whose testbed failed is, so the run exits 2."""
    sc = c.loaded.scenario
    case = run.case(c.id)
    case.write_yaml("scenario.yaml", c.loaded.raw)
    return case.complete({"case": c.id, "scenario": sc.name, "verdict": "unknown", "expected": sc.expect,
                          "axes": c.assignments, "reasons": [f"the Ray engine could not run this case: {why}"],
                          "figures": {}, "engine": engine})


def log(run: RunDir, **entry: Any) -> None:
    with open(run.path / ENGINE_LOG, "a") as f:
        f.write(json.dumps({"t": round(time.time(), 3), **entry}, default=str) + "\n")


def _errors_to_stderr() -> None:
    """Ray's driver prints cluster errors ("(raylet) A worker died ...") on stdout, whatever
    log_to_driver says: `--json` must keep stdout for its JSON. They go to stderr instead (its
    module function, looked up at each call by the listening thread, is wrapped; absent, nothing)."""
    try:
        from ray._private import worker  # private: checked, and left alone where it differs
    except ImportError:
        return
    orig = getattr(worker, "print_to_stdstream", None)
    if orig is None or getattr(orig, "_testbed_stderr", False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> Any:
        return orig({**data, "is_err": True}, ignore_prefix)

    to_stderr._testbed_stderr = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


class RayBatch:
    """A matrix batch runner (the signature of testbed.engine.matrix.run_batch) on a Ray cluster."""

    def __init__(self, address: str | None):
        self.ray = _ray()
        self.address = address or "auto"
        try:
            # No environment is forwarded: a node keeps its own (its image cache, its runtime folder).
            self.ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False)
        except (ConnectionError, SystemExit) as e:  # Ray exits the process when its GCS never answers
            raise UsageError(f"--engine ray: no Ray cluster at {self.address} ({e}); start one with "
                             "`ray start --head --resources \"$(testbed node-resources)\"`") from None
        _errors_to_stderr()
        total = self.ray.cluster_resources().get(CASE_RESOURCE, 0)
        if not total:
            raise UsageError(f"--engine ray: no node of the cluster at {self.address} advertises `{CASE_RESOURCE}`; "
                             "start nodes with `ray start ... --resources \"$(testbed node-resources)\"`")
        self.capacity = int(total)
        self.task = self.ray.remote(max_retries=0, num_cpus=0, resources={CASE_RESOURCE: 1})(run_remote)

    def _clean_everywhere(self, run: RunDir) -> None:
        """Every alive node removes the leftovers of cases whose owner is gone; what each removed,
        or why it could not, goes to the run's engine log."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # with ray, which is loaded

        refs = {}
        for node in self.ray.nodes():
            if node.get("Alive"):
                strategy = NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
                ref = self.ray.remote(num_cpus=0, max_retries=0, scheduling_strategy=strategy)(clean_node).remote()
                refs[ref] = node.get("NodeManagerAddress", node["NodeID"])
        for ref, node in refs.items():
            try:
                log(run, clean=node, removed=self.ray.get(ref, timeout=120))
            except Exception as e:  # noqa: BLE001 - a node that cannot clean is logged; the run goes on
                log(run, clean=node, error=f"{type(e).__name__}: {str(e)[:300]}")

    def __call__(self, name: str, todo: Sequence[Any], run: RunDir, ui: Any, jobs: int, fail_fast: bool,
                 accel: str) -> tuple[list[Any], bool]:
        from testbed.engine.matrix import _result_from_folder  # the matrix module imports this one lazily: no cycle

        ray = self.ray
        results: list[Any] = []
        pending: dict[Any, tuple[Any, int, float]] = {}  # ref -> (case, attempt, started)
        queue = list(todo)
        stop = False

        def submit(c: Any, attempt: int) -> None:
            ui.case_started(c.id + (f" (attempt {attempt})" if attempt > 1 else ""))
            task = self.task.options(resources={CASE_RESOURCE: 1, KVM_RESOURCE: 0.001}) if accel == "kvm" else self.task
            pending[task.remote(c.loaded, c.id, c.assignments, accel)] = (c, attempt, time.monotonic())

        try:
            while queue or pending:
                while queue and len(pending) < self.capacity and not stop:
                    submit(queue.pop(0), 1)
                if not pending:
                    break
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    c, attempt, started = pending.pop(ref)
                    try:
                        out = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        what = type(e).__name__
                        lost = what in LOST and not INTERRUPTED.is_set()
                        log(run, case=c.id, attempt=attempt, lost=what if lost else None, failed=None if lost else what,
                            error=str(e)[:500])
                        self._clean_everywhere(run)
                        if lost and attempt == 1:
                            ui.note(name, f"{c.id}: attempt 1 lost ({what}); nodes cleaned, resubmitted once")
                            submit(c, 2)
                            continue
                        why = (f"attempt {attempt} lost too ({what})" if lost else f"{what} on the node: {str(e)[:300]}")
                        ui.note(name, f"{c.id}: {why}")
                        folder = not_run(run, c, why, {"engine": "ray", "attempt": attempt, "error": what})
                        index.add_case(folder, run.path.parent)
                        ui.case_finished(time.monotonic() - started)
                        r = _result_from_folder(folder)
                        if r is not None:
                            results.append(r)
                        continue
                    folder = unpack(run, c.id, out["tar"], {"engine": "ray", "node": out["node"], "attempt": attempt,
                                                            "worker_pid": out["pid"]})
                    index.add_case(folder, run.path.parent)
                    log(run, case=c.id, attempt=attempt, node=out["node"], verdict=out["data"].get("verdict"))
                    ui.case_finished(time.monotonic() - started)
                    r = _result_from_folder(folder)
                    if r is not None:
                        results.append(r)
                        if fail_fast and not r.ok:
                            stop = True
                            queue.clear()
        except BaseException as e:  # Ctrl-C, or the driver failing: no task may run on without it
            INTERRUPTED.set()
            queue.clear()
            why = "interrupted" if isinstance(e, KeyboardInterrupt) else f"driver failed ({e!r})"
            ui.note(name, f"{why}: cancelling {len(pending)} running case(s); each cleans up, then every node")
            for ref in pending:
                ray.cancel(ref)  # KeyboardInterrupt in the task: the case stops at its next check and undoes
            ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_WAIT_S)
            for ref in pending:
                ray.cancel(ref, force=True)
            self._clean_everywhere(run)
            raise
        return results, stop
