"""Results on disk: results/<run>/run.json and one folder per case, a `latest` link.

A case is written in `<case>.incomplete/` and renamed to `<case>/` only after verdict.json is in
place, so a crash never leaves a case folder that looks complete.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from testbed import __version__
from testbed.errors import UsageError
from testbed.store.index import read_case
from testbed.host.paths import results_dir


def write_atomic(path: Path, text: str) -> None:
    """Write, fsync, rename, fsync the folder: after a host crash the file is whole or absent."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def host_facts() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "testbed": __version__,
    }


@dataclass
class RunDir:
    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    def case(self, case_id: str) -> CaseDir:
        final = self.path / case_id
        work = self.path / f"{case_id}.incomplete"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        return CaseDir(case_id, work, final)


@dataclass
class CaseDir:
    id: str
    path: Path  # where files are written while the case runs
    final: Path

    def write_json(self, name: str, data: Any) -> None:
        write_atomic(self.path / name, json.dumps(data, indent=2, default=str) + "\n")

    def write_yaml(self, name: str, data: Any) -> None:
        write_atomic(self.path / name, yaml.safe_dump(data, sort_keys=False))

    def complete(self, verdict: dict[str, Any]) -> Path:
        """verdict.json last, then the rename that makes the case complete."""
        self.write_json("verdict.json", verdict)
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(self.path, self.final)
        _fsync_dir(self.final.parent)
        self.path = self.final
        return self.final


def new_run(tag: str, request: dict[str, Any], root: Path | None = None) -> RunDir:
    root = root or results_dir()
    run_id = datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{tag}"
    path = root / run_id
    path.mkdir(parents=True)
    write_atomic(path / "run.json", json.dumps({"id": run_id, "tag": tag, "request": request, "host": host_facts(),
                                                "started": datetime.now(timezone.utc).isoformat(timespec="seconds")},
                                               indent=2, default=str) + "\n")
    link = root / "latest"
    tmp = root / ".latest.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_id)
    os.replace(tmp, link)
    return RunDir(path)


def merge(sources: list[Path], tag: str, root: Path | None = None) -> RunDir:
    """Fold complete cases from several runs or results folders (e.g. shards from several machines)
    into one new run. Case ids must not collide: shards of one matrix never do."""
    root = root or results_dir()
    runs: list[Path] = []
    for s in sources:
        if (s / "run.json").exists():
            runs.append(s)
        elif s.is_dir():
            runs += sorted(p for p in s.iterdir() if (p / "run.json").exists() and not p.is_symlink())
        else:
            raise UsageError(f"merge: {s} is neither a run folder nor a results folder")
    seen: dict[str, Path] = {}
    cases = []
    for run in runs:
        for folder in sorted(p for p in run.iterdir() if p.is_dir()):
            rec = read_case(folder)
            if not rec:
                continue
            if rec.case_id in seen:
                raise UsageError(f"merge: case {rec.case_id} is in both {seen[rec.case_id]} and {run}")
            seen[rec.case_id] = run
            cases.append(folder)
    if not cases:
        raise UsageError(f"merge: no complete case in {', '.join(map(str, sources))}")
    target = new_run(tag, {"merged_from": [str(r) for r in runs]}, root)
    for folder in cases:
        shutil.copytree(folder, target.path / folder.name, symlinks=True)
    return target
