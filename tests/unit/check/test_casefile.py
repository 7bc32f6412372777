import json
import shutil
from pathlib import Path

import pytest

from testbed.check import casefile
from testbed.check.verdict import judge
from testbed.errors import UsageError

REPO = Path(__file__).parents[3]
COMMITTED = sorted(p.parent for p in (REPO / "results").glob("*/*/verdict.json"))


@pytest.mark.parametrize("folder", COMMITTED, ids=[p.parent.name + "/" + p.name for p in COMMITTED])
def test_every_committed_case_is_judged_again_as_stored(folder: Path) -> None:
    cf = casefile.load(folder)
    j = judge(cf.observations)
    assert j.verdict == cf.stored["verdict"], j.reasons
    kept = (folder / "workload.jsonl").exists()
    assert kept != any(n.startswith("no workload.jsonl") for n in cf.notes)  # folders from before it say so
    if cf.observations.ended_by == "stall":  # evidence is taken at a stall; a finished case has none
        no_dump = any(e.kind == "evidence" and e.name == "no-dump" for e in cf.observations.events)  # a paused client prints none
        assert (folder / "evidence.json").exists() or no_dump or any("evidence.json" in n for n in cf.notes)


def test_the_workloads_own_lines_decide_when_kept(tmp_path: Path) -> None:
    case = tmp_path / "nfs"
    shutil.copytree(COMMITTED[0], case)
    v = json.loads((case / "verdict.json").read_text())
    (case / "workload.jsonl").write_text('{"progress": 10, "total": 200, "pass": 0, "phase": "write"}\n'
                                        '{"mismatch": {"page": 9, "pass": 1, "word": 4}}\n')
    cf = casefile.load(case)
    assert not any(n.startswith("no workload.jsonl") for n in cf.notes)
    j = judge(cf.observations)
    assert j.verdict == "corrupted" and "page 9 (pass 1, word 4)" in j.reasons[0] and v["verdict"] == "deadlocked"


def test_not_a_case_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no verdict.json"):
        casefile.load(tmp_path)
