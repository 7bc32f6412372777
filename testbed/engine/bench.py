"""Benchmarks (never timed tests): boot-to-ready and warm image build, a case's phases cold vs restored,
the HTML report's render time."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from testbed import nas as nas_backends
from testbed.config.matrix import is_matrix_file, load_matrix
from testbed.config.scenario import LoadedScenario, load_scenario
from testbed.images.build import build
from testbed.report.progress import Ui
from testbed.engine.runner import Case, run_case
from testbed.store.index import read_run
from testbed.engine.matrix import resolve_run_dir
from testbed.report import controls as control_report
from testbed.report import modes as modes_report
from testbed.report import phases
from testbed.store.runs import RunDir, host_facts, new_run
from testbed.host.tags import new_tag
from testbed.errors import UsageError
from testbed.vm import oneshot


def boot(role: str, mem: int, runs: int, accel: str, say: Callable[[str], None]) -> int:
    t = time.monotonic()
    build(role, say=say)
    warm = time.monotonic() - t
    times = []
    for i in range(runs):
        req = oneshot.OneShot(role, mem, 1, accel, ("true",), 30)
        _, secs = oneshot.run(req, lambda m: None)
        times.append(secs)
        say(f"boot {i + 1}/{runs}: {secs:.2f} s")
    print(f"{role} @ {mem} MB, {runs} boots: boot-to-ready median {statistics.median(times):.2f} s, max {max(times):.2f} s")
    print(f"warm `image build {role}`: {warm:.2f} s")
    return 0


def boot_modes() -> tuple[str, ...]:
    """bench case columns: both VMs booted; both restored; a restored client with each NAS backend that
    has no VM to boot (netns, docker)."""
    return ("cold", "restore", *(n for n in nas_backends.names() if not nas_backends.traits(n).own_kernel))


def with_boot(loaded: LoadedScenario, mode: str) -> LoadedScenario:
    sc = loaded.scenario
    if mode not in ("cold", "restore"):  # a NAS backend
        nas = replace(sc.nas, backend=mode, boot="restore")
        sc = replace(sc, client=replace(sc.client, boot="restore"), nas=nas)
        sc.validate(sc.path, "")  # its servers and faults must suit the backend, as for --set nas.backend=netns
        return replace(loaded, scenario=sc)
    return replace(loaded, scenario=replace(sc, client=replace(sc.client, boot=mode), nas=replace(sc.nas, boot=mode)))


def case_modes(source: Path, runs: int, modes: list[str], say: Callable[[str], None], iperf: bool = False,
               keep: bool = False) -> dict:
    """Each case of `source` (a scenario, or every case of a matrix) `runs` times per boot mode
    (cold: both VMs booted; restore: both restored from their ready snapshots; netns: the client
    restored, the NAS as userspace servers in a namespace), interleaved so a
    drift of the host weighs on every column alike; per mode the median seconds per phase, ready
    times, case wall / workload wall and cases per hour (one at a time)."""
    loaded = [c.loaded for c in load_matrix(source).cases] if is_matrix_file(source) else [load_scenario(source)]
    ui = Ui(quiet=True)
    dirs: dict[str, list[Path]] = {m: [] for m in modes}
    cells: dict[str, dict[str, list[Path]]] = {}
    with tempfile.TemporaryDirectory() as tmp:  # with keep, the cases stay under results/ like a run's
        run = new_run(new_tag(), {"bench": "case", "source": str(source), "modes": modes, "runs": runs},
                      root=None if keep else Path(tmp))
        say(f"cases in {run.path}" + ("" if keep else " (removed at the end; --keep keeps them)"))
        total, n = runs * len(loaded) * len(modes), 0
        for i in range(runs):
            for one in loaded:
                for mode in modes:
                    n += 1
                    r = run_case(with_boot(one, mode), run, f"{one.scenario.name}-{mode}-{i + 1}", "auto", ui)
                    f = r.data["figures"]
                    say(f"[{n}/{total}] {one.scenario.name} {mode}: {r.verdict}, case {f.get('case_wall_s')} s, "
                        f"workload {f.get('workload_wall_s')} s, boots "
                        + ", ".join(f"{k} {b.get('mode')} {b.get('ready_s')} s" for k, b in (r.data.get("boot") or {}).items()))
                    dirs[mode].append(Path(r.path))
                    cells.setdefault(one.scenario.name, {m: [] for m in modes})[mode].append(Path(r.path))
        cols = {m: phases.summarize_dirs(dirs[m]) for m in modes}
        comps = modes_report.compare(cells)
        if iperf:
            mbps = iperf_mbps(loaded[0], run, ui)
    out = {"source": str(source), "run": str(run.path) if keep else None, "runs_per_case": runs, "cases": len(loaded), "host": host_facts(),
           "modes": {m: c.to_dict() for m, c in cols.items()}, "cells": [c.to_dict() for c in comps]}
    print(f"{source}: {len(loaded)} case(s) x {runs} run(s) per boot mode")
    print(phases.render_columns(cols))
    print("per cell: failures with their interval, the interval of their difference, median figures")
    print(modes_report.render(comps))
    if iperf:
        out["iperf3_mbps"] = mbps
        print(f"iperf3 client->NAS over the same path: {mbps:.1f} MB/s")
    return out


def kept_modes(run: Path) -> dict:
    """The tables of a `bench case --keep` run read back from its case folders (ids <cell>-<mode>-<n>)."""
    cells: dict[str, dict[str, list[Path]]] = {}
    known = boot_modes()
    for d in sorted(p for p in run.iterdir() if p.is_dir() and (p / "verdict.json").exists()):
        m = re.fullmatch(r"(.+)-(" + "|".join(known) + r")-(\d+)", d.name)
        if m:
            cells.setdefault(m.group(1), {}).setdefault(m.group(2), []).append(d)
    present = sorted({m for by in cells.values() for m in by}, key=known.index)
    cols = {m: phases.summarize_dirs([d for by in cells.values() for d in by.get(m, [])]) for m in present}
    comps = modes_report.compare({c: {m: by.get(m, []) for m in present} for c, by in cells.items()})
    print(f"{run}: {sum(len(v) for by in cells.values() for v in by.values())} cases")
    print(phases.render_columns(cols))
    print("per cell: failures with their interval, the interval of their difference, median figures")
    print(modes_report.render(comps))
    return {"run": str(run), "modes": {m: c.to_dict() for m, c in cols.items()}, "cells": [c.to_dict() for c in comps]}


def iperf_mbps(loaded: LoadedScenario, run: RunDir, ui: Ui) -> float:
    """The scenario's network, NAS and client, with iperf3 instead of the workload: MB/s client->NAS."""
    class IperfCase(Case):
        mbps = 0.0

        def _pressure(self) -> None:
            assert self.nas and self.client
            self.nas.sh("iperf3 -s -D", 10)
            res = self.client.exec(["iperf3", "-c", self.nas_ip, "-t", "10", "-J"], 60, check=True)
            IperfCase.mbps = json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"] / 8 / 2**20

    IperfCase(loaded, run, "iperf3", "auto", ui).run()
    return IperfCase.mbps


def html_render(cases: int, sources: list[Path], say: Callable[[str], None]) -> dict[str, float]:
    """Time to write the HTML report of a run of `cases` cases, made by copying real case folders
    (`sources`, round robin) into a temporary run: the run page and every case page."""
    from testbed.report.html import render  # plotly and jinja2: only this benchmark needs them

    with tempfile.TemporaryDirectory() as tmp:
        run = new_run(new_tag(), {"bench": "html", "cases": cases}, root=Path(tmp))
        for i in range(cases):
            src = sources[i % len(sources)]
            shutil.copytree(src, run.path / f"{src.name}-{i:03d}", ignore=shutil.ignore_patterns("qemu-*.log"))
        say(f"{cases} cases copied from {len(sources)} real case folders; rendering")
        t = time.monotonic()
        rep = render.run_report(run.path, run.path / render.HTML_DIR, "storage.protocol", "topology.links.*.mtu")
        secs = time.monotonic() - t
        size = sum(p.stat().st_size for p in (run.path / render.HTML_DIR).rglob("*") if p.is_file())
        index_kb = rep.index.stat().st_size / 1024
    out = {"cases": cases, "render_s": round(secs, 1), "per_case_ms": round(1000 * secs / cases, 1),
           "report_mb": round(size / 2**20, 1), "run_page_kb": round(index_kb, 1)}
    print(f"HTML report of a {cases}-case run: {out['render_s']} s ({out['per_case_ms']} ms per case), "
          f"{out['report_mb']} MB in all, run page {out['run_page_kb']} kB")
    return out


def controls(files: list[str], runs: int, resume: str | None, accel: str, say: Callable[[str], None]) -> dict:
    """Every control `runs` times, round by round (r1 of each, then r2 ...: a drift of the host's speed weighs
    on every control alike), into one run; `resume` continues such a run (complete cases are kept, an
    interrupted one is run again). Per control: how often it gave its expect, with the interval."""
    loaded = [load_scenario(Path(f)) for f in files]  # all checked before anything runs
    lacking = [ls.scenario.name for ls in loaded if not ls.scenario.expect]
    if lacking:
        raise UsageError(f"bench controls: {', '.join(lacking)} set(s) no expect: (a control says what it must give)")
    if resume:
        run = resolve_run_dir(resume)
        asked = json.loads((run.path / "run.json").read_text()).get("request", {})
        if asked.get("bench") != "controls" or asked.get("files") != files:
            raise UsageError(f"bench controls --resume {resume}: that run is not a bench of these controls "
                             f"({asked.get('files')})")
    else:
        run = new_run(new_tag(), {"bench": "controls", "files": files, "runs": runs, "accel": accel})
    say(f"controls bench: {len(loaded)} control(s) x {runs} run(s) in {run.path}")
    ui = Ui(quiet=True)
    total = runs * len(loaded)
    n = 0
    for i in range(1, runs + 1):
        for ls in loaded:
            n += 1
            case_id = f"{ls.scenario.name}-r{i}"
            if (run.path / case_id / "verdict.json").exists():
                continue
            shutil.rmtree(run.path / f"{case_id}.incomplete", ignore_errors=True)
            r = run_case(ls, run, case_id, accel, ui)
            say(f"[{n}/{total}] {case_id}: {r.verdict} (expected {r.expected})"
                + ("" if r.ok else " MISS: " + "; ".join(r.data.get("reasons", [])[:2])))
    found = control_report.rates(read_run(run.path))
    out = {"run": run.id, "runs_per_control": runs, "host": host_facts(), "controls": [c.to_dict() for c in found],
           "all_as_expected": all(c.as_expected == c.runs for c in found)}
    for c in found:
        say(c.line())
    return out
