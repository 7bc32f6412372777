import time
from pathlib import Path

import pytest
import yaml

from testbed.config.matrix import load_matrix
from testbed.errors import ConfigError
from testbed.matrix import parse_shard, shard_cases

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
    assert a == b and len(a) == 24 and len(set(a)) == 24
    assert "iscsi-mtu9000-mem128-anon" in a


def test_invalid_case_names_matrix_case_and_axis_values(fixtures: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_matrix(fixtures / "scenarios/matrix-bad-axis.yaml")
    msg = str(e.value)
    assert "matrix-bad-axis.yaml: case iscsi-mem96 (storage.protocol=iscsi, client.mem_mb=96)" in msg
    assert "client.mem_mb: iSCSI needs a client of at least 128 MB" in msg


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
