import json
from pathlib import Path

from testbed.monitor.timeline import COLUMNS, telemetry_row

FIX = Path(__file__).parents[2] / "fixtures" / "telemetry"


def test_row_from_recorded_guest_telemetry() -> None:
    # Recorded from the client image at 128 MB right after the OOM killer took tb-work.
    tel = json.loads((FIX / "client-128mb-after-oom-kill.json").read_text())
    row = telemetry_row(tel)
    assert set(row) <= set(COLUMNS)
    assert row["oom_kill"] == 1
    assert row["PFMemallocDrop"] == 0
    assert row["SwapTotal"] == 0
    assert row["allocstall"] == sum(v for k, v in tel["vmstat"].items() if k.startswith("allocstall"))
    assert row["rx_bytes"] == sum(d["rx_bytes"] for n, d in tel["netdev"].items() if n != "lo")
    assert 0 < row["MemFree"] < tel["meminfo"]["MemTotal"]
