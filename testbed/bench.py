"""Benchmarks (never timed tests): boot-to-ready and warm image build."""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from testbed.config.scenario import load_scenario
from testbed.images.build import build
from testbed.report.progress import Ui
from testbed.runner import Case, run_case
from testbed.store import new_run
from testbed.tags import new_tag
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


def case_overhead(scenario: str, runs: int, say: Callable[[str], None]) -> int:
    """Median of case wall time / workload wall time for a shipped scenario, and swap MB/s beside
    iperf3 MB/s over the same client-NAS path (reported, not a target: TCG bounds both)."""
    class IperfCase(Case):
        """The scenario's network, NAS and client, with iperf3 instead of the workload."""

        mbps: float | None = None

        def _pressure(self) -> None:
            assert self.nas and self.client
            self.nas.sh("iperf3 -s -D", 10)
            res = self.client.exec(["iperf3", "-c", self.nas_ip, "-t", "10", "-J"], 60, check=True)
            IperfCase.mbps = json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"] / 8 / 2**20

    loaded = load_scenario(Path(scenario))
    ui = Ui(quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        run = new_run(new_tag(), {"bench": "case_overhead"}, root=Path(tmp))
        ratios, swap_rates = [], []
        for i in range(runs):
            r = run_case(loaded, run, f"run{i + 1}", "auto", ui)
            f = r.data["figures"]
            if r.verdict != "recovered" or not f.get("workload_wall_s"):
                say(f"run {i + 1}: verdict {r.verdict}, not counted")
                continue
            ratios.append(f["case_wall_s"] / f["workload_wall_s"])
            swap_rates.append(((f["swap_in_mb"] or 0) + (f["swap_out_mb"] or 0)) / f["workload_wall_s"])
            say(f"run {i + 1}: case {f['case_wall_s']:.1f} s, workload {f['workload_wall_s']:.1f} s, ratio {ratios[-1]:.2f}")
        IperfCase(loaded, run, "iperf3", "auto", ui).run()
    if not ratios:
        print("no run recovered: nothing to report")
        return 1
    print(f"{loaded.scenario.name}: case/workload wall time median {statistics.median(ratios):.2f} over {len(ratios)} runs (target <= 1.5)")
    print(f"swap {statistics.median(swap_rates):.1f} MB/s (in+out) vs iperf3 {IperfCase.mbps or 0:.1f} MB/s client->NAS")
    return 0


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
