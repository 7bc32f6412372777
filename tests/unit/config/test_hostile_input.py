"""Hostile input (issue 18): generated files and documents drive the scenario, matrix and topology
parsers, and `--set`; whatever they are, the only exception that may escape is ConfigError (exit 3, one
line naming the file and field). Bounded examples: this runs in the unit tests."""

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.config.matrix import load_matrix
from testbed.config.scenario import load_scenario
from testbed.config.topology import load_topology
from testbed.errors import ConfigError

REPO = Path(__file__).parents[3]
BASE = yaml.safe_load((REPO / "scenarios/nfs-swap.yaml").read_text())
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                            HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["nfs", "iscsi", "aoe", "vm", "netns", "default",
                                                           "debian:trixie", "path:/nope", "client", "nas", "sw0",
                                                           "link-down", "ipsec", "4.2", "1500", "-1", "*"]))
documents = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                          st.dictionaries(st.text(max_size=8) | scalars.filter(lambda v: isinstance(v, str)), kids, max_size=4)),
                         max_leaves=20)


def paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += paths(v, (*prefix, i))
    return out


def replaced(data: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    data = copy.deepcopy(data)
    node = data
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return data


def only_config_errors(fn, *args) -> None:
    try:
        fn(*args)
    except ConfigError as e:
        assert "\n" not in str(e) and str(e), repr(e)


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_any_bytes_as_a_scenario(tmp_path: Path, raw: bytes) -> None:
    f = tmp_path / "s.yaml"
    f.write_bytes(raw)
    only_config_errors(load_scenario, f)
    only_config_errors(load_matrix, f)
    only_config_errors(load_topology, f)


@SETTINGS
@given(doc=documents)
def test_any_document_as_scenario_matrix_topology(tmp_path: Path, doc: Any) -> None:
    f = tmp_path / "d.yaml"
    f.write_text(yaml.safe_dump(doc))
    only_config_errors(load_scenario, f)
    only_config_errors(load_matrix, f)
    only_config_errors(load_topology, f)


@SETTINGS
@given(data=st.data())
def test_a_shipped_scenario_with_one_field_replaced(tmp_path: Path, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(paths(BASE)))
    value = data.draw(documents)
    f = tmp_path / "nfs.yaml"
    f.write_text(yaml.safe_dump(replaced(BASE, path, value)))
    only_config_errors(load_scenario, f)


@SETTINGS
@given(key=st.sampled_from(["client.mem_mb", "storage.protocol", "faults", "faults.0.kind", "topology.links.*.mtu",
                            "client.kernel", "nas.backend", "workload", "deadlines.total_s", "x", "*", "a..b", ""]),
       value=st.text(max_size=30))
def test_any_set(key: str, value: str) -> None:
    only_config_errors(load_scenario, REPO / "scenarios/nfs-swap.yaml", [f"{key}={value}"])


@pytest.mark.parametrize("text,says", [
    ("name: a\nname: b\n", "key 'name' given twice"),
    ("a: &x {b: 1}\nc:\n  <<: *x\n", "merge keys (<<) are not supported"),
    ("name: !!python/object:os.system x\n", "not valid YAML"),
    ("? [1, 2]\n: x\n", "not valid YAML"),
])
def test_yaml_that_hides_mistakes(tmp_path: Path, text: str, says: str) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        load_scenario(f)


def test_files_that_are_not_scenarios(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        load_scenario(tmp_path)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(ConfigError, match="too large"):
        load_scenario(big)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"line 1: not UTF-8 text \(byte 0xe9"):
        load_scenario(latin)
    with pytest.raises(ConfigError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")


def fault_entries() -> st.SearchStrategy:
    """Fault mappings with a real kind and fields drawn from that kind's own spec, values anything."""
    import dataclasses

    from testbed.faults import KINDS

    def entry(kind: str) -> st.SearchStrategy:
        names = [f.name for f in dataclasses.fields(KINDS[kind].Spec) if f.name != "kind"]
        return st.dictionaries(st.sampled_from(names), documents, max_size=4).map(lambda d: {"kind": kind, **d})

    return st.sampled_from(sorted(KINDS)).flatmap(entry)


@SETTINGS
@given(faults=st.lists(fault_entries(), min_size=1, max_size=3),
       protocol=st.sampled_from(["nfs", "iscsi", "aoe", "local"]), backend=st.sampled_from(["vm", "netns", "docker"]))
def test_any_fault_fields(tmp_path: Path, faults: list, protocol: str, backend: str) -> None:
    doc = {**BASE, "faults": faults, "storage": {**BASE["storage"], "protocol": protocol},
           "nas": {**BASE["nas"], "backend": backend}}
    f = tmp_path / "f.yaml"
    f.write_text(yaml.safe_dump(doc))
    only_config_errors(load_scenario, f)


@pytest.mark.parametrize("kind", ["link", "link-flap"])
def test_a_fault_names_a_node_the_topology_has(kind: str) -> None:
    with pytest.raises(ConfigError, match=r"faults\[0\].node: no node named 'ghost' in topology client-switch-nas "
                                          r"\(nodes: client, nas\)"):
        load_scenario(REPO / "scenarios/nfs-swap.yaml", [f"faults=[{{kind: {kind}, at_s: 1, node: ghost}}]"])
    load_scenario(REPO / "scenarios/nfs-swap.yaml", [f"faults=[{{kind: {kind}, at_s: 1, node: nas}}]"])
