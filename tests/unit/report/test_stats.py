"""The statistics of repeated cases against known values, and `testbed report`/`compare` on fixture runs
(tests/fixtures/runs/: copies of one real case folder with chosen verdicts and axis values)."""

import json
import math
from pathlib import Path

import pytest

from testbed.cli import parser
from testbed.report.stats import (CellRate, agreement, bh, fisher_one_sided, holm, mann_whitney, p90, smallest_fisher_p,
                                  wilson)

RUNS = Path(__file__).parents[2] / "fixtures" / "runs"


def wilson_formula(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval written out (Wilson 1927), independent of scipy."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@pytest.mark.parametrize("k,n,lo,hi", [(0, 5, 0.0, 0.4345), (3, 10, 0.1078, 0.6032), (10, 10, 0.7225, 1.0)])
def test_wilson_known_values(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=5e-5)
    assert got == pytest.approx(wilson_formula(k, n), abs=1e-9)
    assert 0.0 <= got[0] <= k / n <= got[1] <= 1.0


def test_wilson_edges() -> None:
    assert wilson(0, 0) == (0.0, 1.0)  # no judged run: nothing known
    assert wilson(3, 10, conf=0.99)[1] > wilson(3, 10)[1]
    with pytest.raises(ValueError):
        wilson(4, 3)


def hypergeom_lower_tail(a: int, row1: int, col1: int, total: int) -> float:
    """P(X <= a) for the top-left count of a 2x2 table with fixed margins, written out."""
    return sum(math.comb(col1, x) * math.comb(total - col1, row1 - x) for x in range(0, a + 1)) / math.comb(total, row1)


def test_fisher_known_tables() -> None:
    # Lady tasting tea: 3 of 4 right against 1 of 4 by chance, one-sided p = 17/70
    assert fisher_one_sided(1, 4, 3, 4) == pytest.approx(17 / 70)
    # Wikipedia's dieting table [[1, 9], [11, 3]]: one-sided p 0.001380 (two-sided 0.002759)
    p = fisher_one_sided(1, 10, 11, 14)
    assert p == pytest.approx(0.0013797, abs=1e-7)
    assert p == pytest.approx(hypergeom_lower_tail(1, 10, 12, 24))
    assert fisher_one_sided(3, 4, 1, 4) == pytest.approx(1 - 1 / 70)  # B better: no evidence B is worse
    assert fisher_one_sided(0, 6, 6, 6) == smallest_fisher_p(6, 6) == pytest.approx(1 / math.comb(12, 6))
    assert smallest_fisher_p(1, 1) == pytest.approx(0.5)  # one run a side can never be significant


def test_holm_known_vector() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == []
    # Benjamini-Hochberg (scipy): p * m / rank, monotone from the top
    assert bh([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])


def test_mann_whitney_needs_three_a_side() -> None:
    assert mann_whitney([1.0, 2.0], [4.0, 5.0, 6.0]) is None
    assert mann_whitney([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1)  # exact: 2 of 20 orderings
    assert mann_whitney([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], alternative="less") == pytest.approx(0.05)


def test_cell_rate() -> None:
    def v(verdict: str, expected: str | None = None, ttr: float | None = None, mech: str | None = None) -> dict:
        return {"verdict": verdict, "expected": expected, "figures": {"time_to_recover_s": ttr},
                "mechanism": {"name": mech} if mech else None}

    cr = CellRate.from_verdicts([v("recovered", ttr=2.0), v("recovered", ttr=4.0), v("deadlocked", mech="swap-in-wait"),
                                 v("unknown"), v("recovered", ttr=10.0)])
    assert (cr.runs, cr.failures, cr.unknowns) == (4, 1, 1)
    assert cr.rate == 0.25 and cr.interval == wilson(1, 4) and cr.flaky
    assert cr.verdicts == {"deadlocked": 1, "recovered": 3, "unknown": 1}
    assert (cr.ttr_median, cr.ttr_p90) == (4.0, pytest.approx(8.8))
    assert cr.mechanisms == {"swap-in-wait": 1}
    ctl = CellRate.from_verdicts([v("stalled", "stalled"), v("stalled", "stalled")])
    assert (ctl.runs, ctl.failures, ctl.flaky, ctl.controls) == (2, 0, False, 2)
    none = CellRate.from_verdicts([v("unknown")])
    assert (none.runs, none.rate, none.interval) == (0, None, (0.0, 1.0))
    assert p90([5.0]) == 5.0 and p90([]) is None


def test_agreement() -> None:
    assert agreement([["recovered"] * 3, ["recovered", "deadlocked"], ["oom"]]) == (1, 2)
    assert agreement([["recovered"]]) == (0, 0)


def cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    args = parser().parse_args(list(argv))
    rc = args.func(args)
    return rc, capsys.readouterr().out


def run(name: str) -> str:
    return str(RUNS / f"fixture-{name}")


def test_report_on_fixture(capsys: pytest.CaptureFixture) -> None:
    rc, out = cli(capsys, "report", run("base"))
    assert rc == 0
    assert "recovered:6" in out and "deadlocked:1 recovered:5 unknown:1" in out
    assert "fail 0/6 0% [0%-39%]" in out and "fail 1/6 17% [3%-56%] FLAKY +1 unknown" in out
    assert "repeat agreement: 1/2 cells (50%)" in out
    rc, out = cli(capsys, "report", run("base"), "--json")
    data = json.loads(out)
    assert rc == 0 and [c["runs"] for c in data["cells"]] == [6, 6] and data["repeat_agreement"]["share"] == 0.5


def test_compare_run_with_itself_exits_0(capsys: pytest.CaptureFixture) -> None:
    rc, out = cli(capsys, "compare", run("base"), run("base"))
    assert rc == 0 and "2 cell(s) unchanged" in out and "Holm" in out


def test_compare_significant_regression_exits_1_and_names_the_cell(capsys: pytest.CaptureFixture) -> None:
    rc, out = cli(capsys, "compare", run("base"), run("regressed"))
    assert rc == 1
    assert "REGRESSION: storage.protocol=nfs, topology.links.*.mtu=1500" in out
    assert "Holm-adjusted p 0.0022: significant" in out
    assert "worse: storage.protocol=nfs, topology.links.*.mtu=9000" in out  # 1/6 -> 2/6: within noise
    rc, out = cli(capsys, "compare", run("base"), run("regressed"), "--json")
    data = json.loads(out)
    assert rc == 1 and data["regressions"] == ["storage.protocol=nfs, topology.links.*.mtu=1500"]
    assert data["correction"] == "Holm" and data["exit"] == 1


def test_compare_within_noise_exits_0(capsys: pytest.CaptureFixture) -> None:
    rc, out = cli(capsys, "compare", run("base"), run("noise"))
    assert rc == 0 and out.count("within noise") == 2 and "exit 0" in out


def test_compare_one_run_a_side_says_nothing_can_be_significant(capsys: pytest.CaptureFixture) -> None:
    rc, out = cli(capsys, "compare", run("once-a"), run("once-b"))
    assert rc == 0 and "nothing can be significant" in out
    # a stricter alpha or fewer repeats: told that the run counts cannot reach it
    rc, out = cli(capsys, "compare", run("base"), run("regressed"), "--alpha", "0.001")
    assert rc == 0 and "no change of a failure rate can be significant" in out
