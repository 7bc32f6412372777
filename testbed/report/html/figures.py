"""Plotly figures for the HTML pages: a case's timeline (panels sharing one time axis, phase
boundaries, fault windows as bands, the stall marked), the run's heat map of failure rates, and
the run's downsampled progress curves. Each returns a figure; pages embed them without plotly.js
(written once per report folder)."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from testbed.report.html.series import CaseSeries
from testbed.report.runs import RatePivot, cell_text

PANELS = (  # (title, series shown in it)
    ("memory (MB)", ("MemFree MB",)),
    ("swap (MB/s)", ("swap out MB/s", "swap in MB/s")),
    ("network, client tap (MB/s)", ("net rx MB/s", "net tx MB/s")),
    ("drops since start", ("PFMemallocDrop", "rx_drop", "UdpRcvbufErrors", "ReasmFails", "TCPMemoryPressures")),
    ("workload progress (%; a command: its CPU, % of a core)", ("progress %", "command user CPU %", "command system CPU %")),
)
FAULT_COLOURS = ("rgba(255,165,0,0.18)", "rgba(128,0,128,0.14)", "rgba(0,128,128,0.14)", "rgba(139,69,19,0.14)")
WATERMARK_DASH = {"min": "dot", "low": "dash", "high": "longdash"}


def timeline(s: CaseSeries) -> go.Figure:
    fig = make_subplots(rows=len(PANELS), cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=[title for title, _ in PANELS])
    for row, (_, names) in enumerate(PANELS, start=1):
        for name in names:
            if name in s.lines:
                fig.add_trace(go.Scatter(x=s.t, y=s.lines[name], name=name, mode="lines", connectgaps=False,
                                         legendgroup=str(row)), row=row, col=1)
    # Shapes as plain dicts spanning every panel (yref paper): plotly's add_vline(row="all") costs
    # ~0.25 s a line, which a 300-case report cannot pay.
    shapes: list[dict] = []
    notes: list[dict] = []
    for name, mb in s.watermarks_mb.items():
        shapes.append({"type": "line", "xref": "x domain", "x0": 0, "x1": 1, "yref": "y", "y0": mb, "y1": mb,
                       "line": {"dash": WATERMARK_DASH[name], "color": "firebrick", "width": 1}})
        notes.append({"xref": "x domain", "x": 0, "yref": "y", "y": mb, "text": f"{name} watermark {mb:g} MB",
                      "showarrow": False, "xanchor": "left", "yanchor": "bottom", "font": {"size": 9, "color": "firebrick"}})
    for i, band in enumerate(s.faults):
        end = band.end if band.end is not None else (s.end_t or band.start)
        shapes.append({"type": "rect", "xref": "x", "x0": band.start, "x1": end, "yref": "paper", "y0": 0, "y1": 1,
                       "fillcolor": FAULT_COLOURS[i % len(FAULT_COLOURS)], "line": {"width": 0}, "layer": "below"})
        notes.append({"xref": "x", "x": band.start, "yref": "paper", "y": 1.0, "showarrow": False, "xanchor": "left",
                      "yanchor": "bottom", "text": f"{band.label}{'' if band.end is not None else ' (not healed)'}",
                      "font": {"size": 10}})
    for name, t in s.phases:
        shapes.append({"type": "line", "xref": "x", "x0": t, "x1": t, "yref": "paper", "y0": 0, "y1": 1,
                       "line": {"width": 1, "color": "grey", "dash": "dot"}})
        notes.append({"x": t, "xref": "x", "y": 1.0, "yref": "paper", "text": name, "showarrow": False, "textangle": -90,
                      "xanchor": "left", "yanchor": "top", "font": {"size": 9, "color": "grey"}})
    if s.stall_t is not None:
        shapes.append({"type": "line", "xref": "x", "x0": s.stall_t, "x1": s.stall_t, "yref": "paper", "y0": 0, "y1": 1,
                       "line": {"width": 2, "color": "red"}})
        notes.append({"x": s.stall_t, "xref": "x", "y": 0.0, "yref": "paper", "text": f"no progress since {s.stall_t:.0f} s",
                      "showarrow": False, "font": {"color": "red"}, "xanchor": "left", "yanchor": "bottom"})
    fig.update_layout(shapes=shapes, annotations=[*fig.layout.annotations, *notes])
    fig.update_xaxes(title_text="seconds since the case began", row=len(PANELS), col=1)
    fig.update_yaxes(range=[0, 101], row=len(PANELS), col=1)
    fig.update_layout(height=180 * len(PANELS) + 120, margin={"l": 60, "r": 20, "t": 60, "b": 40},
                      legend={"orientation": "h", "y": -0.06})
    return fig


def heatmap(rp: RatePivot) -> go.Figure:
    """Rows x columns of the pivot: colour the failure rate, text the counts, interval and times."""
    z, text = [], []
    for r in rp.rvals:
        zr, tr = [], []
        for k in rp.cvals:
            cr = rp.cells.get((r, k))
            zr.append(None if cr is None or cr.rate is None else round(cr.rate, 3))
            tr.append("" if cr is None else cell_text(cr).replace("\n", "<br>"))
        z.append(zr)
        text.append(tr)
    fig = go.Figure(go.Heatmap(z=z, x=[str(c) for c in rp.cvals], y=[str(r) for r in rp.rvals], text=text,
                               texttemplate="%{text}", zmin=0, zmax=1, colorscale="RdYlGn", reversescale=True,
                               colorbar={"title": "failure rate"}, hovertemplate="%{y} / %{x}<br>%{text}<extra></extra>",
                               xgap=3, ygap=3))
    fig.update_layout(xaxis={"title": rp.cols, "type": "category"}, yaxis={"title": rp.rows, "type": "category"},
                      height=max(260, 120 + 110 * len(rp.rvals)), margin={"l": 80, "r": 20, "t": 30, "b": 60})
    return fig


def progress_overview(series: list[CaseSeries], verdict_of: dict[str, str]) -> go.Figure:
    """Every case's workload progress on one plot (downsampled), coloured by verdict."""
    colours = {"recovered": "seagreen", "deadlocked": "crimson", "livelocked": "darkorange", "stalled": "goldenrod",
               "oom": "purple", "unknown": "grey", "io-error": "black", "corrupted": "black"}
    fig = go.Figure()
    seen: set[str] = set()
    for s in series:
        v = verdict_of.get(s.case_id, "unknown")
        fig.add_trace(go.Scatter(x=s.t, y=s.lines.get("progress %", []), mode="lines", name=v, legendgroup=v,
                                   showlegend=v not in seen, line={"color": colours.get(v, "grey"), "width": 1},
                                   hovertemplate=f"{s.case_id}<br>%{{x:.0f}} s: %{{y:.0f}} %<extra>{v}</extra>"))
        seen.add(v)
    fig.update_layout(xaxis_title="seconds since the case began", yaxis_title="workload progress (%)", height=360,
                      yaxis_range=[0, 101],
                      margin={"l": 60, "r": 20, "t": 30, "b": 40})
    return fig
