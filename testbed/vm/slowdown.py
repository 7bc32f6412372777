"""How much slower this host runs our guests than the machine the deadlines were written on:
measured once (a fixed piece of single-core work, timed), cached like the accelerator probe, and
recorded in every verdict. Deadlines are scaled up by it, never down (a faster host keeps them)."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass

from testbed.host.paths import cache_dir

# The work below took this long on the machine the shipped deadlines hold for (Debian 12, 2 cores,
# guests under TCG), best of five.
REFERENCE_S = 0.105
CEILING = 4.0  # beyond this a host is too slow for the scenarios as written: say so, do not stretch further


@dataclass(frozen=True)
class Slowdown:
    factor: float  # >= 1
    measured_s: float
    reference_s: float
    cached: bool


def _work() -> float:
    """Single-core integer work in the interpreter (no SIMD or crypto extensions, which would make
    hosts look alike that run TCG very differently), timed, best of five."""
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        x = 0
        for i in range(2_000_000):
            x = (x * 31 + i) & 0xFFFFFFFF
        best = min(best, time.perf_counter() - t)
    return best


def _key() -> str:
    return f"{platform.node()}|{platform.machine()}|{os.cpu_count()}"


def measure(refresh: bool = False) -> Slowdown:
    path = cache_dir() / "slowdown.json"
    if not refresh:
        try:
            data = json.loads(path.read_text())
            if data.get("key") == _key():
                return Slowdown(data["factor"], data["measured_s"], data["reference_s"], True)
        except (OSError, ValueError, KeyError):
            pass
    took = _work()
    factor = round(min(CEILING, max(1.0, took / REFERENCE_S)), 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".slowdown.")  # cases starting together do not share it
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"key": _key(), "factor": factor, "measured_s": round(took, 4), "reference_s": REFERENCE_S}))
    os.replace(tmp, path)
    return Slowdown(factor, round(took, 4), REFERENCE_S, False)
