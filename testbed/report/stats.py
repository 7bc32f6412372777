"""Statistics of repeated cases: failure rates with intervals, per-cell summaries, and the tests that
decide whether two runs differ. Pure functions over numbers and verdict dicts (no files).

The tests themselves come from scipy: the Wilson interval (`binomtest(...).proportion_ci`), Fisher's
exact test, Mann–Whitney U and Benjamini–Hochberg (`false_discovery_control`). scipy has no Holm
step-down correction, so `holm` is written out here (sort, multiply by the number of hypotheses
still in play, keep the adjusted values monotone, cap at 1).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def _scipy() -> Any:
    """scipy.stats, imported when a statistic is computed: it takes ~0.7 s, which every `testbed`
    command (even --help) would pay at start."""
    from scipy import stats  # heavy: imported on first use (see docstring)

    return stats


CONFIDENCE = 0.95


def wilson(k: int, n: int, conf: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n; (0, 1) when there is nothing to go on (n = 0)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"wilson: {k} successes out of {n}")
    ci = _scipy().binomtest(k, n).proportion_ci(confidence_level=conf, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def newcombe(k_a: int, n_a: int, k_b: int, n_b: int, conf: float = CONFIDENCE) -> tuple[float, float]:
    """Interval of the difference of two proportions k_a/n_a - k_b/n_b (Newcombe's hybrid score
    method, from the two Wilson intervals); (-1, 1) when either side has no runs."""
    if n_a <= 0 or n_b <= 0:
        return -1.0, 1.0
    pa, pb = k_a / n_a, k_b / n_b
    (la, ua), (lb, ub) = wilson(k_a, n_a, conf), wilson(k_b, n_b, conf)
    d = pa - pb
    return (max(-1.0, d - ((pa - la) ** 2 + (ub - pb) ** 2) ** 0.5),
            min(1.0, d + ((ua - pa) ** 2 + (pb - lb) ** 2) ** 0.5))


def fisher_one_sided(fail_a: int, n_a: int, fail_b: int, n_b: int) -> float:
    """p of Fisher's exact test that B's failure rate is higher than A's (one-sided).

    Table [[fail_a, ok_a], [fail_b, ok_b]]; the alternative is an odds ratio below 1, i.e. B worse."""
    if n_a <= 0 or n_b <= 0:
        return 1.0
    table = [[fail_a, n_a - fail_a], [fail_b, n_b - fail_b]]
    return float(_scipy().fisher_exact(table, alternative="less").pvalue)


def smallest_fisher_p(n_a: int, n_b: int) -> float:
    """The smallest one-sided p Fisher's test can give with these run counts (A 0/n_a, B n_b/n_b)."""
    return fisher_one_sided(0, n_a, n_b, n_b) if n_a > 0 and n_b > 0 else 1.0


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input's order (hand-written: scipy has no Holm)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def bh(pvalues: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (false discovery rate), via scipy."""
    if not pvalues:
        return []
    return [float(p) for p in _scipy().false_discovery_control(list(pvalues), method="bh")]


CORRECTIONS = {"holm": holm, "bh": bh}
CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini–Hochberg"}


def mann_whitney(a: Sequence[float], b: Sequence[float], alternative: str = "two-sided") -> float | None:
    """p of the Mann–Whitney U test, or None when a side has fewer than 3 values (no claim then)."""
    if len(a) < 3 or len(b) < 3:
        return None
    return float(_scipy().mannwhitneyu(list(a), list(b), alternative=alternative).pvalue)


def median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def p90(values: Sequence[float]) -> float | None:
    """90th percentile, linear between order statistics (numpy's default)."""
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=10, method="inclusive")[8])


def expected_of(verdict: dict[str, Any]) -> str:
    return verdict.get("expected") or "recovered"


def judged(verdict: dict[str, Any]) -> bool:
    """A judged run: a product verdict. `unknown` is the testbed failing, unless the case expects it."""
    return verdict.get("verdict") != "unknown" or expected_of(verdict) == "unknown"


def failed(verdict: dict[str, Any]) -> bool:
    """A failure: a judged verdict other than the case's `expect:` (default recovered)."""
    return judged(verdict) and verdict.get("verdict") != expected_of(verdict)


def figure(verdict: dict[str, Any], name: str) -> float | None:
    v = (verdict.get("figures") or {}).get(name)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def swap_mb_s(v: dict[str, Any]) -> float | None:
    """Swap traffic (out + in) per second of workload wall time."""
    wall = figure(v, "workload_wall_s")
    if not wall:
        return None
    return ((figure(v, "swap_in_mb") or 0.0) + (figure(v, "swap_out_mb") or 0.0)) / wall


@dataclass
class CellRate:
    """What the repeats of one cell say: judged runs, failures among them, the rate and its interval;
    and, over its recovered runs, the median workload wall time and swap MB/s (a stuck run's figures
    measure where it stuck, not how fast it went)."""

    runs: int  # judged runs (verdicts other than unknown)
    failures: int  # judged runs whose verdict is not the case's expect
    unknowns: int  # testbed failures, counted apart and never in `runs`
    rate: float | None
    interval: tuple[float, float]
    verdicts: dict[str, int]
    ttr_median: float | None
    ttr_p90: float | None
    mechanisms: dict[str, int] = field(default_factory=dict)
    expected: list[str] = field(default_factory=list)  # the cases' expect values (a control's is not recovered)
    controls: int = 0  # cases whose scenario sets expect:
    conf: float = CONFIDENCE
    wall_median: float | None = None  # workload_wall_s over recovered runs
    swap_mb_s_median: float | None = None

    @property
    def flaky(self) -> bool:
        """Both outcomes occurred among the judged runs."""
        return 0 < self.failures < self.runs

    @classmethod
    def from_verdicts(cls, verdicts: Iterable[dict[str, Any]], conf: float = CONFIDENCE) -> CellRate:
        vs = list(verdicts)
        judged_vs = [v for v in vs if judged(v)]
        runs, failures = len(judged_vs), sum(failed(v) for v in judged_vs)
        ttr = [t for v in judged_vs if (t := figure(v, "time_to_recover_s")) is not None]
        mech = Counter(m["name"] for v in vs if isinstance(m := v.get("mechanism"), dict) and m.get("name"))
        recovered = [v for v in judged_vs if v.get("verdict") == "recovered"]
        walls = [w for v in recovered if (w := figure(v, "workload_wall_s"))]
        speeds = [s for v in recovered if (s := swap_mb_s(v)) is not None]
        return cls(
            runs=runs,
            failures=failures,
            unknowns=len(vs) - runs,
            rate=failures / runs if runs else None,
            interval=wilson(failures, runs, conf),
            verdicts=dict(sorted(Counter(v.get("verdict", "?") for v in vs).items())),
            ttr_median=median(ttr),
            ttr_p90=p90(ttr),
            mechanisms=dict(sorted(mech.items(), key=lambda kv: (-kv[1], kv[0]))),
            expected=sorted({expected_of(v) for v in vs}),
            controls=sum(1 for v in vs if v.get("expected")),
            conf=conf,
            wall_median=median(walls),
            swap_mb_s_median=round(m, 2) if (m := median(speeds)) is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = list(self.interval)
        d["flaky"] = self.flaky
        return d


def agreement(groups: Iterable[Sequence[str]]) -> tuple[int, int]:
    """Repeat agreement: (cells whose verdicts all agree, cells with 2+ verdicts). Cells run once say nothing."""
    multi = [g for g in groups if len(g) >= 2]
    return sum(1 for g in multi if len(set(g)) == 1), len(multi)
