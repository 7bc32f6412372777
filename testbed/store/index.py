"""results/index.sqlite: one row per complete case, for queries across runs and machines.

The case folders are the truth; the index is a cache, rebuilt from them with `testbed index --rebuild`.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from testbed.errors import TestbedError
from testbed.storage import PROTOCOLS
from testbed.host.paths import results_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
    run TEXT NOT NULL,
    case_id TEXT NOT NULL,
    scenario TEXT,
    axes TEXT,
    protocol TEXT,
    mtu INTEGER,
    mem_mb INTEGER,
    workload TEXT,
    verdict TEXT,
    expected TEXT,
    as_expected INTEGER,
    reasons TEXT,
    figures TEXT,
    wall_s REAL,
    time_to_recover_s REAL,
    kernel TEXT,
    images TEXT,
    host TEXT,
    path TEXT,
    PRIMARY KEY (run, case_id)
)
"""


@dataclass
class CaseRecord:
    """A complete case as read from its folder."""

    run: str
    case_id: str
    path: Path
    verdict: dict[str, Any]
    scenario: dict[str, Any]
    host: dict[str, Any]

    @property
    def axes(self) -> dict[str, Any]:
        return self.verdict.get("axes") or {}

    def value(self, path: str) -> Any:
        """An axis value: the case's own assignment, else the resolved scenario's field."""
        if path in self.axes:
            return self.axes[path]
        if path in VIRTUAL:
            return VIRTUAL[path](self)
        node: Any = self.scenario
        parts = path.split(".")
        if parts[0] == "topology" and len(parts) > 1:
            node, parts = self.scenario.get("topology_resolved", {}), parts[1:]
        for p in parts:
            if isinstance(node, list):
                node = node[0] if p == "*" and node else (node[int(p)] if p.isdigit() and int(p) < len(node) else None)
            elif isinstance(node, dict):
                node = node.get(p)
            else:
                return None
        return node


def _storage_variant(rec: CaseRecord) -> str | None:
    """The protocol with what its module says tells its variants apart (one pivot axis for both): e.g.
    `nfs3`, `nfs4.2`, `iscsi`, `aoe`, `local`."""
    proto = rec.value("storage.protocol")
    return PROTOCOLS[proto].variant(rec.value) if proto in PROTOCOLS else proto


# Pivot axes that are no scenario field: `storage.variant` (above) and `kernel.release`, the client
# kernel's `uname -r` as the verdict records it (client.kernel is what the scenario asked for).
VIRTUAL: dict[str, Callable[[CaseRecord], Any]] = {
    "storage.variant": _storage_variant,
    "kernel.release": lambda rec: rec.verdict.get("kernel"),
}


class DamagedCase(TestbedError):
    """A case folder whose verdict.json or scenario.yaml cannot be read back."""


_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        print(f"testbed: {message}", file=sys.stderr, flush=True)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(errors="strict"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DamagedCase(f"{path}: cannot be read back ({type(e).__name__}: {e})") from None


def read_case(folder: Path, strict: bool = False) -> CaseRecord | None:
    """A complete case's record; None for a folder that holds none (no verdict.json, or .incomplete).
    A damaged one (verdict.json or scenario.yaml unreadable) raises DamagedCase when `strict`, else it is
    said once on stderr and skipped: one bad folder never hides the others from report or compare."""
    try:
        return _read_case(folder)
    except DamagedCase as e:
        if strict:
            raise
        warn_once(str(folder), f"skipping a damaged case: {e}")
        return None


def _read_case(folder: Path) -> CaseRecord | None:
    vfile = folder / "verdict.json"
    if not vfile.is_file() or folder.name.endswith(".incomplete"):
        return None
    verdict = read_json(vfile)
    if not isinstance(verdict, dict) or not isinstance(verdict.get("verdict"), str):
        raise DamagedCase(f"{vfile}: not a verdict (no \"verdict\" field)")
    sfile = folder / "scenario.yaml"
    try:
        scenario = yaml.safe_load(sfile.read_text()) if sfile.exists() else {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DamagedCase(f"{sfile}: cannot be read back ({type(e).__name__})") from None
    if not isinstance(scenario, (dict, type(None))):
        raise DamagedCase(f"{sfile}: not a scenario mapping")
    rfile = folder.parent / "run.json"
    host: dict[str, Any] = {}
    if rfile.exists():
        try:
            run = read_json(rfile)
            host = run.get("host", {}) if isinstance(run, dict) else {}
        except DamagedCase as e:  # the run's facts are lost, its cases are not
            warn_once(str(rfile), f"{e}: its cases are read without the host's facts")
    return CaseRecord(folder.parent.name, folder.name, folder, verdict, scenario or {}, host)


def read_run(run_dir: Path) -> list[CaseRecord]:
    return sorted((r for p in run_dir.iterdir() if p.is_dir() and (r := read_case(p))), key=lambda r: r.case_id)


def index_path(root: Path | None = None) -> Path:
    return (root or results_dir()) / "index.sqlite"


def connect(root: Path | None = None) -> sqlite3.Connection:
    path = index_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute(SCHEMA)
    return db


def upsert(db: sqlite3.Connection, rec: CaseRecord) -> None:
    v, f = rec.verdict, rec.verdict.get("figures", {})
    db.execute(
        "INSERT OR REPLACE INTO cases VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (rec.run, rec.case_id, v.get("scenario"), json.dumps(rec.axes), rec.value("storage.protocol"),
         rec.value("topology.links.*.mtu"), rec.value("client.mem_mb"), rec.value("workload.kind"),
         v.get("verdict"), v.get("expected"), int(bool(v.get("as_expected"))), json.dumps(v.get("reasons", [])),
         json.dumps(f), f.get("case_wall_s"), f.get("time_to_recover_s"), v.get("kernel"),
         json.dumps(v.get("images", {})), json.dumps(rec.host), str(rec.path)),
    )


def add_case(folder: Path, root: Path | None = None) -> None:
    rec = read_case(folder)
    if rec:
        with connect(root) as db:
            upsert(db, rec)


def rebuild(root: Path | None = None) -> int:
    """Drop the index and fill it again from every complete case folder under `root`."""
    root = root or results_dir()
    path = index_path(root)
    path.unlink(missing_ok=True)
    n = 0
    with connect(root) as db:
        for run in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
            for rec in read_run(run):
                upsert(db, rec)
                n += 1
    return n
