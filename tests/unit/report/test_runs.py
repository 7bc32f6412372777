"""Reporting over case folders written as the runner writes them."""

import json
from pathlib import Path

import pytest
from junitparser import JUnitXml

from testbed.store import index

from testbed.store import runs as store
from testbed.errors import UsageError
from testbed.report import junit
from testbed.report.runs import axis_order, compare_runs, pivot, pivot_json, read_run, repeat_agreement


def make_run(root: Path, tag: str, cases: dict[str, tuple], ttr: dict[str, float] | None = None) -> Path:
    """cases: id -> (verdict, expected, axes[, mechanism name]); ttr: id -> time to recover (default 4.0)."""
    run = store.new_run(tag, {}, root=root)
    for cid, (verdict, expected, axes, *mech) in cases.items():
        c = run.case(cid)
        c.write_yaml("scenario.yaml", {"name": cid, "storage": {"protocol": axes.get("storage.protocol", "nfs")},
                                       "topology_resolved": {"links": [{"mtu": axes.get("topology.links.*.mtu", 1500)}]}})
        c.complete({"case": cid, "scenario": cid, "verdict": verdict, "expected": expected, "axes": axes,
                    "reasons": [f"because {verdict}"], "mechanism": {"name": mech[0], "sentence": "..."} if mech else None,
                    "figures": {"case_wall_s": 100.0, "time_to_recover_s": (ttr or {}).get(cid, 4.0)}})
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
    # ctl-frozen expects stalled and stalled: as expected, so the cell has no failure
    assert table["nfs"] == ["recovered:1 stalled:1\nfail 0/2 0% [0%-66%]\nttr 4.0s p90 4.0s\nexpect recovered/stalled",
                            "deadlocked:1\nfail 1/1 100% [21%-100%]\nttr 4.0s p90 4.0s"]
    assert table["aoe"] == ["unknown:1\nno judged run +1 unknown", ""]


def test_pivot_rates_flaky_mechanisms_and_agreement(tmp_path: Path) -> None:
    ax = {"storage.protocol": "nfs", "topology.links.*.mtu": 1500}
    ax9 = {"storage.protocol": "nfs", "topology.links.*.mtu": 9000}
    cases = {f"nfs-mtu1500-r{i}": ("recovered", None, ax) for i in range(1, 4)}
    cases |= {"nfs-mtu9000-r1": ("deadlocked", None, ax9, "rx-refill-reclaim"), "nfs-mtu9000-r2": ("recovered", None, ax9),
              "nfs-mtu9000-r3": ("deadlocked", None, ax9, "rx-refill-reclaim"), "nfs-mtu9000-r4": ("unknown", None, ax9)}
    ttr = {"nfs-mtu1500-r1": 2.0, "nfs-mtu1500-r2": 4.0, "nfs-mtu1500-r3": 10.0}
    recs = read_run(make_run(tmp_path, "tb000003", cases, ttr))
    _, rows = pivot(recs, "storage.protocol", "topology.links.*.mtu")
    c1500, c9000 = rows[0][1], rows[0][2]
    assert c1500.splitlines() == ["recovered:3", "fail 0/3 0% [0%-56%]", "ttr 4.0s p90 8.8s"]
    assert c9000.splitlines()[:2] == ["deadlocked:2 recovered:1 unknown:1", "fail 2/3 67% [21%-94%] FLAKY +1 unknown"]
    assert c9000.splitlines()[-1] == "mech rx-refill-reclaim\u00d72"
    assert repeat_agreement(recs) == (1, 2)  # mtu1500 all recovered; mtu9000 not (the unknown is left out)
    data = pivot_json("tb000003", recs, "storage.protocol", "topology.links.*.mtu")
    cell = {(c["row"], c["col"]): c for c in data["cells"]}[("nfs", "9000")]
    assert (cell["runs"], cell["failures"], cell["unknowns"], cell["flaky"]) == (3, 2, 1, True)
    assert cell["mechanisms"] == {"rx-refill-reclaim": 2}
    assert data["repeat_agreement"] == {"agree": 1, "cells": 2, "share": 0.5}
    json.dumps(data)  # serialisable


def test_junit_parses_with_failures_and_errors(tmp_path: Path) -> None:
    run = make_run(tmp_path, "tb000002", CASES)
    out = tmp_path / "junit.xml"
    junit.write(read_run(run), run.name, out)
    xml = JUnitXml.fromfile(str(out))
    suite = next(iter(xml))
    assert suite.tests == 4 and suite.failures == 1 and suite.errors == 1
    results = {case.name: [type(r).__name__ for r in case.result] for case in suite}
    assert results == {"aoe-mtu1500": ["Error"], "ctl-frozen": [], "nfs-mtu1500": [], "nfs-mtu9000": ["Failure"]}


def test_compare_control_broke_and_single_runs(tmp_path: Path) -> None:
    a = read_run(make_run(tmp_path, "tb00000a", CASES))
    worse = dict(CASES)
    worse["ctl-frozen"] = ("recovered", "stalled", CASES["ctl-frozen"][2])  # the positive control stopped failing
    worse["nfs-mtu9000"] = ("recovered", None, CASES["nfs-mtu9000"][2])  # got better
    b = read_run(make_run(tmp_path, "tb00000b", worse))
    cmp = compare_runs(a, b)
    # paired by axis values (and a control's expect), not by case id
    cells = {d.label: d for d in cmp.cells}
    ctl = cells["expect=stalled, storage.protocol=nfs, topology.links.*.mtu=1500"]
    assert ctl.control_broke and (ctl.a.failures, ctl.b.failures) == (0, 1)
    assert cells["storage.protocol=nfs, topology.links.*.mtu=9000"].direction == "better"
    assert not cells["storage.protocol=nfs, topology.links.*.mtu=1500"].control_broke
    assert cmp.one_run_per_side and not cmp.can_be_significant and not cmp.regressions
    assert cmp.exit_code == 1 and [d.label for d in cmp.broken_controls] == [ctl.label]
    assert compare_runs(a, a).exit_code == 0


def test_compare_pairs_repeats_by_axes_and_tests_figures(tmp_path: Path) -> None:
    ax = {"storage.protocol": "nfs", "topology.links.*.mtu": 1500}
    a = {f"nfs-mtu1500-r{i}": ("recovered", None, ax) for i in range(1, 6)}
    b = {f"shard-{i}": ("recovered", None, ax) for i in range(1, 6)}  # other ids, same cell
    ttr_a = {k: 4.0 + i for i, k in enumerate(a)}
    ttr_b = {k: 40.0 + i for i, k in enumerate(b)}
    ra, rb = read_run(make_run(tmp_path, "tb00000c", a, ttr_a)), read_run(make_run(tmp_path, "tb00000d", b, ttr_b))
    cmp = compare_runs(ra, rb)
    assert len(cmp.cells) == 1 and not cmp.only_a and not cmp.only_b
    ttr = next(f for f in cmp.cells[0].figures if f.name == "time_to_recover_s")
    assert (ttr.median_a, ttr.median_b) == (6.0, 42.0) and ttr.p is not None and ttr.p < 0.05
    assert ttr.regression and cmp.exit_code == 1  # time to recover significantly up
    assert compare_runs(rb, ra).exit_code == 0  # and down is no regression
    few = read_run(make_run(tmp_path, "tb00000e", dict(list(b.items())[:2]), ttr_b))
    ttr = next(f for f in compare_runs(ra, few).cells[0].figures if f.name == "time_to_recover_s")
    assert ttr.p is None and not ttr.regression  # 2 runs on a side: shown without a claim


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


def test_axis_values_in_numeric_order() -> None:
    assert axis_order(["112", "64", "96.5", "-"]) == ["64", "96.5", "112", "-"]
    assert axis_order(["default", "8192", "1024"]) == ["1024", "8192", "default"]
    assert axis_order(["nfs", "aoe", "iscsi"]) == ["nfs", "aoe", "iscsi"]  # words: as first seen
