"""What each protocol declares for the rest of the testbed, and that the rest reads it: the checker's frame
classes and storage kinds, doctor's host tools, the index's variant, the NAS probes' ports and own probe."""

from pathlib import Path

from testbed.check import frames
from testbed.check.evidence import BlockedTask, classify
from testbed.config.scenario import load_scenario
from testbed.host import doctor
from testbed.monitor.probes import NasProbe
from testbed.storage import PROTOCOLS

REPO = Path(__file__).parents[3]


def test_every_protocol_is_registered_with_the_checker() -> None:
    assert {p.protocol for p in frames.protocols()} == set(PROTOCOLS)
    assert frames.kind_of_protocol("nfs") == "NFS/RPC" and frames.kind_of_protocol("local") == "local disk"
    # NBD's own frames are a class of their own (they fell to the generic block rule before)
    task = BlockedTask("kworker/u2:1", 40, "D", frames=("nbd_queue_rq", "blk_mq_dispatch_rq_list"))
    assert "nbd" in classify(task)


def test_doctor_lists_the_tools_protocols_and_faults_declare() -> None:
    tools = {t[0] for t in doctor.optional_tools()}
    for s in PROTOCOLS.values():
        assert {t[0] for t in s.host_tools} <= tools
    assert {"ganesha.nfsd", "tgtd", "vblade", "iperf3", "dnsmasq"} <= tools


def test_the_nbd_port_option_reaches_the_probe() -> None:
    sc = load_scenario(REPO / "scenarios/nbd-swap.yaml", ["storage.nbd.port=10810"]).scenario
    assert PROTOCOLS["nbd"].service_ports(sc) == (10810,)
    assert PROTOCOLS["nfs"].service_ports(sc) == PROTOCOLS["nfs"].ports


def test_a_protocol_names_its_variants() -> None:
    values = {"storage.nfs.version": "4.2"}
    assert PROTOCOLS["nfs"].variant(values.get) == "nfs4.2" and PROTOCOLS["iscsi"].variant(values.get) == "iscsi"
    assert "nas_aoe_ms" in NasProbe.all_columns()  # a protocol's own probe column is a timeline column
