import time
from pathlib import Path

import pytest
import yaml

from testbed.config.matrix import load_matrix
from testbed.errors import ConfigError
from testbed.engine.matrix import parse_shard, shard_cases

REPO = Path(__file__).parents[3]


def write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump({"base": str(REPO / "scenarios/nfs-swap.yaml"), **data}))
    return p


def test_product_exclude_include_repeat(tmp_path: Path) -> None:
    m = load_matrix(write(tmp_path, {
        "name": "t",
        "axes": {"storage.protocol": ["nfs", "iscsi"], "topology.links.*.mtu": [1500, 9000]},
        "exclude": [{"storage.protocol": "iscsi", "topology.links.*.mtu": 9000}],
        "include": [{"storage.protocol": "aoe", "workload.kind": "write"}],
        "repeat": 2,
    }))
    ids = [c.id for c in m.cases]
    assert ids == ["nfs-mtu1500-r1", "nfs-mtu1500-r2", "nfs-mtu9000-r1", "nfs-mtu9000-r2",
                   "iscsi-mtu1500-r1", "iscsi-mtu1500-r2", "aoe-write-r1", "aoe-write-r2"]
    nfs9000 = m.cases[2].loaded
    assert [link.mtu for link in nfs9000.topology.links] == [9000, 9000]
    assert nfs9000.scenario.name == "nfs-mtu9000-r1"
    assert m.cases[-1].loaded.scenario.workload.kind == "write"


def test_expansion_is_deterministic() -> None:
    a = [c.id for c in load_matrix(REPO / "scenarios/matrix/protocols-mtu.yaml").cases]
    b = [c.id for c in load_matrix(REPO / "scenarios/matrix/protocols-mtu.yaml").cases]
    assert a == b and len(a) == 32 and len(set(a)) == 32  # 4 protocols x 2 MTUs x 2 memories x 2 workloads
    assert "iscsi-mtu9000-mem128-anon" in a


def test_invalid_case_names_matrix_case_and_axis_values(fixtures: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_matrix(fixtures / "scenarios/matrix-bad-axis.yaml")
    msg = str(e.value)
    assert "matrix-bad-axis.yaml: case nbd-backendnetns (storage.protocol=nbd, nas.backend=netns)" in msg
    assert "nas.backend: nbd needs nas.backend vm" in msg


def test_unknown_exclude_axis(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"exclude\[0\].client.mem_mb: is not an axis"):
        load_matrix(write(tmp_path, {"name": "t", "axes": {"storage.protocol": ["nfs"]}, "exclude": [{"client.mem_mb": 96}]}))


def test_shards_cover_every_case_once() -> None:
    cases = load_matrix(REPO / "scenarios/matrix/protocols-mtu.yaml").cases
    parts = [shard_cases(cases, (i, 3)) for i in (1, 2, 3)]
    ids = [c.id for p in parts for c in p]
    assert sorted(ids) == sorted(c.id for c in cases) and len(ids) == len(set(ids))
    assert [c.id for c in shard_cases(cases, (2, 3))] == [c.id for c in shard_cases(cases, (2, 3))]


def test_bad_shard() -> None:
    from testbed.errors import UsageError

    for bad in ("0/2", "3/2", "x"):
        with pytest.raises(UsageError):
            parse_shard(bad)


def test_hundred_case_dry_run_is_fast(tmp_path: Path) -> None:
    p = write(tmp_path, {"name": "big", "axes": {"storage.protocol": ["nfs", "iscsi", "aoe", "nfs"][:3],
                                                  "client.mem_mb": [128, 136, 144, 152, 160],
                                                  "topology.links.*.mtu": [1500, 3000, 4500, 6000, 7500, 9000],
                                                  "workload.passes": [1, 2]}})
    t = time.monotonic()
    m = load_matrix(p)
    took = time.monotonic() - t
    assert len(m.cases) == 180
    print(f"180 cases expanded and checked in {took:.2f} s")  # the target (<1 s per 100) is a benchmark, not asserted


def test_repeat_override_and_ids_for_adaptive_runs(tmp_path: Path) -> None:
    p = write(tmp_path, {"name": "t", "axes": {"storage.protocol": ["nfs", "iscsi"]}, "repeat": 2})
    assert [c.id for c in load_matrix(p, repeat=3).cases] == ["nfs-r1", "nfs-r2", "nfs-r3",
                                                              "iscsi-r1", "iscsi-r2", "iscsi-r3"]
    once = load_matrix(p, repeat=1)
    assert [c.id for c in once.cases] == ["nfs", "iscsi"]  # as a file with repeat 1
    adaptive = load_matrix(p, repeat=1, max_repeat=10)  # repeats will be added: the ids say -r1 already
    assert [c.id for c in adaptive.cases] == ["nfs-r1", "iscsi-r1"]
    assert [c.cell for c in adaptive.cases] == [0, 1] and [c.label for c in adaptive.cells] == [
        "storage.protocol=nfs", "storage.protocol=iscsi"]
    more = adaptive.case(1, 7)  # a later repeat continues the numbering, built and checked like the others
    assert (more.id, more.repeat_index, more.assignments) == ("iscsi-r7", 7, {"storage.protocol": "iscsi"})
    assert more.loaded.scenario.name == "iscsi-r7" and more.loaded.scenario.storage.protocol == "iscsi"
    with pytest.raises(ConfigError, match="repeat: --repeat 0: must be at least 1"):
        load_matrix(p, repeat=0)


def test_colliding_labels_keep_their_old_ids(tmp_path: Path) -> None:
    p = write(tmp_path, {"name": "t", "axes": {"deadlines.progress_s": [1.5, 15]}, "repeat": 2})
    m = load_matrix(p)  # both label as progress15
    assert [c.id for c in m.cases] == ["progress15-r1", "progress15-r2", "progress15-r1-2", "progress15-r2-2"]
    assert m.case(1, 3).id == "progress15-r3-2"


def test_sysctl_axis_by_its_dotted_name_with_default(tmp_path: Path) -> None:
    base = tmp_path / "s.yaml"
    base.write_text((REPO / "scenarios/nfs-swap.yaml").read_text().replace(
        "client: {mem_mb: 128, vcpus: 1}", "client: {mem_mb: 128, vcpus: 1, sysctl: {vm.swappiness: 100}}"))
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump({"name": "t", "base": str(base),
                                 "axes": {"client.sysctl.vm.min_free_kbytes": ["default", 8192]}}))
    m = load_matrix(p)
    assert [c.id for c in m.cases] == ["minfreedefault", "minfree8192"]
    assert [c.loaded.scenario.client.sysctl for c in m.cases] == [
        {"vm.swappiness": "100"}, {"vm.swappiness": "100", "vm.min_free_kbytes": "8192"}]  # the base's kept
    assert m.cases[0].assignments == {"client.sysctl.vm.min_free_kbytes": "default"}  # what the report's rows show
    p.write_text(yaml.safe_dump({"name": "t", "base": str(base), "axes": {"client.sysctl.vm.min_free_kbytes": [[1]]}}))
    with pytest.raises(ConfigError, match=r"client.sysctl.vm.min_free_kbytes: must be a plain value or 'default'"):
        load_matrix(p)


def test_reserve_race_matrix() -> None:
    m = load_matrix(REPO / "scenarios/matrix/reserve-race.yaml")
    assert [c.id for c in m.cases] == ([f"minfreedefault-r{r}" for r in range(1, 6)]
                                       + [f"minfree8192-r{r}" for r in range(1, 6)])
    default, raised = m.cases[0].loaded.scenario, m.cases[5].loaded.scenario
    assert default.client.sysctl == {} and raised.client.sysctl == {"vm.min_free_kbytes": "8192"}
    for sc in (default, raised):
        assert (sc.client.mem_mb, sc.storage.protocol, sc.workload.kind) == (128, "nfs", "anon")


def test_axis_matrix_for_search() -> None:
    from testbed.config.matrix import axis_matrix

    m = axis_matrix(REPO / "scenarios/nfs-swap.yaml", "deadlines.progress_s", [1.5, 15], 3)
    assert [m.case(i, 2).id for i in (0, 1)] == ["progress1p5-r2", "progress15-r2"]  # a value's dot as p: no collision
    assert m.case(0, 1).assignments == {"deadlines.progress_s": 1.5} and m.cases == ()
    one = axis_matrix(REPO / "scenarios/nfs-swap.yaml", "client.mem_mb", [96, 104], 3, {"storage.swap_mb": 384})
    case = one.case(1, 3)
    assert case.id == "mem104-r3" and case.assignments == {"client.mem_mb": 104}  # --set is not an axis
    assert case.loaded.scenario.client.mem_mb == 104 and case.loaded.scenario.storage.swap_mb == 384


def test_kernels_matrix_ids_set_and_pivot() -> None:
    m = load_matrix(REPO / "scenarios/matrix/kernels.yaml")
    assert [c.id for c in m.cases] == ["bullseye-nfs", "bullseye-iscsi", "bookworm-nfs", "bookworm-iscsi",
                                       "trixie-nfs", "trixie-iscsi", "bullseye-nfs-nfs42", "bookworm-nfs-nfs42",
                                       "trixie-nfs-nfs42"]
    assert {c.loaded.scenario.deadlines.total_s for c in m.cases} == {1500}  # set: applies to every case
    assert m.cases[-1].loaded.scenario.client.kernel == "debian:trixie"
    assert m.spec.pivot == {"rows": "client.kernel", "cols": "storage.variant"}


def test_set_may_not_repeat_an_axis_and_pivot_is_rows_and_cols(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"set.storage.protocol: is also an axis"):
        load_matrix(write(tmp_path, {"name": "t", "axes": {"storage.protocol": ["nfs"]}, "set": {"storage.protocol": "aoe"}}))
    with pytest.raises(ConfigError, match=r"pivot: must be \{rows: AXIS, cols: AXIS\} \(not x\)"):
        load_matrix(write(tmp_path, {"name": "t", "axes": {"storage.protocol": ["nfs"]}, "pivot": {"rows": "a", "x": "b"}}))
