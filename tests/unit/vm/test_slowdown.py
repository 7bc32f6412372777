import json
from pathlib import Path

from testbed.config.scenario import Deadlines
from testbed.engine.runner import scaled
from testbed.vm import slowdown


def test_measured_once_then_cached_per_host(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path))
    first = slowdown.measure()
    assert not first.cached and 1.0 <= first.factor <= slowdown.CEILING
    again = slowdown.measure()
    assert again.cached and again.factor == first.factor
    data = json.loads((tmp_path / "slowdown.json").read_text())
    (tmp_path / "slowdown.json").write_text(json.dumps({**data, "key": "another host"}))
    assert not slowdown.measure().cached  # a cache from another host is measured again


def test_a_slow_host_stretches_the_pressure_deadlines_only() -> None:
    d = scaled(Deadlines(progress_s=60, recover_s=120, total_s=900, boot_s=120), 1.5)
    assert (d.progress_s, d.recover_s, d.total_s, d.boot_s) == (90, 180, 1350, 120)
