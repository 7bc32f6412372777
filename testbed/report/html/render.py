"""Writing the HTML report of a run (a run page and a page per case) or of a comparison: one
self-contained folder, plotly.js copied into it once, pages from jinja2 templates, opens from file://."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly
import plotly.io as pio
from jinja2 import Environment, PackageLoader, select_autoescape

from testbed.check.evidence import Evidence, on_path, read_evidence
from testbed.check.state import protocol_words
from testbed.forensics.read import FILE as FORENSICS
from testbed.forensics.show import shown_allocations, tcp_words
from testbed.store.index import CaseRecord, read_run
from testbed.report.html import figures, series
from testbed.report.runs import Comparison, agreement_line, cell_label, rate_pivot, repeat_agreement
from testbed.report.stats import CORRECTION_NAMES

HTML_DIR = "html"  # a run's own report folder, inside the run folder
PLOTLY_JS = "plotly.min.js"
OVERVIEW_POINTS = 120  # per case on the run page; case pages are full resolution
EVIDENCE_FILES = (".log", ".txt", ".json", ".jsonl", ".csv", ".pcap", ".yaml")

_env = Environment(loader=PackageLoader("testbed.report.html", "templates"), autoescape=select_autoescape(["j2", "html"]),
                   trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True)
class Report:
    folder: Path
    index: Path
    pages: int


def _plot(fig: Any, div_id: str) -> str:
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def _copy_plotly(out: Path) -> str:
    """plotly.js into the report folder once (not per page); returns its name for the pages' <script src>."""
    dest = out / PLOTLY_JS
    src = Path(plotly.__file__).parent / "package_data" / PLOTLY_JS
    if not dest.exists() or dest.stat().st_size != src.stat().st_size:
        shutil.copyfile(src, dest)
    return PLOTLY_JS


def _rel(target: Path, page_dir: Path) -> str:
    return Path(os.path.relpath(target.resolve(), page_dir.resolve())).as_posix()


def _write(path: Path, template: str, **ctx: Any) -> None:
    path.write_text(_env.get_template(template).render(**ctx))  # a report is made again at will: no fsync


def _blocked(case_dir: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The blocked tasks of evidence.json, or parsed from the sysrq dump of a folder from before it;
    and, where neither could be read, why (said on the page, never dropped)."""
    f, dump = case_dir / "evidence.json", case_dir / "sysrq-client.txt"
    try:
        if f.exists():
            ev = Evidence.from_dict(json.loads(f.read_text())["evidence"])
        elif dump.exists():
            ev = read_evidence(dump.read_text(errors="replace"))
        else:
            return [], None
    except (ValueError, KeyError, TypeError) as e:
        return [], f"{f.name if f.exists() else dump.name} could not be read: {e!r}"
    return [{"label": t.label, "state": t.state, "classes": list(t.classes), "on_path": on_path(t),
             "frames": [fr.split("+", 1)[0] for fr in t.frames[:8]]} for t in ev.blocked], None


def _state(case_dir: Path) -> dict[str, Any] | None:
    """forensics.json for the page's "state" section (a memory dump read with drgn): zones with their bars
    against the watermarks, the receive rings, the sockets, the protocol's queues, tasks by class and the
    tasks that matter (blocked, or running with PF_MEMALLOC). None when the case has none."""
    f = case_dir / FORENSICS
    if not f.exists():
        return None
    try:
        data = json.loads(f.read_text(errors="replace"))
    except ValueError as e:
        return {"error": f"{FORENSICS} could not be read: {e!r}"}
    zones = []
    for z in (data.get("memory") or {}).get("zones") or []:
        scale = max(z["high_kb"] * 2, z["free_kb"], 1)  # the bar's full width: twice the high mark, or more
        zones.append({**z, **{f"{k}_pct": round(100 * min(z[f"{k}_kb"], scale) / scale, 1)
                              for k in ("free", "min", "low", "high")}})
    tasks = data.get("tasks") or []
    classes: dict[str, int] = {}
    for t in tasks:
        if t.get("state") == "D":
            for c in t.get("classes") or ["(no class)"]:
                classes[c] = classes.get(c, 0) + 1
    shown = [{**t, "allocations": shown_allocations(t.get("allocations") or [])} for t in tasks
             if t.get("state") == "D" or ("PF_MEMALLOC" in t.get("flags", []) and t.get("state") != "I")]
    sockets = [{**k, "tcp_words": tcp_words(k["tcp"]) if k.get("tcp") else ""} for k in data.get("sockets") or []]
    return {"why": data.get("why", "stall"), "debug_info": data.get("debug_info", ""), "zones": zones,
            "memory": data.get("memory") or {}, "rings": [(n["name"], q, n.get("refill_pending")) for n in data.get("nics") or []
                                                          for q in n.get("rx") or []],
            "sockets": sockets, "netstat": data.get("netstat") or {}, "protocol": protocol_words(data.get("protocol") or {}),
            "classes": sorted(classes.items(), key=lambda kv: -kv[1]), "tasks": shown, "all_tasks": len(tasks),
            "unread": data.get("unread") or {}}


def case_page(rec: CaseRecord, out_dir: Path, run_id: str, up: str, plotly_js: str) -> Path:
    page_dir = out_dir / "cases"
    page_dir.mkdir(parents=True, exist_ok=True)
    page = page_dir / f"{rec.case_id}.html"
    v = rec.verdict
    s = series.load(rec.path)
    blocked, evidence_error = _blocked(rec.path)
    files = [(p.name, _rel(p, page_dir)) for p in sorted(rec.path.iterdir())
             if p.is_file() and p.suffix in EVIDENCE_FILES]
    case = {"id": rec.case_id, "verdict": v.get("verdict", "?"), "expected": v.get("expected"),
            "description": rec.scenario.get("description", ""), "reasons": v.get("reasons") or [],
            "mechanism": v.get("mechanism"), "figures": v.get("figures") or {}}
    _write(page, "case.html.j2", title=f"{rec.case_id}: {case['verdict']}", plotly_js=f"../{plotly_js}", case=case,
           run_id=run_id, up=up, timeline=_plot(figures.timeline(s), "timeline-plot"), blocked=blocked, evidence_error=evidence_error,
           files=files, state=_state(rec.path))
    return page


def run_report(run_dir: Path, out: Path, rows: str, cols: str, say: Callable[[str], None] = lambda m: None) -> Report:
    """The run page (heat map, progress of every case, the case table with filters) and a page per case."""
    cases = read_run(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    js = _copy_plotly(out)
    meta = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    request = meta.get("request") or {}
    what = request.get("matrix") or " ".join(request.get("argv") or []) or ", ".join(request.get("scenarios") or []) or "run"
    host = meta.get("host") or {}
    rp = rate_pivot(cases, rows, cols)
    axes = sorted({k for c in cases for k in c.axes})
    listed, overview = [], []
    for i, rec in enumerate(cases, start=1):
        page = case_page(rec, out, run_dir.name, "../index.html", js)
        say(f"case page {i}/{len(cases)}: {rec.case_id}")
        overview.append(series.load(rec.path).downsampled(OVERVIEW_POINTS))
        v = rec.verdict
        listed.append({"id": rec.case_id, "href": _rel(page, out), "verdict": v.get("verdict", "?"),
                       "expected": v.get("expected") or "", "axis_values": [str(rec.axes.get(a, "")) for a in axes],
                       "mechanism": (v.get("mechanism") or {}).get("name", ""),
                       "wall": (v.get("figures") or {}).get("case_wall_s", "")})
    filters = {a: sorted({c["axis_values"][i] for c in listed}) for i, a in enumerate(axes)}
    index = out / "index.html"
    _write(index, "run.html.j2", title=f"run {run_dir.name}", plotly_js=js,
           run={"id": run_dir.name, "what": what, "host": f"{host.get('hostname', '?')}, {host.get('cpus', '?')} CPUs, "
                                                           f"kernel {host.get('kernel', '?')}"},
           agreement=agreement_line(*repeat_agreement(cases)), rows=rows, cols=cols, points=OVERVIEW_POINTS,
           heatmap=_plot(figures.heatmap(rp), "heatmap-plot"),
           overview=_plot(figures.progress_overview(overview, {c["id"]: c["verdict"] for c in listed}), "overview-plot"),
           filters=filters, verdicts=sorted({c["verdict"] for c in listed}), cases=listed)
    return Report(out, index, len(cases) + 1)


def _rate(cr: Any) -> str:
    if not cr.runs:
        return f"no judged run (+{cr.unknowns} unknown)" if cr.unknowns else "no run"
    lo, hi = cr.interval
    return f"{cr.failures}/{cr.runs} [{100 * lo:.0f}%-{100 * hi:.0f}%]"


def compare_report(cmp: Comparison, run_a: str, run_b: str, out: Path, summary: str) -> Report:
    out.mkdir(parents=True, exist_ok=True)
    js = _copy_plotly(out)
    cells = []
    for d in cmp.cells:
        css = "moved-worse significant" if d.significant or d.control_broke else (
            f"moved-{d.direction}" if d.direction != "same" else "")
        figs = "; ".join(f"{f.name} {f.median_a:g} → {f.median_b:g}" + (f" (adj. p {f.p_adj:.3g})" if f.p_adj is not None else "")
                         for f in d.figures)
        cells.append({"label": cell_label(d.key), "a": _rate(d.a), "b": _rate(d.b), "direction": d.direction,
                      "p": f"{d.p:.3g}", "p_adj": f"{d.p_adj:.3g}", "css": css, "figures": figs})
    index = out / "index.html"
    _write(index, "compare.html.j2", title=f"{run_a} against {run_b}", plotly_js=js, a=run_a, b=run_b, cells=cells,
           summary=summary, correction=CORRECTION_NAMES[cmp.correction], tested=len(cmp.tested), alpha=cmp.alpha,
           only_a=cmp.only_a, only_b=cmp.only_b)
    return Report(out, index, 1)
