"""The checker's precedence, row by row: each row's case also satisfies every lower row, so the row
must win over all of them (a testbed failure before any product verdict; seen data before faults)."""

from pathlib import Path

import pytest

from testbed.check import rules
from testbed.check.completeness import DeclaredFault
from testbed.check.evidence import Evidence, read_evidence
from testbed.check.verdict import Observations, judge
from testbed.config.scenario import Deadlines
from testbed.store.history import Event
from testbed.workload import CommandProgress, Progress

REPO = Path(__file__).parents[3]
ON_PATH = read_evidence((REPO / "tests/fixtures/sysrq/ipsec-static-swapin-6.1.txt").read_text())


def rows(n: int, until: int, **extra) -> list[dict]:
    return [{"t": float(t), "progress": min(t, until), "client_cpu_s": t * 0.05, "nas_status": "running",
             "client_status": "running", "allocstall": t, "pgscan_direct": t, "pswpin": t, "pswpout": t, **extra}
            for t in range(n)]


def finished() -> Progress:
    p = Progress(done=200, total=200)
    p.finished = {"done": True, "pages": 100, "passes": 2}
    return p


def kill(name: str) -> Event:
    return Event(20.0, "console", "oom-kill", {"vm": "client", "groups": ["7", name], "line": f"Killed process 7 ({name})"})


KILLED = Event(30.0, "vm", "exited", {"vm": "nas", "status": -9, "signal": "SIGKILL"})
FAILED = Event(10.0, "fault", "link:inject-failed", {"error": "no netem", "index": 0})
SWAP_ERR = Event(20.0, "console", "swap-write-error", {"vm": "client", "line": "Write-error on swap-device (0:44:1)"})
DOWN = Event(10.0, "fault", "nas-outage:inject", {"index": 1, "path_down": True})
UNSEEN = Event(40.0, "fault", "competing-traffic:heal", {"index": 2, "visible": False, "delta_udp_no_ports": 9000,
                                                         "effect_counters": ["delta_udp_no_ports"]})
NO_VICTIM = Event(50.0, "console", "oom-no-victim", {"vm": "client", "line": "Out of memory and no killable processes..."})
OOPS = Event(50.0, "console", "oops", {"vm": "client", "line": "[  50.1] BUG: kernel NULL pointer dereference"})
mismatch = Progress(done=10, total=200)
mismatch.mismatch = {"page": 3, "pass": 1, "word": 0}
stall = dict(ended_by="stall", stall_since=30.0, pressure_end=59.0)
verify_failed = CommandProgress(sources=("cpu",))
verify_failed.mismatch = {"verify": ["fio", "--verify_only"], "status": 1, "output": ["crc32c: verify failed"]}

# (row, observations satisfying that row and lower ones, verdict, words in the deciding reason)
TABLE = [
    ("setup failed", dict(setup_error="QEMU would not start", progress=mismatch, events=[FAILED, SWAP_ERR]), "unknown", "before a verdict"),
    ("a VM lost under the case", dict(progress=mismatch, events=[KILLED, FAILED, SWAP_ERR], ended_by="client-died"), "unknown", "killed by SIGKILL"),
    ("history incomplete", dict(declared_faults=(DeclaredFault(3, "dhcp", 5.0, None),), progress=mismatch,
                                events=[FAILED, SWAP_ERR, kill("tb-work")], ended_by="workload-failed"), "unknown", "no record of its injection"),
    ("verification failed", dict(progress=verify_failed, events=[FAILED, SWAP_ERR, kill("tb-work")], ended_by="finished", workload_status=0, client_answers=True), "corrupted", "crc32c: verify failed"),
    ("data read back differs", dict(progress=mismatch, events=[FAILED, SWAP_ERR, kill("tb-work")], ended_by="workload-failed"), "corrupted", "data read back differs"),
    ("I/O error", dict(events=[FAILED, SWAP_ERR, kill("tb-work")], ended_by="workload-failed", workload_status=1), "io-error", "swap or file I/O failed"),
    ("fault operation failed", dict(events=[FAILED, kill("tb-work"), DOWN], progress=finished(), ended_by="finished", workload_status=0, client_answers=True), "unknown", "inject-failed"),
    ("fault without effect", dict(events=[UNSEEN, kill("tb-work"), DOWN], progress=finished(), ended_by="finished", workload_status=0, client_answers=True), "unknown", "intended mechanism was not seen"),
    ("path process OOM-killed", dict(events=[kill("tb-work"), DOWN], progress=finished(), ended_by="finished", workload_status=0, client_answers=True), "oom", "on the workload/storage path"),
    ("finished", dict(events=[kill("tb-work-child")], expected_victims=("tb-work-child",), progress=finished(), ended_by="finished", workload_status=0, client_answers=True), "recovered", "as the scenario expects"),
    ("finished", dict(events=[kill("sleep")], progress=finished(), ended_by="finished", workload_status=0, client_answers=True), "recovered", "client answered"),
    ("stall: client paused", dict(events=[DOWN], rows=rows(60, 30, client_status="paused", nas_service=0, client_wait_s=0.0), **stall), "unknown", "client VM was paused"),
    ("stall: QEMU starved", dict(events=[DOWN], rows=[{**r, "client_wait_s": r["t"] * 0.8, "client_run_s": r["t"] * 0.1,
                                                "nas_probed": 1, "nas_service": 0} for r in rows(60, 30)], **stall), "unknown", "waited for a host CPU"),
    ("stall: NAS side failed", dict(events=[DOWN], rows=rows(60, 30, nas_probed=1, nas_service=0, client_wait_s=0.0, client_run_s=0.0), **stall), "stalled", "service probe"),
    ("stall: path-down fault in place", dict(events=[DOWN], rows=rows(60, 30, nas_probed=1, nas_service=1, nas_agent_ms=2.0), **stall), "stalled", "never healed"),
    ("stall: NAS VM not running", dict(rows=rows(60, 30, nas_status="paused"), **stall), "stalled", "NAS was still paused"),
    ("stall: reclaim spinning", dict(rows=[{**r, "client_cpu_s": r["t"] * 0.9} for r in rows(60, 30)], evidence=Evidence(), **stall), "livelocked", "reclaim spinning"),
    ("stall: blocked on the path", dict(rows=rows(60, 30), evidence=ON_PATH, **stall), "deadlocked", "mechanism"),
    ("stall: blocked on the path", dict(rows=rows(60, 30), evidence=Evidence(), **stall), "unknown", "stalled without evidence"),
    ("client died: out of memory", dict(events=[NO_VICTIM, OOPS, kill("sleep")], ended_by="client-died", workload_status=1), "oom", "nothing left to kill"),
    ("client died", dict(events=[OOPS, kill("sleep")], ended_by="client-died", workload_status=1), "unknown", "the client VM died"),
    ("total deadline", dict(ended_by="total-deadline", events=[kill("sleep")], workload_status=1), "unknown", "raise it"),
    ("died after OOM kills", dict(events=[kill("sleep")], ended_by="workload-failed", workload_status=1), "unknown", "off the storage path: which of them broke it"),
    ("last resort", dict(ended_by="workload-failed", workload_status=1), "unknown", "without a recognised cause"),
]


@pytest.mark.parametrize("row,kw,verdict,words", TABLE, ids=[t[0] for t in TABLE])
def test_precedence_row(row: str, kw: dict, verdict: str, words: str) -> None:
    base = dict(deadlines=Deadlines(), progress=Progress(done=50, total=200), events=[], rows=rows(60, 60),
                pressure_start=0.0, pressure_end=59.0, path_processes=("tb-work",), evidence=ON_PATH)
    j = judge(Observations(**{**base, **kw}))
    assert j.verdict == verdict and any(words in r for r in j.reasons), (row, j.verdict, j.reasons)


def test_oom_reasons_say_what_the_path_and_memory_were_at_the_kill() -> None:
    """An OOM kill stays `oom`; beside it, the NAS probes and a path-down fault at the kill, and the
    memory under writeback just before it (what reclaim could not free)."""
    probed = rows(60, 60, nas_probed=1, nas_service=0, Writeback=28800)
    j = judge(Observations(deadlines=Deadlines(), progress=Progress(done=50, total=200), events=[DOWN, kill("tb-work")],
                           rows=probed, ended_by="workload-failed", workload_status=137, path_processes=("tb-work",)))
    assert j.verdict == "oom", j.reasons
    assert any("at the kill (t=20 s) the NAS's storage service was down" in r for r in j.reasons), j.reasons
    assert any("fault (nas-outage) had the NAS or link down" in r for r in j.reasons), j.reasons
    assert any("28800 kB under writeback at t=19 s" in r for r in j.reasons), j.reasons
    # A healthy NAS, nothing in writeback: only the kill itself.
    healthy = rows(60, 60, nas_probed=1, nas_service=1, Writeback=0)
    j = judge(Observations(deadlines=Deadlines(), progress=Progress(done=50, total=200), events=[kill("tb-work")],
                           rows=healthy, ended_by="workload-failed", workload_status=137, path_processes=("tb-work",)))
    assert j.verdict == "oom" and len(j.reasons) == 1, j.reasons


def test_the_table_covers_every_rule_in_its_order() -> None:
    """Each rule of testbed/check/rules.py has a row above, and the rows come in the rules' order."""
    names = [r.name for r in rules.RULES]
    rows_named = list(dict.fromkeys(t[0] for t in TABLE))
    assert rows_named == names, set(names) ^ set(rows_named)


def test_the_docs_precedence_table_is_the_rule_table() -> None:
    page = (REPO / "docs/verdicts.md").read_text()
    assert rules.with_table(page) == page, "docs/verdicts.md is stale: python -m testbed.check.rules docs/verdicts.md"
