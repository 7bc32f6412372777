"""Reading a case's fault events back as typed outcomes: the windows each fault was in place, when
it took the path down, its effect, findings, stuck steps and failed operations. The checker reads
these, never the events' keys. Events written before `effect_counters` existed are read by the
rule that was used then (counters are the `delta_*` keys and a few named ones)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from testbed.faults.base import Effect
from testbed.store.history import Event

LEGACY_COUNTERS = ("dropped_packets", "fragments_sent", "datagrams_sent", "sa_bytes_client", "pages_done")
# The scheduler's own operations; a kind's other operations fail as `<op>-failed` with `fault_failed`.
SCHEDULED = ("inject", "heal", "rollback")


@dataclass(frozen=True)
class Window:
    kind: str
    start: float
    end: float | None  # None: never healed (or healed only because the case ended)


@dataclass(frozen=True)
class Remark:
    """Something the checker states about a fault: no visible effect, an effect that could not be
    measured, a finding about the client, a guest step that never returned."""

    t: float
    kind: str
    what: Literal["no-effect", "unmeasured", "finding", "stuck"]
    text: str
    index: object = None
    typed: bool = True  # from a fault that states its effect (`effect_counters`); older events did not


@dataclass(frozen=True)
class Failure:
    """A fault operation that did not happen as planned before the case ended (one done only
    because the case was ending, marked `teardown`, is not one)."""

    t: float
    kind: str
    op: str  # inject, heal, rollback, or a kind's own (link-flap's flap)
    error: str


@dataclass
class FaultOutcome:
    kind: str
    index: int | None
    injected_t: float | None = None
    healed_t: float | None = None
    healed_at_teardown: bool = False
    path_down: list[Window] = field(default_factory=list)
    effect: Effect | None = None
    findings: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


@dataclass
class FaultHistory:
    """All faults of a case, in the order their events happened."""

    outcomes: list[FaultOutcome] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)  # each injection to its heal
    path_down: list[Window] = field(default_factory=list)  # the NAS or the link away
    remarks: list[Remark] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def healed(self) -> list[Window]:
        return [w for w in self.windows if w.end is not None]

    def unseen(self) -> list[Remark]:
        """Faults whose intended mechanism was measured and not seen (a guest step the client could not
        finish counts as the fault having acted: its outcome is the client's)."""
        stuck = {(o.kind, o.index) for o in self.outcomes if o.stuck}
        return [r for r in self.remarks if r.what == "no-effect" and r.typed and (r.kind, r.index) not in stuck]


def effect_of(data: dict[str, Any]) -> Effect | None:
    if "visible" not in data and "effect_unknown" not in data:
        return None
    names = data.get("effect_counters")
    if names is None:
        names = [k for k in data if k.startswith("delta_") or k in LEGACY_COUNTERS]
    return Effect(data.get("visible"), {k: data.get(k) for k in names}, data.get("effect_unknown"))


def _counters_text(effect: Effect) -> str:
    return ", ".join(f"{k}={v}" for k, v in effect.counters.items()) or "no counter moved"


def read(events: Iterable[Event]) -> FaultHistory:
    """One pass over the history. A window opens at an injection; a path-down window also at a
    `path-down` event (a DHCP lease running out after the injection) and closes at `path-up` (the
    path came back before the fault was healed) or at the heal. A heal done only because the case
    ended closes nothing. Two faults of one kind are told apart by their index."""
    h = FaultHistory()
    by_key: dict[tuple[str, object], FaultOutcome] = {}
    open_all: dict[tuple[str, object], int] = {}
    open_down: dict[tuple[str, object], int] = {}
    down_keys: list[tuple[str, object]] = []  # whose each path-down window is
    for e in events:
        if e.kind != "fault" or ":" not in e.name:
            continue
        kind, op = e.name.split(":", 1)
        key = (kind, e.data.get("index"))
        o = by_key.get(key)
        if o is None:
            o = by_key[key] = FaultOutcome(kind, e.data.get("index"))
            h.outcomes.append(o)
        if op.endswith("-failed") and not e.data.get("teardown"):
            name = op[: -len("-failed")]
            if name in SCHEDULED or e.data.get("fault_failed"):
                f = Failure(e.t, kind, name, str(e.data.get("error")))
                o.failures.append(f)
                h.failures.append(f)
        _remarks(h, o, e, kind)
        if op == "inject":
            o.injected_t = e.t
            open_all[key] = len(h.windows)
            h.windows.append(Window(kind, e.t, None))
            if e.data.get("path_down"):
                open_down[key] = len(h.path_down)
                h.path_down.append(Window(kind, e.t, None))
                down_keys.append(key)
        elif op == "path-down" and key not in open_down:
            open_down[key] = len(h.path_down)
            h.path_down.append(Window(kind, e.t, None))
            down_keys.append(key)
        elif op == "path-up" and key in open_down:
            i = open_down.pop(key)
            h.path_down[i] = Window(kind, h.path_down[i].start, e.t)
        elif op == "heal":
            teardown = bool(e.data.get("teardown"))
            o.healed_t, o.healed_at_teardown = e.t, teardown
            for open_, windows in ((open_all, h.windows), (open_down, h.path_down)):
                if key in open_:
                    i = open_.pop(key)
                    if not teardown:
                        windows[i] = Window(kind, windows[i].start, e.t)
    for key, o in by_key.items():
        o.path_down = [w for w, k in zip(h.path_down, down_keys) if k == key]
    return h


def _remarks(h: FaultHistory, o: FaultOutcome, e: Event, kind: str) -> None:
    effect = effect_of(e.data)
    i = o.index
    if effect is not None:
        o.effect = effect
        if effect.visible is False:
            h.remarks.append(Remark(e.t, kind, "no-effect", _counters_text(effect), i, "effect_counters" in e.data))
        elif effect.unmeasured:
            h.remarks.append(Remark(e.t, kind, "unmeasured", effect.unmeasured, i))
    finding = e.data.get("finding")
    if finding:  # what the fault saw happen to the client
        o.findings.append(str(finding))
        h.remarks.append(Remark(e.t, kind, "finding", str(finding), i))
    stuck = e.data.get("stuck")
    if stuck:  # a guest-side step of the fault never returned
        o.stuck.append(str(stuck))
        h.remarks.append(Remark(e.t, kind, "stuck", str(stuck), i))
