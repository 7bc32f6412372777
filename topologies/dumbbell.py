"""A Mininet topology for the testbed: the client and a traffic host on one switch, the NAS on another,
the two joined by a rate-limited uplink (the dumbbell's bar). Read as data by `testbed`
(testbed/config/mininet_topo.py): Mininet's runtime (controller, OVS) is not used.

    topology: topologies/dumbbell.py:Dumbbell
    topology_args: {uplink_mbit: 100, mtu: 1500}

`nas_delay` (e.g. '5ms') puts a delay on the NAS's access link: it needs netem on the host, and
without it the scenario is refused before anything runs.
"""

from mininet.topo import Topo


class Dumbbell(Topo):
    def build(self, uplink_mbit: float = 100, mtu: int = 1500, nas_delay: str | None = None,
              queue: int | None = None) -> None:
        client = self.addHost("client")
        traffic = self.addHost("traffic", role="traffic")
        nas = self.addHost("nas")
        left, right = self.addSwitch("s1"), self.addSwitch("s2")
        self.addLink(client, left, mtu=mtu)
        self.addLink(traffic, left, mtu=mtu)
        self.addLink(nas, right, mtu=mtu, **({"delay": nas_delay} if nas_delay else {}))
        bar = {"bw": uplink_mbit, "mtu": mtu}
        if queue:
            bar["max_queue_size"] = queue
        self.addLink(left, right, **bar)
