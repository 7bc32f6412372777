"""HTML reports from real case folders: a run page and a page per case, drawn by a real browser.

The pages are rendered from runs assembled in a temporary folder out of committed case folders (a
deadlock at a stall, a fault case, a `stalled` control, one case alone). The browser test opens them in
headless Chromium (Debian's `chromium`, driven by Playwright over the DevTools protocol): a console
error fails it, the heat map and a case timeline must be drawn, and a screenshot of each page is kept
under `.artifacts/html/` (or TESTBED_TEST_ARTIFACTS)."""

import json
import os
import shutil
from pathlib import Path

import pytest

from testbed.store import runs as store
from testbed.report.html import render
from testbed.report.runs import compare_runs, read_run

REPO = Path(__file__).parents[3]
DEADLOCK = REPO / "results/20261126-072333-tb4af7aa/nfs"
FAULT = REPO / "results/20261127-210132-tb3bcca7/fault-ipsec-ikev2"
STALLED = REPO / "tests/fixtures/cases/control-nas-service-down"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def make_run(root: Path, tag: str, folders: dict[str, Path]) -> Path:
    run = store.new_run(tag, {"matrix": "assembled from committed case folders"}, root=root)
    for cid, src in folders.items():
        shutil.copytree(src, run.path / cid, ignore=shutil.ignore_patterns("qemu-*.log"))
        v = json.loads((run.path / cid / "verdict.json").read_text())
        v["case"] = cid
        (run.path / cid / "verdict.json").write_text(json.dumps(v))
    return run.path


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    return {"one": make_run(tmp_path, "tbhtml01", {"nfs": DEADLOCK}),
            "mixed": make_run(tmp_path, "tbhtml02", {"nfs": DEADLOCK, "fault-ipsec-ikev2": FAULT,
                                                     "control-nas-service-down": STALLED})}


def test_run_and_case_pages_are_written(runs: dict[str, Path], tmp_path: Path) -> None:
    for name, run in runs.items():
        out = tmp_path / f"html-{name}"
        rep = render.run_report(run, out, "storage.protocol", "topology.links.*.mtu")
        cases = read_run(run)
        assert rep.pages == len(cases) + 1 and rep.index == out / "index.html"
        index = rep.index.read_text()
        assert 'id="heatmap-plot"' in index and 'id="overview-plot"' in index
        assert '<script src="plotly.min.js">' in index and "cdn" not in index.lower()  # offline: no CDN
        for c in cases:
            page = (out / "cases" / f"{c.case_id}.html").read_text()
            assert f'href="cases/{c.case_id}.html"' in index
            assert 'id="timeline-plot"' in page and '<script src="../plotly.min.js">' in page
            assert c.verdict["verdict"] in page
        
        # plotly.js once per report folder, never per page
        assert [p.name for p in out.rglob("*.js")] == ["plotly.min.js"]
    mixed = tmp_path / "html-mixed"
    stalled = (mixed / "cases/control-nas-service-down.html").read_text()
    assert "stalled" in stalled and "service probe" in stalled
    fault = (mixed / "cases/fault-ipsec-ikev2.html").read_text()
    assert "ipsec" in fault and "charon" in fault  # the fault band's label; the blocked tasks table
    # evidence files are linked relative to the page, and exist
    for href in [h.split('"')[1] for h in fault.split('<a href=')[1:]]:
        if not href.startswith("../index"):
            assert (mixed / "cases" / href).resolve().exists(), href


def test_a_case_page_shows_the_state_at_the_stall(runs: dict[str, Path], tmp_path: Path) -> None:
    """Issue 29: a case with forensics.json (here the recorded stall of the nas-frozen control) gets a
    "state at the stall" section: zones as bars against their watermarks, sockets, the RPC queues, tasks."""
    run = runs["one"]
    shutil.copy(REPO / "tests/fixtures/forensics/nas-frozen-stall-6.1.json", run / "nfs/forensics.json")
    render.run_report(run, tmp_path / "html", "storage.protocol", "topology.links.*.mtu")
    page = (tmp_path / "html/cases/nfs.html").read_text()
    assert "State at the stall (memory dump)" in page
    assert '<div class="zonefree below" style="width: ' in page  # DMA32 below its minimum
    assert "10.201.0.1:965 &rarr; 10.201.0.2:2049" in page and "RPC transport 10.201.0.1:965&gt;10.201.0.2:2049" in page
    assert "blocked (D) by class: mempool-wait 3" in page and "kswapd0 (37)" in page
    (run / "nfs/forensics.json").write_text("{cut")
    render.run_report(run, tmp_path / "html2", "storage.protocol", "topology.links.*.mtu")
    assert "State not shown: forensics.json could not be read" in (tmp_path / "html2/cases/nfs.html").read_text()


def test_compare_page_marks_moved_cells(runs: dict[str, Path], tmp_path: Path) -> None:
    cmp = compare_runs(read_run(runs["one"]), read_run(runs["mixed"]))
    rep = render.compare_report(cmp, "one", "mixed", tmp_path / "cmp", "exit 0: no significant regression")
    page = rep.index.read_text()
    assert "<td>storage.protocol=nfs</td>" in page  # the shared cell, paired by its axis values
    assert "Only in mixed" in page and "exit 0" in page


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (Debian: apt install chromium)")
def test_pages_draw_in_a_browser(runs: dict[str, Path], tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    out = tmp_path / "html"
    render.run_report(runs["mixed"], out, "storage.protocol", "topology.links.*.mtu")
    shots = Path(os.environ.get("TESTBED_TEST_ARTIFACTS") or REPO / ".artifacts") / "html"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for page_file, plot_id in [(out / "index.html", "heatmap-plot"), (out / "index.html", "overview-plot"),
                                       (out / "cases/fault-ipsec-ikev2.html", "timeline-plot"),
                                       (out / "cases/control-nas-service-down.html", "timeline-plot"),
                                       (out / "cases/nfs.html", "timeline-plot")]:
                page = browser.new_page(viewport={"width": 1300, "height": 900})
                errors: list[str] = []
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(page_file.as_uri())
                page.wait_for_selector(f"#{plot_id} .main-svg", timeout=20_000)
                drawn = page.evaluate(f"""() => {{
                    const d = document.getElementById("{plot_id}");
                    return {{traces: (d.data || []).length,
                             marks: d.querySelectorAll(".scatterlayer .trace path, .heatmaplayer image, .heatmaplayer path").length,
                             width: d.getBoundingClientRect().width}};
                }}""")
                assert drawn["traces"] > 0 and drawn["marks"] > 0 and drawn["width"] > 300, (page_file.name, drawn)
                page.screenshot(path=str(shots / f"{page_file.stem}-{plot_id}.png"), full_page=True)
                assert not errors, (page_file.name, errors)
                page.close()
        finally:
            browser.close()


def test_unreadable_evidence_is_said_not_dropped(tmp_path: Path) -> None:
    case = tmp_path / "fault-ipsec-ikev2"
    shutil.copytree(FAULT, case)
    assert render._blocked(case)[0] and render._blocked(case)[1] is None
    (case / "evidence.json").write_text("{not json")
    blocked, why = render._blocked(case)
    assert blocked == [] and why and why.startswith("evidence.json could not be read")
