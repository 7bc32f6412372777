"""`testbed search`: the bisection on synthetic rate functions (probe order, statement), then the verb with a
fake case runner (the probes as one run, visible in the report; checks before any VM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed import cli
from testbed.engine import matrix as mx
from testbed.report.runs import load_cases, rate_pivot
from testbed.engine.search import Bisection, grid, search, unit_of

REPO = Path(__file__).parents[3]


def recording(rate_fn, n: int = 3):
    """A probe from a failure-count function: value -> failures among n runs; records the order."""
    order: list = []

    def probe(value):
        order.append(value)
        k = rate_fn(value)
        return [False] * k + [True] * (n - k)

    return probe, order


def test_monotone_low_values_fail() -> None:
    probe, order = recording(lambda mb: 3 if mb < 107 else 0)
    res = search(probe, 96, 256, 8, axis="client.mem_mb")
    assert order == [96, 256, 176, 136, 112, 104] == res.order
    assert res.outcome == "boundary" and res.boundary == (104, 112)
    assert res.statement == "fails at <= 104 MB (3/3), recovers at >= 112 MB (0/3); boundary in (104, 112] MB"
    assert res.notes == ["failure rate with its 95% Wilson interval at 104 MB: fail 3/3 [44%-100%]; "
                         "at 112 MB: fail 0/3 [0%-56%]"]
    assert [p.value for p in res.curve] == [96, 104, 112, 136, 176, 256]


def test_monotone_high_values_fail() -> None:
    probe, order = recording(lambda mbit: 3 if mbit >= 230 else 0)
    res = search(probe, 0, 1000, 50, axis="faults.0.rate_mbit")
    assert order == [0, 1000, 500, 250, 100, 150, 200]
    assert res.statement == ("recovers at <= 200 Mbit/s (0/3), fails at >= 250 Mbit/s (3/3); "
                             "boundary in (200, 250] Mbit/s")


@pytest.mark.parametrize("k, word, outcome", [(3, "fails", "fails-everywhere"), (0, "recovers", "recovers-everywhere")])
def test_both_ends_agree_no_boundary(k: int, word: str, outcome: str) -> None:
    probe, order = recording(lambda mb: k)
    res = search(probe, 96, 256, 8, axis="client.mem_mb")
    assert order == [96, 256]  # nothing to bisect
    assert res.outcome == outcome and res.boundary is None
    assert res.statement == (f"{word} at both ends: 96 MB ({k}/3) and 256 MB ({k}/3); "
                             "no boundary in [96, 256] MB: widen --range")


def test_flaky_middle_is_bisected_and_said_to_be_uncertain() -> None:
    # fails below 120, near 50 % from 120 to 160 (2 of 3 fail at 120-136, 1 of 3 above), recovers above
    def fails(mb: int) -> int:
        return 3 if mb < 120 else 2 if mb <= 136 else 1 if mb <= 160 else 0

    probe, order = recording(fails)
    res = search(probe, 96, 256, 8, axis="client.mem_mb")
    assert order == [96, 256, 176, 136, 152, 144]
    assert res.statement == "fails at <= 136 MB (2/3), recovers at >= 144 MB (1/3); boundary in (136, 144] MB"
    assert res.notes[1] == ("flaky: both outcomes at 136 MB (2/3), 152 MB (1/3), 144 MB (1/3); the rate's interval "
                            "holds 50% at 136 MB, 144 MB: where it crosses is uncertain, more --repeat narrows it")


def test_half_failing_counts_as_failing() -> None:
    res = search(lambda v: [False, True] if v <= 5 else [True, True], 0, 10, 1, axis="link.loss_pct")
    assert res.statement == "fails at <= 5 % (1/2), recovers at >= 6 % (0/2); boundary in (5, 6] %"


def test_step_rounding_to_the_grid() -> None:
    assert grid(100, 200, 30) == [100, 130, 160, 190, 200]  # HI is probed though not on the step
    assert grid(96, 104) == list(range(96, 105))  # integer range: step 1
    assert grid(0, 1, 0.1) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]  # no float noise
    assert grid(0.5, 2) == [0.5 + i * 1.5 / 32 for i in range(32)] + [2.0]
    probe, order = recording(lambda v: 3 if v >= 185 else 0)
    res = search(probe, 100, 200, 30, axis="faults.0.rate_mbit")
    assert order == [100, 200, 160, 190]  # middles rounded down to the grid: index (0+4)//2=2, then (2+4)//2=3
    assert res.boundary == (160, 190)
    probe, order = recording(lambda v: 3 if v > 0.33 else 0)
    res = search(probe, 0, 1, 0.1, axis="link.loss_pct")
    assert order == [0.0, 1.0, 0.5, 0.2, 0.3, 0.4]
    assert res.statement == "recovers at <= 0.3 % (0/3), fails at >= 0.4 % (3/3); boundary in (0.3, 0.4] %"
    with pytest.raises(ValueError, match="LO must be below HI"):
        grid(5, 5)
    with pytest.raises(ValueError, match="not on the search grid"):
        Bisection(100, 200, 30).record(150, [True])


def test_a_probe_without_judged_runs_stops_the_search() -> None:
    res = search(lambda v: [] if v == 256 else [False] * 3, 96, 256, 8, axis="client.mem_mb")
    assert res.order == [96, 256] and res.outcome == "no-judged-run"
    assert res.statement.startswith("no judged run at 256 MB (every case unknown")


def test_units() -> None:
    assert [unit_of(a) for a in ("client.mem_mb", "client.sysctl.vm.min_free_kbytes", "faults.0.rate_pps",
                                 "topology.links.*.mtu", "storage.nfs.wsize")] == ["MB", "kB", "pps", "bytes", ""]


# --- the verb, with a fake case runner -------------------------------------------------------------------

@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "results"
    root.mkdir()
    monkeypatch.setenv("TESTBED_RESULTS", str(root))
    monkeypatch.setattr(cli, "install_signal_handlers", lambda: None)
    return root


def fake_runner(calls: list[str], fails):
    from testbed.engine.runner import CaseResult

    def run_case(loaded, run, case_id, accel, ui, axes=None):
        calls.append(case_id)
        (value,) = axes.values()
        verdict = "deadlocked" if fails(value, loaded) else "recovered"
        c = run.case(case_id)
        c.write_yaml("scenario.yaml", loaded.raw)
        data = {"case": case_id, "scenario": loaded.scenario.name, "axes": axes, "verdict": verdict,
                "expected": None, "as_expected": verdict == "recovered", "reasons": [], "figures": {}}
        return CaseResult(case_id, verdict, None, verdict == "recovered", str(c.complete(data)), data)

    return run_case


def test_search_verb_runs_probes_as_one_run(results: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[str] = []
    monkeypatch.setattr(mx, "run_case", fake_runner(calls, lambda mb, loaded: loaded.scenario.client.mem_mb < 107))
    rc = cli.main(["search", str(REPO / "scenarios/aoe-swap.yaml"), "--axis", "client.mem_mb", "--range", "96:256",
                   "--step", "8", "--repeat", "2", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "fails at <= 104 MB (2/2), recovers at >= 112 MB (0/2); boundary in (104, 112] MB" in out
    assert calls == ["mem96-r1", "mem96-r2", "mem256-r1", "mem256-r2", "mem176-r1", "mem176-r2",
                     "mem136-r1", "mem136-r2", "mem112-r1", "mem112-r2", "mem104-r1", "mem104-r2"]
    (run,) = [p for p in results.iterdir() if p.is_dir() and not p.is_symlink()]
    saved = json.loads((run / "search.json").read_text())
    assert [p["value"] for p in saved["probes"]] == [96, 256, 176, 136, 112, 104]
    assert saved["boundary"] == [104, 112] and saved["cases"]["104"] == ["mem104-r1", "mem104-r2"]
    request = json.loads((run / "run.json").read_text())["request"]["search"]
    assert request["axis"] == "client.mem_mb" and request["repeat"] == 2
    # the curve in the report: value -> rate
    rp = rate_pivot(load_cases(str(run)), "client.mem_mb", "storage.protocol")
    assert {r: (rp.cells[(r, "aoe")].failures, rp.cells[(r, "aoe")].runs) for r in rp.rvals} == {
        "96": (2, 2), "104": (2, 2), "112": (0, 2), "136": (0, 2), "176": (0, 2), "256": (0, 2)}


def test_search_verb_on_a_sysctl_json(results: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[str] = []

    def fails(value, loaded):
        assert loaded.scenario.client.sysctl == {"vm.min_free_kbytes": str(value)}
        return value < 3000

    monkeypatch.setattr(mx, "run_case", fake_runner(calls, fails))
    rc = cli.main(["search", str(REPO / "scenarios/nfs-swap.yaml"), "--axis", "client.sysctl.vm.min_free_kbytes",
                   "--range", "1024:8192", "--step", "1024", "--repeat", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["outcome"] == "boundary" and out["boundary"] == [2048, 3072]
    assert [p["value"] for p in out["probes"]] == [1024, 8192, 4096, 2048, 3072]
    assert out["statement"] == "fails at <= 2048 kB (1/1), recovers at >= 3072 kB (0/1); boundary in (2048, 3072] kB"
    assert calls[0] == "minfree1024"


@pytest.mark.parametrize("argv, message", [
    (["--axis", "client.mem_mbb", "--range", "96:256"], "client.mem_mbb: unknown field"),
    (["--axis", "client.mem_mb", "--range", "60:256"], "client.mem_mb: 60 MB is below 80 MB"),
    (["--axis", "client.mem_mb", "--range", "256:96"], "--range 256:96: LO must be below HI"),
    (["--axis", "client.mem_mb", "--range", "96-256"], "--range 96-256: must look like LO:HI"),
    (["--axis", "client.mem_mb", "--range", "96:256", "--step", "0"], "--step 0: must be above 0"),
    (["--axis", "faults.0.rate_mbit", "--range", "1:9"], "faults: must be a list, not dict"),
])
def test_search_verb_checks_before_any_vm(argv: list[str], message: str, results: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[str] = []
    monkeypatch.setattr(mx, "run_case", fake_runner(calls, lambda v, loaded: False))
    rc = cli.main(["search", str(REPO / "scenarios/aoe-swap.yaml"), "--repeat", "3", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and calls == [] and not any(results.iterdir())
    assert len(err) == 1 and message in err[0], err


def test_help_texts_format() -> None:
    p = cli.parser()
    assert "search" in p.format_help()  # the verb's one-line help is %-formatted by argparse
    sub = next(a for a in p._actions if a.choices and "search" in a.choices).choices
    assert "crosses 50%" in sub["search"].format_help()
    assert "at a 50% rate a 0.3-wide interval needs ~40 runs" in " ".join(sub["matrix"].format_help().split())
