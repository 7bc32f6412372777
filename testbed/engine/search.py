"""The breaking point: bisection of a numeric axis for the value at which the failure rate crosses 50 %.

Pure: `Bisection` asks for probe values (`next_value`) and is told what each probe gave (`record`:
the verdict-ok booleans of its judged runs, unknowns left out); `search` drives it with a
`probe(value) -> list[bool]` callable. `testbed search` (testbed/commands/search.py) runs each probe
as N cases of one run.

The grid is LO, LO+STEP, LO+2*STEP, ... and HI (also when HI is not on the step); every probe is on
it. Both ends are probed first: if they agree there is no boundary in the range, and the search says
so. Otherwise the bracket (one end failing, the other not) is halved on the grid until its two values
are neighbours. A probe fails when at least half of its judged runs failed (a failure: a verdict
other than the case's `expect:`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from testbed.report.stats import wilson

Number = int | float

# How a value shows, by the axis field's last part (client.mem_mb -> MB).
UNITS = (("_mb", "MB"), ("_kbytes", "kB"), ("_kb", "kB"), ("_mbit", "Mbit/s"), ("_pps", "pps"), ("_pct", "%"),
         ("_s", "s"), ("mtu", "bytes"))


def unit_of(axis: str) -> str:
    last = axis.rsplit(".", 1)[-1]
    return next((u for suffix, u in UNITS if last.endswith(suffix)), "")


def _clean(x: float) -> Number:
    """A grid value without float noise (0.30000000000000004 -> 0.3)."""
    return round(x, 9)


def grid(lo: Number, hi: Number, step: Number | None = None) -> list[Number]:
    """The values a search may probe: LO, LO+STEP, ... below HI, then HI. Integers when LO, HI and STEP are
    (STEP defaults to 1 for an integer range and to (HI-LO)/32 otherwise)."""
    if not hi > lo:
        raise ValueError(f"range {lo}:{hi}: LO must be below HI")
    integral = all(float(x).is_integer() for x in (lo, hi)) and (step is None or float(step).is_integer())
    if step is None:
        step = 1 if integral else (hi - lo) / 32
    if not step > 0:
        raise ValueError(f"step {step}: must be above 0")
    n = math.ceil((hi - lo) / step - 1e-9)  # points strictly below HI: 0 .. n-1
    if integral:
        lo, hi, step = int(lo), int(hi), int(step)
        return [lo + i * step for i in range(n)] + [hi]
    return [_clean(lo + i * step) for i in range(n)] + [_clean(float(hi))]


def fmt_value(v: Number, unit: str = "") -> str:
    text = f"{v:g}" if isinstance(v, float) else str(v)
    return f"{text} {unit}" if unit else text


@dataclass
class Probe:
    """What the runs at one value said: one boolean per judged run, True when as expected."""

    value: Number
    oks: list[bool]
    order: int = 0  # 0 for the first probe of the search

    @property
    def runs(self) -> int:
        return len(self.oks)

    @property
    def failures(self) -> int:
        return sum(1 for ok in self.oks if not ok)

    @property
    def rate(self) -> float | None:
        return self.failures / self.runs if self.runs else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.failures, self.runs)

    @property
    def fails(self) -> bool:
        """At least half of the judged runs failed."""
        return self.runs > 0 and 2 * self.failures >= self.runs

    @property
    def mixed(self) -> bool:
        return 0 < self.failures < self.runs

    def counts(self) -> str:
        return f"{self.failures}/{self.runs}"

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "order": self.order, "runs": self.runs, "failures": self.failures,
                "rate": self.rate, "interval": list(self.interval), "fails": self.fails}


@dataclass
class SearchResult:
    axis: str
    unit: str
    outcome: str  # boundary | fails-everywhere | recovers-everywhere | no-judged-run
    probes: list[Probe]  # in the order they were run
    statement: str
    boundary: tuple[Number, Number] | None = None  # the crossing is in (low, high]
    notes: list[str] = field(default_factory=list)

    @property
    def order(self) -> list[Number]:
        return [p.value for p in self.probes]

    @property
    def curve(self) -> list[Probe]:
        return sorted(self.probes, key=lambda p: p.value)

    def to_dict(self) -> dict[str, Any]:
        return {"axis": self.axis, "unit": self.unit, "outcome": self.outcome, "statement": self.statement,
                "boundary": list(self.boundary) if self.boundary else None, "notes": self.notes,
                "probes": [p.to_dict() for p in self.probes]}


class Bisection:
    """Bisection for the failure rate's 50 % crossing on grid(lo, hi, step); see the module doc."""

    def __init__(self, lo: Number, hi: Number, step: Number | None = None, *, axis: str = "", unit: str | None = None,
                 ok_word: str = "recovers", fail_word: str = "fails"):
        self.values = grid(lo, hi, step)
        self.axis = axis
        self.unit = unit_of(axis) if unit is None else unit
        self.ok_word, self.fail_word = ok_word, fail_word
        self.probes: dict[int, Probe] = {}  # by grid index
        self.a, self.b = 0, len(self.values) - 1  # the bracket, as grid indices

    def _index(self, value: Number) -> int:
        try:
            return self.values.index(value)
        except ValueError:
            raise ValueError(f"{value} is not on the search grid") from None

    def next_value(self) -> Number | None:
        """The value to probe next, or None when the search is over."""
        i = self._next_index()
        return None if i is None else self.values[i]

    def _next_index(self) -> int | None:
        first, last = 0, len(self.values) - 1
        for i in (first, last):
            if i not in self.probes:
                return i
        if any(p.runs == 0 for p in self.probes.values()):
            return None
        if self.probes[first].fails == self.probes[last].fails or self.b - self.a <= 1:
            return None
        return (self.a + self.b) // 2

    def record(self, value: Number, oks: Sequence[bool]) -> None:
        """What the probe at `value` gave: a boolean per judged run (True: as expected)."""
        i = self._index(value)
        self.probes[i] = Probe(value, list(oks), len(self.probes))
        first, last = 0, len(self.values) - 1
        if first in self.probes and last in self.probes and 0 < i < last and self.probes[i].runs:
            if self.probes[i].fails == self.probes[first].fails:
                self.a = i
            else:
                self.b = i

    @property
    def done(self) -> bool:
        return self._next_index() is None

    def _v(self, p: Probe) -> str:
        return fmt_value(p.value, self.unit)

    def _rate(self, p: Probe) -> str:
        lo, hi = p.interval
        return f"{self._v(p)}: fail {p.counts()} [{100 * lo:.0f}%-{100 * hi:.0f}%]"

    def result(self) -> SearchResult:
        probes = sorted(self.probes.values(), key=lambda p: p.order)
        unit = f" {self.unit}" if self.unit else ""
        blank = next((p for p in probes if p.runs == 0), None)
        if blank is not None:
            return SearchResult(self.axis, self.unit, "no-judged-run", probes,
                                f"no judged run at {self._v(blank)} (every case unknown: the testbed failed); "
                                "the search stopped without a boundary")
        if not self.done:
            raise ValueError("the search is not over: probe next_value() first")
        first, last = self.probes[0], self.probes[len(self.values) - 1]
        span = f"[{fmt_value(first.value)}, {fmt_value(last.value)}]{unit}"
        if first.fails == last.fails:
            word = self.fail_word if first.fails else self.ok_word
            outcome = "fails-everywhere" if first.fails else "recovers-everywhere"
            return SearchResult(self.axis, self.unit, outcome, probes,
                                f"{word} at both ends: {self._v(first)} ({first.counts()}) and {self._v(last)} "
                                f"({last.counts()}); no boundary in {span}: widen --range",
                                notes=[self._rate(first), self._rate(last)])
        low, high = self.probes[self.a], self.probes[self.b]
        lw = self.fail_word if low.fails else self.ok_word
        hw = self.fail_word if high.fails else self.ok_word
        statement = (f"{lw} at <= {self._v(low)} ({low.counts()}), {hw} at >= {self._v(high)} ({high.counts()}); "
                     f"boundary in ({fmt_value(low.value)}, {fmt_value(high.value)}]{unit}")
        notes = [f"failure rate with its 95% Wilson interval at {self._rate(low)}; at {self._rate(high)}"]
        flaky = [p for p in probes if p.mixed]
        if flaky:
            near = [p for p in (low, high) if p.interval[0] <= 0.5 <= p.interval[1]]
            notes.append("flaky: both outcomes at " + ", ".join(f"{self._v(p)} ({p.counts()})" for p in flaky)
                         + (f"; the rate's interval holds 50% at {', '.join(self._v(p) for p in near)}: where it "
                            "crosses is uncertain, more --repeat narrows it" if near else ""))
        return SearchResult(self.axis, self.unit, "boundary", probes, statement, (low.value, high.value), notes)


def search(probe: Callable[[Number], Sequence[bool]], lo: Number, hi: Number, step: Number | None = None,
           **kw: Any) -> SearchResult:
    """Bisect with `probe(value)` -> verdict-ok booleans of its judged runs; see Bisection."""
    b = Bisection(lo, hi, step, **kw)
    while (v := b.next_value()) is not None:
        b.record(v, probe(v))
    return b.result()
