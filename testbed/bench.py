"""Benchmarks (never timed tests): boot-to-ready and warm image build."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from testbed.images.build import build
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
