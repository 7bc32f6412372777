"""Every row of the rule table fires on a real or recorded case folder and not on another: committed
folders as they are where one was decided by that row, else a copy with the one record that row needs
added or changed (the edit is the row's evidence). Judged as `testbed judge` does; the deciding row is
`Judgement.rule`."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.check import casefile, rules
from testbed.check.verdict import Judgement, judge

RESULTS = Path(__file__).parents[3] / "results"
ANON = RESULTS / "20261128-032624-tb245036/nfs-swap"  # finished: anon over NFS swap
FAULT = RESULTS / "20261127-211457-tbb3cc1c/restart-service-r1"  # finished through a nas-outage restart
FIO = RESULTS / "20261203-071542-tbd5c6fb/nfs"  # finished: fio and its verification
ISCSI = RESULTS / "20261128-001915-tb507179/iscsi-restore-1"  # finished: anon on an iSCSI LUN
DEADLOCK = RESULTS / "20261128-001915-tb507179/nfs-cold-1"  # stall: blocked on the path
PAUSED = RESULTS / "20261207-180316-tb80411b/control-client-frozen-r1"  # stall: client paused
SERVICE = RESULTS / "20261207-180316-tb80411b/control-nas-service-down-r1"  # stall: NAS side failed
STALL = RESULTS / "20261207-180316-tb80411b/control-nas-frozen-r1"  # stall: NAS frozen
DIED = RESULTS / "20261128-033619-tbddca14/nfs-swap"  # client died
PATH_OOM = RESULTS / "20261203-091910-tbb8a50d/control-nas-frozen-60s"  # a path process OOM-killed

Edit = Callable[[Path], None]


def events(case: Path) -> list[dict]:
    return [json.loads(x) for x in (case / "events.jsonl").read_text().splitlines()]


def put_events(case: Path, rows: list[dict]) -> None:
    (case / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def t_of(case: Path, kind: str, name: str) -> float:
    return next(e["t"] for e in events(case) if (e["kind"], e["name"]) == (kind, name))


def add(*new: dict, after: tuple[str, str] = ("phase", "workload"), dt: float = 5.0) -> Edit:
    """Insert events `dt` s after the first `after` record."""
    def edit(case: Path) -> None:
        rows = events(case)
        t = t_of(case, *after) + dt
        at = next(i for i, e in enumerate(rows) if e["t"] > t)
        rows[at:at] = [{"t": t, **n} for n in new]
        put_events(case, rows)
    return edit


def change(kind: str, name: str, fields: dict[str, object] | None = None, **more: object) -> Edit:
    def edit(case: Path) -> None:
        rows = events(case)
        for e in rows:
            if (e["kind"], e["name"]) == (kind, name):
                e.update({**(fields or {}), **more})
        put_events(case, rows)
    return edit


def drop(kind: str, name: str) -> Edit:
    def edit(case: Path) -> None:
        put_events(case, [e for e in events(case) if (e["kind"], e["name"]) != (kind, name)])
    return edit


def both(*edits: Edit) -> Edit:
    def edit(case: Path) -> None:
        for e in edits:
            e(case)
    return edit


def rows_after_stall(**cols: Callable[[dict], object]) -> Edit:
    """Rewrite timeline columns in every row from the stall's last progress on."""
    def edit(case: Path) -> None:
        since = next(e["last_progress_t"] for e in events(case) if (e["kind"], e["name"]) == ("workload", "stall"))
        with open(case / "timeline.csv", newline="") as f:
            r = list(csv.DictReader(f))
        for row in r:
            if float(row["t"]) >= since:
                row.update({k: str(fn(row)) for k, fn in cols.items()})
        with open(case / "timeline.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(r[0]))
            w.writeheader()
            w.writerows(r)
    return edit


def append_line(name: str, line: str) -> Edit:
    def edit(case: Path) -> None:
        with open(case / name, "a") as f:
            f.write(line + "\n")
    return edit


def iscsi_dev() -> str:
    return str(next(e["device"] for e in events(ISCSI) if e["name"] == "storage-attached")).rsplit("/", 1)[-1]


def nothing(case: Path) -> None:
    pass


def no_dump(case: Path) -> None:
    """No blocked-task dump: nothing names a deadlock's mechanism."""
    for name in ("evidence.json", "sysrq-client.txt"):
        (case / name).unlink(missing_ok=True)


CONSOLE = {"kind": "console", "vm": "client", "groups": []}
# rule -> (folder, the edit that gives it its evidence, a folder it must not fire on)
FIRES: dict[str, tuple[Path, Edit, Path]] = {
    "setup failed": (ANON, add({"kind": "error", "name": "TestbedError", "message": "QEMU would not start"},
                               after=("phase", "images"), dt=0.1), DEADLOCK),
    "a VM lost under the case": (ANON, add({"kind": "vm", "name": "exited", "vm": "nas", "status": -9,
                                            "signal": "SIGKILL"}), DEADLOCK),
    "history incomplete": (ANON, drop("probe", "client-answers"), DEADLOCK),
    "verification failed": (FIO, change("workload", "verify", status=1, output=["verify: bad header"]), ANON),
    "data read back differs": (ANON, append_line("workload.jsonl", '{"mismatch": {"page": 9, "pass": 1, "word": 4}}'),
                               FIO),
    "I/O error": (ISCSI, add({**CONSOLE, "name": "io-error", "line": f"I/O error, dev {iscsi_dev()}, sector 8"}), ANON),
    "fault operation failed": (FAULT, change("fault", "nas-outage:heal", {"name": "nas-outage:heal-failed",
                                                                          "error": "rpc.nfsd: exited 1"}), ANON),
    "fault without effect": (FAULT, change("fault", "nas-outage:heal", visible=False, delta_nfs_retrans=0,
                                           effect_counters=["delta_nfs_retrans"]), ANON),
    "path process OOM-killed": (PATH_OOM, nothing, ANON),
    "finished": (ANON, nothing, DEADLOCK),
    "stall: client paused": (PAUSED, nothing, DEADLOCK),
    "stall: QEMU starved": (STALL, rows_after_stall(client_wait_s=lambda r: float(r["t"]) * 0.8,
                                                    client_run_s=lambda r: float(r["t"]) * 0.1), DEADLOCK),
    "stall: NAS side failed": (SERVICE, nothing, DEADLOCK),
    "stall: path-down fault in place": (DEADLOCK, add({"kind": "fault", "name": "link:inject", "index": 5,
                                                       "path_down": True}, dt=0.5), SERVICE),
    "stall: NAS VM not running": (DEADLOCK, rows_after_stall(nas_status=lambda r: "paused"), SERVICE),
    "stall: reclaim spinning": (DEADLOCK, both(rows_after_stall(client_cpu_s=lambda r: float(r["t"]) * 0.9,
                                                                allocstall=lambda r: int(float(r["t"]) * 10)),
                                               no_dump), SERVICE),
    "stall: blocked on the path": (DEADLOCK, nothing, SERVICE),
    "client died: out of memory": (DIED, add({**CONSOLE, "name": "oom-no-victim",
                                              "line": "Out of memory and no killable processes..."}), DEADLOCK),
    "client died": (DIED, nothing, DEADLOCK),
    "total deadline": (ANON, both(drop("workload", "exit"), drop("probe", "client-answers"),
                                  add({"kind": "workload", "name": "total-deadline", "total_s": 60.0}, dt=60.0)), DEADLOCK),
    "died after OOM kills": (ANON, both(change("workload", "exit", status=1),
                                        add({**CONSOLE, "name": "oom-kill", "line": "Killed process 99 (sleep)",
                                             "groups": ["99", "sleep"]})), DEADLOCK),
    "last resort": (ANON, change("workload", "exit", status=1), DEADLOCK),
}


def judged(src: Path, edit: Edit, tmp: Path) -> Judgement:
    case = tmp / src.name
    shutil.copytree(src, case)
    edit(case)
    return judge(casefile.load(case).observations)


def test_every_rule_has_a_folder() -> None:
    assert list(FIRES) == [r.name for r in rules.RULES]


@pytest.mark.parametrize("rule", list(FIRES))
def test_the_rule_fires_on_its_folder_and_not_on_another(rule: str, tmp_path: Path) -> None:
    src, edit, other = FIRES[rule]
    j = judged(src, edit, tmp_path / "fires")
    assert j.rule == rule, (j.rule, j.verdict, j.reasons)
    want = next(r.verdict for r in rules.RULES if r.name == rule).replace(" or ", ", ").split(", ")
    assert j.verdict in want
    k = judged(other, nothing, tmp_path / "not")
    assert k.rule != rule, (k.rule, k.reasons)
