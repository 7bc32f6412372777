"""Reporting over case folders written as the runner writes them."""

import json
from pathlib import Path

import pytest
from junitparser import JUnitXml

from testbed import index, store
from testbed.errors import UsageError
from testbed.report import junit
from testbed.report.runs import compare, pivot, read_run


def make_run(root: Path, tag: str, cases: dict[str, tuple[str, str | None, dict]]) -> Path:
    run = store.new_run(tag, {}, root=root)
    for cid, (verdict, expected, axes) in cases.items():
        c = run.case(cid)
        c.write_yaml("scenario.yaml", {"name": cid, "storage": {"protocol": axes.get("storage.protocol", "nfs")},
                                       "topology_resolved": {"links": [{"mtu": axes.get("topology.links.*.mtu", 1500)}]}})
        c.complete({"case": cid, "scenario": cid, "verdict": verdict, "expected": expected, "axes": axes,
                    "reasons": [f"because {verdict}"], "figures": {"case_wall_s": 100.0, "time_to_recover_s": 4.0}})
    return run.path


CASES = {
    "nfs-mtu1500": ("recovered", None, {"storage.protocol": "nfs", "topology.links.*.mtu": 1500}),
    "nfs-mtu9000": ("deadlocked", None, {"storage.protocol": "nfs", "topology.links.*.mtu": 9000}),
    "aoe-mtu1500": ("unknown", None, {"storage.protocol": "aoe", "topology.links.*.mtu": 1500}),
    "ctl-frozen": ("stalled", "stalled", {"storage.protocol": "nfs", "topology.links.*.mtu": 1500}),
}


def test_pivot_counts_verdicts(tmp_path: Path) -> None:
    cases = read_run(make_run(tmp_path, "tb000001", CASES))
    header, rows = pivot(cases, "storage.protocol", "topology.links.*.mtu")
    assert header == ["storage.protocol \\ topology.links.*.mtu", "1500", "9000"]
    table = {r[0]: r[1:] for r in rows}
    assert table["nfs"] == ["recovered:1 stalled:1 ttr 4.0s", "deadlocked:1 ttr 4.0s"]
    assert table["aoe"] == ["unknown:1 ttr 4.0s", ""]


def test_junit_parses_with_failures_and_errors(tmp_path: Path) -> None:
    run = make_run(tmp_path, "tb000002", CASES)
    out = tmp_path / "junit.xml"
    junit.write(read_run(run), run.name, out)
    xml = JUnitXml.fromfile(str(out))
    suite = next(iter(xml))
    assert suite.tests == 4 and suite.failures == 1 and suite.errors == 1
    results = {case.name: [type(r).__name__ for r in case.result] for case in suite}
    assert results == {"aoe-mtu1500": ["Error"], "ctl-frozen": [], "nfs-mtu1500": [], "nfs-mtu9000": ["Failure"]}


def test_compare_reports_regressions(tmp_path: Path) -> None:
    a = read_run(make_run(tmp_path, "tb00000a", CASES))
    worse = dict(CASES)
    worse["ctl-frozen"] = ("recovered", "stalled", CASES["ctl-frozen"][2])  # the positive control stopped failing
    worse["nfs-mtu9000"] = ("recovered", None, CASES["nfs-mtu9000"][2])  # got better
    b = read_run(make_run(tmp_path, "tb00000b", worse))
    changes, only = compare(a, b, 0.25)
    got = {(c.case_id, c.what): c.worse for c in changes}
    assert got == {("ctl-frozen", "verdict"): True, ("nfs-mtu9000", "verdict"): False}
    assert only == []


def test_merge_of_shards_equals_unsharded(tmp_path: Path) -> None:
    whole = read_run(make_run(tmp_path / "one", "tb000010", CASES))
    names = sorted(CASES)
    s1 = make_run(tmp_path / "m1", "tb000011", {k: CASES[k] for k in names[0::2]})
    s2 = make_run(tmp_path / "m2", "tb000012", {k: CASES[k] for k in names[1::2]})
    merged = store.merge([tmp_path / "m1", s2], "tb000013", root=tmp_path / "merged")
    cases = read_run(merged.path)
    assert pivot(cases, "storage.protocol", "topology.links.*.mtu") == pivot(whole, "storage.protocol", "topology.links.*.mtu")
    with pytest.raises(UsageError, match="is in both"):
        store.merge([s1, s1], "tb000014", root=tmp_path / "merged")


def test_index_rebuild_from_folders(tmp_path: Path) -> None:
    make_run(tmp_path, "tb000020", CASES)
    (tmp_path / "tb-junk.incomplete").mkdir()
    assert index.rebuild(tmp_path) == 4
    with index.connect(tmp_path) as db:
        rows = dict(db.execute("SELECT case_id, verdict FROM cases").fetchall())
        assert rows["nfs-mtu9000"] == "deadlocked"
        mtu = db.execute("SELECT mtu FROM cases WHERE case_id='nfs-mtu9000'").fetchone()[0]
        assert mtu == 9000
        assert json.loads(db.execute("SELECT axes FROM cases WHERE case_id='aoe-mtu1500'").fetchone()[0])["storage.protocol"] == "aoe"
