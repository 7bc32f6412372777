"""A case folder as the series a timeline page draws: memory beside the zone watermarks, swap and
network rates, drop counters, workload progress, phase boundaries, fault windows and the stall.
Read with the checker's own reader (testbed.check.casefile), so the page shows what was judged."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.check import casefile
from testbed.check.evidence import parse_zoneinfo
from testbed.faults import outcome

PAGE_MB = 4096 / 2**20
# Cumulative counters drawn as "since the case began" (each starts at 0 on the page).
DROPS = ("PFMemallocDrop", "rx_drop", "UdpRcvbufErrors", "ReasmFails", "TCPMemoryPressures")


@dataclass(frozen=True)
class Band:
    label: str
    start: float
    end: float | None  # None: still in place when the case ended


@dataclass
class CaseSeries:
    case_id: str
    t: list[float] = field(default_factory=list)
    lines: dict[str, list[float | None]] = field(default_factory=dict)  # series name -> values on t
    watermarks_mb: dict[str, float] = field(default_factory=dict)  # min/low/high summed over zones
    phases: list[tuple[str, float]] = field(default_factory=list)
    faults: list[Band] = field(default_factory=list)
    stall_t: float | None = None
    end_t: float | None = None

    def downsampled(self, points: int) -> CaseSeries:
        """At most `points` samples (every k-th, the last kept): for the run page, where many cases share one plot."""
        n = len(self.t)
        if n <= points:
            return self
        k = -(-n // points)
        idx = list(range(0, n, k))
        if idx[-1] != n - 1:
            idx.append(n - 1)
        return CaseSeries(self.case_id, [self.t[i] for i in idx], {name: [v[i] for i in idx] for name, v in self.lines.items()},
                          self.watermarks_mb, self.phases, self.faults, self.stall_t, self.end_t)


def _rate(rows: list[dict[str, Any]], key: str, scale: float) -> list[float | None]:
    """Per-second rate of a cumulative counter (scaled), None where a sample is missing."""
    out: list[float | None] = [None]
    for prev, row in zip(rows, rows[1:]):
        a, b, dt = prev.get(key), row.get(key), row["t"] - prev["t"]
        out.append(round(max(b - a, 0) * scale / dt, 3) if a is not None and b is not None and dt > 0 else None)
    return out


def _since_start(rows: list[dict[str, Any]], key: str) -> list[float | None]:
    first = next((r[key] for r in rows if r.get(key) is not None), None)
    return [None if r.get(key) is None or first is None else r[key] - first for r in rows]


def watermarks(case_dir: Path) -> dict[str, float]:
    """min/low/high in MB, summed over the zones of /proc/zoneinfo at the start of the case."""
    f = case_dir / "zoneinfo-start.txt"
    if not f.exists():
        return {}
    zones = parse_zoneinfo(f.read_text())
    if not zones:
        return {}
    return {name: round(sum(getattr(z, f"{name}_kb") for z in zones) / 1024, 2) for name in ("min", "low", "high")}


def load(case_dir: Path) -> CaseSeries:
    cf = casefile.load(case_dir)
    obs = cf.observations
    rows = [r for r in obs.rows if r.get("t") is not None]
    s = CaseSeries(case_dir.name, [r["t"] for r in rows])
    mem = [r.get("MemFree") for r in rows]
    s.lines["MemFree MB"] = [round(v / 1024, 2) if v is not None else None for v in mem]
    s.lines["swap out MB/s"] = _rate(rows, "pswpout", PAGE_MB)
    s.lines["swap in MB/s"] = _rate(rows, "pswpin", PAGE_MB)
    s.lines["net rx MB/s"] = _rate(rows, "rx_bytes", 1 / 2**20)
    s.lines["net tx MB/s"] = _rate(rows, "tx_bytes", 1 / 2**20)
    for key in DROPS:
        if any(r.get(key) is not None for r in rows):
            s.lines[key] = _since_start(rows, key)
    s.lines["progress %"] = [round(100 * r["progress"] / r["total"], 2) if r.get("progress") is not None and r.get("total")
                             else None for r in rows]
    if any(r.get("workload_user_s") is not None for r in rows):  # a command workload: its progress is its CPU
        s.lines["command user CPU %"] = _rate(rows, "workload_user_s", 100)
        s.lines["command system CPU %"] = _rate(rows, "workload_system_s", 100)
    s.watermarks_mb = watermarks(case_dir)
    s.phases = [(e.name, e.t) for e in obs.events if e.kind == "phase"]
    h = outcome.read(obs.events)
    s.faults = [Band(w.kind, w.start, w.end) for w in h.windows]
    s.stall_t = obs.stall_since if obs.ended_by == "stall" else None
    s.end_t = rows[-1]["t"] if rows else None
    return s
