"""Bisection of a verdict change over an ordered list of kernels.

A step's answer comes from its repeats by syzkaller's rules for a flaky answer: bad when the failures
(judged runs whose verdict is not the scenario's expect) reach max(2, judged/6) and at least half the runs
were judged; good when no judged run failed and at least half were judged; anything else is skip. One run
(N = 1) is bad on its one failure: a flaky scenario needs repeats for a bisection to mean anything.
The search then looks for the first kernel whose answer differs from the first kernel's, halving the
list as `git bisect` does (a skipped step is stepped around)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from testbed.check.verdict import is_ok
from testbed.report.stats import wilson

Answer = Literal["good", "bad", "skip"]
EXIT = {"good": 0, "bad": 1, "skip": 125}  # as `git bisect run` reads a step's exit status


@dataclass(frozen=True)
class Step:
    """One kernel's answer: its runs' verdicts, counted."""

    kernel: str
    answer: Answer
    why: str
    verdicts: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    judged: int = 0
    unknown: int = 0
    release: str = ""
    cases: tuple[str, ...] = ()

    @property
    def runs(self) -> int:
        return self.judged + self.unknown

    def rate_text(self) -> str:
        if not self.judged:
            return "no judged run"
        lo, hi = wilson(self.failures, self.judged)
        return f"fail {self.failures}/{self.judged} {self.failures / self.judged:.0%} [{lo:.0%}-{hi:.0%}]"

    def to_dict(self) -> dict[str, Any]:
        return {"kernel": self.kernel, "release": self.release, "answer": self.answer, "why": self.why,
                "verdicts": self.verdicts, "failures": self.failures, "judged": self.judged,
                "unknown": self.unknown, "cases": list(self.cases)}


def decide(verdicts: list[str], expected: str | None) -> tuple[Answer, str, int, int, int]:
    """(answer, why, failures, judged, unknown) of one step's runs."""
    n = len(verdicts)
    unknown = sum(1 for v in verdicts if v == "unknown")
    judged = n - unknown
    failures = sum(1 for v in verdicts if v != "unknown" and not is_ok(v, expected))
    want = expected or "recovered"
    if n == 0:
        return "skip", "no run", 0, 0, 0
    if judged * 2 < n:
        return "skip", f"only {judged} of {n} runs judged (at least half must be)", failures, judged, unknown
    if failures == 0:
        return "good", f"all {judged} judged runs {want}", failures, judged, unknown
    if n == 1:
        return "bad", f"the one run was {verdicts[0]}, not {want}", failures, judged, unknown
    need = max(2.0, judged / 6)
    if failures >= need:
        return "bad", f"{failures} of {judged} judged runs not {want} (bad from {need:g})", failures, judged, unknown
    return "skip", (f"{failures} of {judged} judged runs not {want}: below the {need:g} a bad answer needs, "
                    "and not none (flaky)"), failures, judged, unknown


def step_from(kernel: str, verdicts: list[str], expected: str | None, release: str = "",
              cases: tuple[str, ...] = ()) -> Step:
    answer, why, failures, judged, unknown = decide(verdicts, expected)
    return Step(kernel, answer, why, dict(Counter(verdicts)), failures, judged, unknown, release, cases)


@dataclass(frozen=True)
class Outcome:
    """What the search found. `first_changed` is the first kernel whose answer differs from the first
    kernel's (None: none found); `last_same` the kernel before it that still answers as the first;
    `candidates` lists the kernels skipped steps left undecided between them."""

    reference: Step
    steps: tuple[Step, ...]
    first_changed: str | None
    last_same: str | None
    candidates: tuple[str, ...]
    message: str
    concluded: bool

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference.kernel, "reference_answer": self.reference.answer,
                "first_changed": self.first_changed, "last_same": self.last_same,
                "candidates": list(self.candidates), "concluded": self.concluded, "message": self.message,
                "steps": [s.to_dict() for s in self.steps]}


def search(kernels: list[str], evaluate: Callable[[str], Step]) -> Outcome:
    """The first kernel (in list order) whose answer differs from kernels[0]'s, assuming one change along
    the list (as git bisect does). Evaluates kernels[0], then the last, then halves."""
    done: dict[int, Step] = {}
    order: list[Step] = []

    def at(i: int) -> Step:
        if i not in done:
            done[i] = evaluate(kernels[i])
            order.append(done[i])
        return done[i]

    ref = at(0)
    if ref.answer == "skip":
        return Outcome(ref, tuple(order), None, None, (), f"the first kernel {kernels[0]} could not be judged "
                       f"({ref.why}): nothing to compare with", False)
    if len(kernels) == 1:
        return Outcome(ref, tuple(order), None, kernels[0], (), "one kernel: nothing to bisect", True)
    lo, hi = 0, None
    for j in range(len(kernels) - 1, 0, -1):  # the last judged kernel
        s = at(j)
        if s.answer == "skip":
            continue
        if s.answer == ref.answer:
            lo = j
            skipped = [kernels[i] for i in range(j + 1, len(kernels))]
            tail = f"; {', '.join(skipped)} could not be judged" if skipped else ""
            # Kernels after it that could not be judged may hold the change: then nothing is concluded.
            return Outcome(ref, tuple(order), None, kernels[j], tuple(skipped),
                           f"no change: {kernels[j]} answers {s.answer} as {kernels[0]} does (a change and a "
                           f"change back between them would not be seen){tail}", not skipped)
        hi = j
        break
    if hi is None:
        return Outcome(ref, tuple(order), None, None, tuple(kernels[1:]),
                       f"no kernel after {kernels[0]} could be judged", False)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        # Step around skipped kernels: the nearest untried one to the middle, either side.
        tries = sorted(range(lo + 1, hi), key=lambda i: (abs(i - mid), i))
        judged = None
        for i in tries:
            if at(i).answer != "skip":
                judged = i
                break
        if judged is None:
            between = tuple(kernels[i] for i in range(lo + 1, hi + 1))
            return Outcome(ref, tuple(order), None, kernels[lo], between,
                           f"the answer changes after {kernels[lo]}, at one of {', '.join(between)} "
                           "(the kernels between could not be judged)", False)
        if at(judged).answer == ref.answer:
            lo = judged
        else:
            hi = judged
    return Outcome(ref, tuple(order), kernels[hi], kernels[lo], (),
                   f"first change at {kernels[hi]} ({done[hi].answer}); {kernels[lo]} before it answers "
                   f"{ref.answer} as {kernels[0]}", True)
