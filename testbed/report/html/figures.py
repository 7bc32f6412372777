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
    ("workload progress (%)", ("progress %",)),
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
    for name, mb in s.watermarks_mb.items():
        fig.add_hline(y=mb, line_dash=WATERMARK_DASH[name], line_color="firebrick", line_width=1,
                      annotation_text=f"{name} watermark {mb:g} MB", annotation_position="top left", row=1, col=1)
    for i, band in enumerate(s.faults):
        end = band.end if band.end is not None else (s.end_t or band.start)
        fig.add_vrect(x0=band.start, x1=end, fillcolor=FAULT_COLOURS[i % len(FAULT_COLOURS)], line_width=0,
                      annotation_text=f"{band.label}{'' if band.end is not None else ' (not healed)'}",
                      annotation_position="top left", row="all", col=1)
    for name, t in s.phases:
        fig.add_vline(x=t, line_width=1, line_color="grey", line_dash="dot", row="all", col=1)
        fig.add_annotation(x=t, y=1.0, yref="paper", text=name, showarrow=False, textangle=-90, xanchor="left",
                           font={"size": 9, "color": "grey"})
    if s.stall_t is not None:
        fig.add_vline(x=s.stall_t, line_width=2, line_color="red", row="all", col=1)
        fig.add_annotation(x=s.stall_t, y=0.0, yref="paper", text=f"no progress since {s.stall_t:.0f} s",
                           showarrow=False, font={"color": "red"}, xanchor="left")
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
        fig.add_trace(go.Scattergl(x=s.t, y=s.lines.get("progress %", []), mode="lines", name=v, legendgroup=v,
                                   showlegend=v not in seen, line={"color": colours.get(v, "grey"), "width": 1},
                                   hovertemplate=f"{s.case_id}<br>%{{x:.0f}} s: %{{y:.0f}} %<extra>{v}</extra>"))
        seen.add(v)
    fig.update_layout(xaxis_title="seconds since the case began", yaxis_title="workload progress (%)", height=360,
                      yaxis_range=[0, 101],
                      margin={"l": 60, "r": 20, "t": 30, "b": 40})
    return fig
