"""The nightly CI's two steps, run the same way on this machine and on GitHub's runners (the
workflow only calls ci/nightly-shard and ci/nightly-merge):

- shard I N: the nightly matrix's I-th of N shards (`testbed matrix FILE --shard I/N`), and the
  controls on shard 1, into OUT/shard-I-of-N/ (uploaded as one artifact per shard);
- plan N: the shard list for the workflow's strategy matrix; previous: the last successful
  night's workflow run id (GitHub's API), whose merged run is downloaded as the baseline;
- merge: every shard's runs folded into one run (`testbed merge`), its report as JSON, JUnit and
  HTML, and the gate: `testbed compare PREVIOUS MERGED` against the previous night's merged run,
  whose exit status (1: a significant regression or a broken control) is the night's; and, every
  night, the controls: one that did not give its `expect:` (`unknown` and no record included) fails it.

A shard's own failures (cases not as expected) never fail its job: the merge decides, over all of
them. Only a shard that produced no run at all fails."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import UsageError
from testbed.store.index import read_run
from testbed.report import controls

REPO = Path(__file__).resolve().parents[2]
NIGHTLY_MATRIX = "scenarios/matrix/nightly.yaml"
CONTROLS = ("scenarios/controls/local-swap.yaml", "scenarios/controls/nas-frozen.yaml",
            "scenarios/controls/nas-frozen-60s.yaml", "scenarios/controls/client-frozen.yaml",
            "scenarios/controls/nas-service-down.yaml")


@dataclass(frozen=True)
class Shard:
    index: int
    total: int
    matrix: Path
    repeat: int | None
    controls: bool
    out: Path

    @property
    def folder(self) -> Path:
        return self.out / f"shard-{self.index}-of-{self.total}"


def parse_shard(argv: list[str]) -> Shard:
    p = _parser("ci/nightly-shard", "run one shard of the nightly matrix (and the controls on shard 1)")
    p.add_argument("index", help="this shard, 1..N")
    p.add_argument("total", help="N, the number of shards")
    p.add_argument("--matrix", default=NIGHTLY_MATRIX, help=f"matrix file (default {NIGHTLY_MATRIX})")
    p.add_argument("--repeat", help="runs per cell, overriding the file's repeat")
    p.add_argument("--no-controls", action="store_true", help="do not run the controls on shard 1")
    p.add_argument("--out", default="ci-out", help="output folder (default ci-out)")
    a = p.parse_args(argv)
    index, total = _int(a.index, "index"), _int(a.total, "total")
    if total < 1 or not 1 <= index <= total:
        raise UsageError(f"ci/nightly-shard {a.index} {a.total}: the shard must be 1..N with N >= 1")
    repeat = _int(a.repeat, "--repeat") if a.repeat is not None else None
    if repeat is not None and repeat < 1:
        raise UsageError(f"ci/nightly-shard --repeat {a.repeat}: must be at least 1")
    matrix = Path(a.matrix)
    if not matrix.is_file():
        raise UsageError(f"ci/nightly-shard --matrix {a.matrix}: no such file")
    return Shard(index, total, matrix, repeat, not a.no_controls and index == 1, Path(a.out))


@dataclass(frozen=True)
class Merge:
    shards: Path
    previous: Path | None
    out: Path
    alpha: float
    controls: bool = True  # the night ran the controls (shard 1): each must have a record


def parse_merge(argv: list[str]) -> Merge:
    p = _parser("ci/nightly-merge", "merge the shards' runs, report them, and compare with the previous night")
    p.add_argument("--shards", default="ci-out", help="folder holding the shard-I-of-N folders (default ci-out)")
    p.add_argument("--previous", help="the previous night's merged run folder (its artifact, downloaded)")
    p.add_argument("--out", default="ci-out/merged", help="output folder (default ci-out/merged)")
    p.add_argument("--alpha", default="0.05", help="significance level of the gate (default 0.05)")
    p.add_argument("--no-controls", action="store_true",
                   help="the shards ran no controls (nightly-shard --no-controls): none is required")
    a = p.parse_args(argv)
    shards = Path(a.shards)
    if not shards.is_dir():
        raise UsageError(f"ci/nightly-merge --shards {a.shards}: no such folder")
    previous = _one_run(Path(a.previous)) if a.previous else None
    try:
        alpha = float(a.alpha)
    except ValueError:
        raise UsageError(f"ci/nightly-merge --alpha {a.alpha}: not a number") from None
    if not 0 < alpha < 1:
        raise UsageError(f"ci/nightly-merge --alpha {a.alpha}: must be between 0 and 1")
    return Merge(shards, previous, Path(a.out), alpha, not a.no_controls)


def is_run(folder: Path) -> bool:
    """A run folder under its own name. `results/latest` is a link to one, but an artifact upload
    turns links into copies: a folder whose name is not its run's id is such a copy, not a run."""
    if folder.is_symlink() or not (folder / "run.json").is_file():
        return False
    try:
        return json.loads((folder / "run.json").read_text()).get("id") == folder.name
    except ValueError:
        return False


def _one_run(path: Path) -> Path:
    """A run folder, or a folder holding exactly one (the previous night's artifact, as downloaded)."""
    if (path / "run.json").is_file():
        return path
    found = sorted(p.parent for p in path.glob("**/run.json") if is_run(p.parent)) if path.is_dir() else []
    if len(found) != 1:
        raise UsageError(f"ci/nightly-merge --previous {path}: "
                         + ("no such folder" if not path.is_dir() else f"holds {len(found)} runs, not one"))
    return found[0]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 3, as every bad input of ours
        raise UsageError(f"{self.prog}: {message}")  # the usage text would be many lines


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return _Parser(prog=prog, description=description)


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{what} {text!r}: not a whole number") from None


def testbed(*args: str, results: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"TESTBED_RESULTS": str(results)} if results else {})}
    return subprocess.run([sys.executable, "-m", "testbed", *args], env=env, text=True, stdout=subprocess.PIPE)


def run_shard(s: Shard, say=print) -> int:
    results = s.folder / "results"
    results.mkdir(parents=True, exist_ok=True)
    argv = ["matrix", str(s.matrix), "--shard", f"{s.index}/{s.total}", "--json", "--no-html"]
    if s.repeat is not None:
        argv += ["--repeat", str(s.repeat)]
    say(f"shard {s.index}/{s.total}: testbed {' '.join(argv)}")
    m = testbed(*argv, results=results)
    statuses = {"matrix": m.returncode}
    if s.controls:
        say("shard 1 also runs the controls: testbed run " + " ".join(CONTROLS))
        statuses["controls"] = testbed("run", *CONTROLS, "--json", "--no-html", results=results).returncode
    runs = [p for p in results.iterdir() if is_run(p)]
    (s.folder / "shard.json").write_text(json.dumps({"index": s.index, "total": s.total, "matrix": str(s.matrix),
                                                     "repeat": s.repeat, "exit": statuses,
                                                     "runs": sorted(p.name for p in runs)}, indent=2) + "\n")
    if not runs:
        say(f"shard {s.index}/{s.total}: no run was produced (exit {statuses})")
        return 2
    say(f"shard {s.index}/{s.total}: {len(runs)} run(s) in {results} (exit {statuses}; the merge judges them)")
    return 0


def run_merge(m: Merge, say=print) -> int:
    runs = sorted(p for p in m.shards.glob("shard-*/results/*") if is_run(p))
    if not runs:
        raise UsageError(f"ci/nightly-merge: no shard run under {m.shards}/shard-*/results/")
    m.out.mkdir(parents=True, exist_ok=True)
    results = m.out / "results"
    merged = testbed("merge", *map(str, runs), results=results)
    if merged.returncode != 0:
        say(merged.stdout)
        return 2
    run = next(p for p in results.iterdir() if is_run(p))
    say(f"merged {len(runs)} shard run(s) into {run}")
    report = testbed("report", str(run), "--json", "--junit", str(m.out / "junit.xml"), "--html", str(m.out / "html"),
                     results=results)
    (m.out / "report.json").write_text(report.stdout)
    if report.returncode != 0:  # no report, no gate: the night cannot be judged
        say(f"testbed report {run} failed (exit {report.returncode}): see the log above")
        return 2
    gate: dict[str, object] = {"merged": str(run), "previous": str(m.previous) if m.previous else None}
    # Controls first, every night (the first included): one that missed its expect fails the night.
    missed = controls.misses(read_run(run), [controls.control_name(REPO / c) for c in CONTROLS] if m.controls else [])
    gate["controls_missed"] = [x.to_dict() for x in missed]
    for x in missed:
        say(f"gate: {x.line()}")
    code = 0
    if m.previous is None:
        gate["verdict"] = "no previous night: nothing to compare (this night is the next one's baseline)"
    else:
        cmp = testbed("compare", str(m.previous), str(run), "--alpha", str(m.alpha), "--json",
                      "--html", str(m.out / "compare-html"), results=results)
        (m.out / "compare.json").write_text(cmp.stdout)
        code = cmp.returncode
        gate["verdict"] = {0: "no significant regression, no broken control",
                           1: "a significant regression or a broken control (see compare.json)"}.get(code, f"compare failed ({code})")
    if missed:
        code = max(code, 1)
        gate["verdict"] = f"{len(missed)} control(s) missed their expect; " + str(gate["verdict"])
    gate["exit"] = code
    (m.out / "gate.json").write_text(json.dumps(gate, indent=2) + "\n")
    say(f"gate: {gate['verdict']} (exit {code})")
    return code


def plan(argv: list[str]) -> list[str]:
    """`shards=[1,...,N]` and `count=N` lines for $GITHUB_OUTPUT: the shard jobs' strategy matrix."""
    p = _parser("ci/nightly-plan", "the shard list for the workflow's strategy matrix")
    p.add_argument("shards", help="N, the number of shard jobs (1..32)")
    n = _int(p.parse_args(argv).shards, "shards")
    if not 1 <= n <= 32:
        raise UsageError(f"ci/nightly-plan {n}: between 1 and 32 shards")
    return [f"shards={json.dumps(list(range(1, n + 1)))}", f"count={n}"]


def previous_run(repo: str, token: str, workflow: str = "nightly.yml", api: str = "https://api.github.com") -> str | None:
    """The id of the last successful run of the workflow (its merged run is the next night's baseline)."""
    import urllib.request  # only on GitHub: the API is not reachable from the lab

    req = urllib.request.Request(f"{api}/repos/{repo}/actions/workflows/{workflow}/runs?status=success&per_page=1",
                                 headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        runs = json.load(r).get("workflow_runs") or []
    return str(runs[0]["id"]) if runs else None


def main(step: str, argv: list[str]) -> int:
    try:
        if step == "shard":
            return run_shard(parse_shard(argv))
        if step == "plan":
            print("\n".join(plan(argv)))
            return 0
        if step == "previous":
            repo, token = os.environ.get("GITHUB_REPOSITORY"), os.environ.get("GITHUB_TOKEN")
            if not repo or not token:
                raise UsageError("needs GITHUB_REPOSITORY and GITHUB_TOKEN (it runs in the workflow)")
            run_id = previous_run(repo, token)
            print(f"run-id={run_id or ''}")
            print(f"previous: {'run ' + run_id if run_id else 'none (the first night)'}", file=sys.stderr)
            return 0
        return run_merge(parse_merge(argv))
    except UsageError as e:
        msg, prog = str(e), f"ci/nightly-{step}"
        print(msg if msg.startswith(prog) else f"{prog}: {msg}", file=sys.stderr)
        return 3
