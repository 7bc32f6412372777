"""The soak's judgement of its samples: leftovers after any case, or fds/threads/memory growing from the
first cases to the last, make it fail; the first case (module loads, caches) is not the baseline."""

from testbed.engine.soak import Sample, summarize


def samples(n: int, fds=lambda i: 12, threads=lambda i: 3, rss=lambda i: 80_000, left=lambda i: []) -> list[Sample]:
    return [Sample(f"soak-{i:03d}", "recovered", 30.0, left(i), fds(i), threads(i), rss(i), 20_000_000) for i in range(n)]


def test_flat_and_clean() -> None:
    s = summarize(samples(100, fds=lambda i: 30 if i == 0 else 12))  # the first case may differ
    assert s["ok"] and s["flat"] and s["fds"]["growth"] == 0 and s["cases_with_leftovers"] == []


def test_a_leaked_fd_per_case_is_growth() -> None:
    s = summarize(samples(100, fds=lambda i: 12 + i))
    assert not s["flat"] and s["fds"]["growth"] == 89  # medians of cases 2-11 and 91-100


def test_leftovers_fail_the_soak() -> None:
    s = summarize(samples(20, left=lambda i: ["tb123456"] if i == 7 else []))
    assert s["flat"] and not s["ok"] and s["cases_with_leftovers"] == ["soak-007"]


def test_rss_growth_in_megabytes() -> None:
    s = summarize(samples(50, rss=lambda i: 80_000 + 2048 * i))
    assert s["rss_mb"]["growth"] == 78.0 and not s["flat"]
