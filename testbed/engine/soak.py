"""The soak: many short cases back to back in this one process, checking after each that nothing of ours
remains on the host (testbed/host/leftovers.py `remaining`) and that this process's open files, threads and
memory and the host's available memory stay flat: a leak too small for one case adds up here."""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from testbed.config.scenario import load_scenario
from testbed.host.leftovers import remaining
from testbed.report.progress import Ui
from testbed.engine.runner import run_case
from testbed.store.runs import new_run
from testbed.host.tags import new_tag

Say = Callable[[str], None]
WINDOW = 10  # cases whose medians are compared, first against last


@dataclass(frozen=True)
class Sample:
    case: str
    verdict: str
    seconds: float
    leftovers: list[str]
    fds: int
    threads: int
    rss_kb: int
    mem_available_kb: int


def _status_kb(field: str, path: str = "/proc/self/status") -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def sample(case: str, verdict: str, seconds: float) -> Sample:
    return Sample(case, verdict, round(seconds, 1), remaining(), len(os.listdir("/proc/self/fd")),
                  threading.active_count(), _status_kb("VmRSS"), _status_kb("MemAvailable", "/proc/meminfo"))


def growth(samples: list[Sample], field: str) -> float:
    """Median of the last WINDOW samples minus the median of the first WINDOW (after the first case,
    which loads modules and caches once)."""
    body = samples[1:] if len(samples) > WINDOW else samples
    first, last = body[:WINDOW], body[-WINDOW:]
    return statistics.median(getattr(s, field) for s in last) - statistics.median(getattr(s, field) for s in first)


def summarize(samples: list[Sample]) -> dict[str, Any]:
    verdicts: dict[str, int] = {}
    for s in samples:
        verdicts[s.verdict] = verdicts.get(s.verdict, 0) + 1
    leftover_cases = [s.case for s in samples if s.leftovers]
    out = {
        "cases": len(samples),
        "verdicts": verdicts,
        "cases_with_leftovers": leftover_cases,
        "median_case_s": statistics.median(s.seconds for s in samples) if samples else None,
        "fds": {"first": samples[0].fds, "last": samples[-1].fds, "max": max(s.fds for s in samples),
                "growth": growth(samples, "fds")} if samples else {},
        "threads": {"first": samples[0].threads, "last": samples[-1].threads,
                    "max": max(s.threads for s in samples), "growth": growth(samples, "threads")} if samples else {},
        "rss_mb": {"first": samples[0].rss_kb >> 10, "last": samples[-1].rss_kb >> 10,
                   "growth": round(growth(samples, "rss_kb") / 1024, 1)} if samples else {},
        "mem_available_mb": {"first": samples[0].mem_available_kb >> 10, "last": samples[-1].mem_available_kb >> 10,
                             "growth": round(growth(samples, "mem_available_kb") / 1024, 1)} if samples else {},
    }
    # Flat: no fd or thread growth beyond noise, RSS within 32 MB, the host within 256 MB (page cache moves).
    out["flat"] = bool(samples) and (out["fds"]["growth"] <= 2 and out["threads"]["growth"] <= 2
                                     and out["rss_mb"]["growth"] <= 32 and out["mem_available_mb"]["growth"] >= -256)
    out["ok"] = out["flat"] and not leftover_cases
    return out


def soak(source: Path, cases: int, accel: str, say: Say, sets: list[str] | None = None) -> dict[str, Any]:
    loaded = load_scenario(source, sets or [])
    run = new_run(new_tag(), {"argv": sys.argv, "soak": str(source), "cases": cases, "set": sets or []})
    ui = Ui(quiet=True)
    samples: list[Sample] = []
    for i in range(cases):
        t = time.monotonic()
        res = run_case(loaded, run, f"{loaded.scenario.name}-{i + 1:03d}", accel, ui)
        s = sample(res.case_id, res.verdict, time.monotonic() - t)
        samples.append(s)
        say(f"soak {i + 1}/{cases}: {s.verdict} in {s.seconds:.0f} s; fds {s.fds}, threads {s.threads}, "
            f"rss {s.rss_kb >> 10} MB, host available {s.mem_available_kb >> 10} MB"
            + (f"; LEFT: {', '.join(s.leftovers)}" if s.leftovers else ""))
        (run.path / "soak.json").write_text(json.dumps({"summary": summarize(samples),
                                                        "samples": [asdict(x) for x in samples]}, indent=2) + "\n")
    return {"run": str(run.path), **summarize(samples)}
