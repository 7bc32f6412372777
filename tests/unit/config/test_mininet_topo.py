"""A Mininet Topo read as data: mapped to our nodes, switches, links and trunks; options we cannot honour refused."""

from pathlib import Path

import pytest

from testbed.config import mininet_topo
from testbed.config.scenario import load_scenario
from testbed.errors import ConfigError

REPO = Path(__file__).parents[3]


def topo_file(tmp_path: Path, body: str) -> Path:
    f = tmp_path / "t.py"
    f.write_text("from mininet.topo import Topo\n\n\nclass T(Topo):\n    def build(self, **kw):\n"
                 + "".join(f"        {line}\n" for line in body.strip().splitlines()))
    return f


def test_the_shipped_dumbbell_maps_to_two_switches_a_trunk_and_a_traffic_host() -> None:
    topo = mininet_topo.load("topologies/dumbbell.py:Dumbbell", {"uplink_mbit": 50, "mtu": 1400}, REPO, "test")
    assert topo.nodes["client"].role == "client" and topo.nodes["client"].kind == "vm"
    assert topo.nodes["nas"].role == "nas"
    assert (topo.nodes["traffic"].kind, topo.nodes["traffic"].role) == ("host", "traffic")
    assert set(topo.switches) == {"s1", "s2"}
    (trunk,) = topo.trunks
    assert (trunk.a, trunk.b, trunk.rate_mbit, trunk.mtu) == ("s1", "s2", 50.0, 1400)
    assert [link.mtu for link in topo.links] == [1400, 1400, 1400] and not any(link.rate_mbit for link in topo.links)
    addrs = {topo.links[i].node: str(a) for i, a in topo.addresses().items()}
    assert len(set(addrs.values())) == 3  # one subnet across the trunk: no address twice
    assert topo.switch_address("s1") != topo.switch_address("s2")


def test_a_scenario_names_the_topo_and_its_arguments() -> None:
    loaded = load_scenario(REPO / "scenarios/nfs-swap-dumbbell.yaml")
    assert loaded.topology.trunks[0].rate_mbit == 100.0
    assert loaded.topology.node_for("nas") == "nas"


def test_options_are_converted() -> None:
    cond = mininet_topo._conditions({"bw": 10, "delay": "5ms", "jitter": "500us", "loss": 1, "max_queue_size": 50,
                                     "node1": "a", "port1": 0}, "src", "links[0]")
    assert cond == {"rate_mbit": 10.0, "delay_ms": 5.0, "jitter_ms": 0.5, "loss_pct": 1.0, "queue_packets": 50}


@pytest.mark.parametrize("body, field, words", [
    ("c = self.addHost('client'); n = self.addHost('nas'); s = self.addSwitch('s1')\n"
     "self.addLink(c, s, use_htb=True); self.addLink(n, s)", "use_htb", "not honoured"),
    ("c = self.addHost('client'); n = self.addHost('nas')\nself.addLink(c, n)", "topology links[0]", "two hosts"),
    ("c = self.addHost('client', cpu=0.5); n = self.addHost('nas'); s = self.addSwitch('s1')\n"
     "self.addLink(c, s); self.addLink(n, s)", "cpu", "not honoured"),
    ("c = self.addHost('client'); s = self.addSwitch('s1')\nself.addLink(c, s)", "nodes", "role nas"),
])
def test_what_cannot_be_honoured_is_a_config_error_naming_it(tmp_path: Path, body: str, field: str, words: str) -> None:
    f = topo_file(tmp_path, body)
    with pytest.raises(ConfigError) as e:
        mininet_topo.load(f"{f}:T", {}, tmp_path, "scen.yaml")
    assert field in e.value.field and words in e.value.message


def test_delay_is_refused_where_the_host_has_no_netem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from testbed.net import caps

    monkeypatch.setattr(caps, "netem_available", lambda: False)
    with pytest.raises(ConfigError) as e:
        load_scenario(REPO / "scenarios/nfs-swap-dumbbell.yaml", ["topology_args={nas_delay: 5ms}"])
    assert "links[2].delay_ms" in e.value.field and "netem" in e.value.message
    monkeypatch.setattr(caps, "netem_available", lambda: True)
    assert load_scenario(REPO / "scenarios/nfs-swap-dumbbell.yaml", ["topology_args={nas_delay: 5ms}"]).topology.links[2].delay_ms == 5


def test_a_file_without_the_class_or_not_a_topo_is_refused(tmp_path: Path) -> None:
    f = topo_file(tmp_path, "pass")
    with pytest.raises(ConfigError, match="no mininet.topo.Topo subclass named Missing"):
        mininet_topo.load(f"{f}:Missing", {}, tmp_path, "s")
    with pytest.raises(ConfigError, match="no Mininet topology file"):
        mininet_topo.load("nowhere.py:T", {}, tmp_path, "s")
    with pytest.raises(ConfigError, match="unexpected keyword"):
        mininet_topo.load("topologies/dumbbell.py:Dumbbell", {"speed": 1}, REPO, "s")


def test_rate_and_delay_on_one_link_are_refused_until_built(tmp_path: Path) -> None:
    f = topo_file(tmp_path, "c = self.addHost('client'); n = self.addHost('nas'); s = self.addSwitch('s1')\n"
                            "self.addLink(c, s, bw=10, delay='5ms'); self.addLink(n, s)")
    with pytest.raises(ConfigError, match="not built yet"):
        mininet_topo.load(f"{f}:T", {}, tmp_path, "s")
