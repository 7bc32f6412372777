"""Judging a case: from what was observed to one verdict, the reasons that decided it, and key figures.
The verdict is the first rule of the table in testbed/check/rules.py whose evidence holds (its precedence
table: docs/verdicts.md); this module walks it, adds what every verdict says beside its own reason, and
the figures."""

from __future__ import annotations

from typing import Any

from testbed.check import readings, rules
from testbed.check.observations import Judgement, Observations, is_ok
from testbed.faults import outcome
from testbed.faults.outcome import Window
from testbed.store.history import Event

__all__ = ["Judgement", "Observations", "fault_windows", "figures", "is_ok", "judge"]


def judge(obs: Observations) -> Judgement:
    try:
        j = rules.decide(obs)
        if not obs.setup_error:
            j.reasons += readings.path_locks(obs.events)
    except Exception as e:  # a checker that throws yields unknown, never a product verdict
        return Judgement("unknown", [f"checker failed: {e!r}"], rule="checker failed")
    try:
        j.figures = {**figures(obs), **j.figures}
    except Exception as e:
        j.reasons.append(f"figures incomplete: {e!r}")
    return j


def fault_windows(events: list[Event], path_down_only: bool = False) -> list[Window]:
    """Every fault's time in place (inject to heal); with `path_down_only`, only the times the NAS or
    the link was away (an outage, a cut, an expired DHCP lease), not conditions such as IPsec,
    competing traffic or loss, under which the client is expected to keep working."""
    h = outcome.read(events)
    return h.path_down if path_down_only else h.windows


def _row_at(rows: list[dict[str, Any]], t: float | None, last: bool = False) -> dict[str, Any]:
    if not rows:
        return {}
    if t is None:
        return rows[-1] if last else rows[0]
    before = [r for r in rows if r["t"] <= t]
    after = [r for r in rows if r["t"] >= t]
    if last:
        return before[-1] if before else rows[0]
    return after[0] if after else rows[-1]


def _delta(a: dict[str, Any], b: dict[str, Any], key: str) -> int | None:
    if a.get(key) is None or b.get(key) is None:
        return None
    return int(b[key]) - int(a[key])


def figures(obs: Observations) -> dict[str, Any]:
    rows = [r for r in obs.rows if r.get("pswpin") is not None]
    start = _row_at(rows, obs.pressure_start)
    end = _row_at(rows, obs.pressure_end, last=True)
    f: dict[str, Any] = {}
    if obs.pressure_start is not None and obs.pressure_end is not None:
        f["workload_wall_s"] = round(obs.pressure_end - obs.pressure_start, 1)
    if obs.progress.finished:
        f["workload_s"] = obs.progress.finished.get("seconds")
    for key, name in (("pswpin", "swap_in_mb"), ("pswpout", "swap_out_mb")):
        d = _delta(start, end, key)
        f[name] = round(d * 4096 / 2**20, 1) if d is not None else None
    for key in ("allocstall", "oom_kill", "pgscan_direct", "pgscan_direct_throttle"):
        f[key] = _delta(start, end, key)
    for key, name in (("tx_bytes", "net_tx_mb"), ("rx_bytes", "net_rx_mb")):
        d = _delta(start, end, key)
        f[name] = round(d / 2**20, 1) if d is not None else None
    for key in ("nr_dirty", "nr_writeback"):
        vals = [r[key] for r in rows if r.get(key) is not None]
        f[f"{key}_peak"] = max(vals) if vals else None
    drops = [r["PFMemallocDrop"] for r in rows if r.get("PFMemallocDrop") is not None]
    f["pfmemalloc_drop_peak"] = (max(drops) - drops[0]) if drops else None
    free = [r["MemFree"] for r in rows if r.get("MemFree") is not None]
    f["min_memfree_kb"] = min(free) if free else None
    f.update(obs.progress.figures())
    return f
