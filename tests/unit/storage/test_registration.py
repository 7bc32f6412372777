"""A protocol defined here, in a test module, and registered: everything that reads protocols sees it with
no other file edited (docs/adding-a-protocol.md walks through it). It only declares; it does not run."""

from pathlib import Path

import pytest

from testbed import storage
from testbed.check import frames
from testbed.check.evidence import BlockedTask, Evidence, classify
from testbed.check.mechanism import StallFacts, name_mechanism
from testbed.config.scenario import load_scenario
from testbed.errors import ConfigError
from testbed.host import doctor
from testbed.monitor import timeline
from testbed.monitor.probes import NasProbe
from testbed.storage import PROTOCOLS
from testbed.storage.base import Storage

REPO = Path(__file__).parents[3]


class NineP(Storage):
    """9P over TCP (a stand-in: it declares what the rest of the testbed reads, and runs nothing)."""

    name = "ninep"
    title = "9P"
    ports = (564,)
    client_processes = ("tb-9p",)
    storage_kind = "9P transport"
    frame_classes = (frames.FrameClass("ninep", (r"p9_\w+",), "inside the 9P client"),)
    stall_helpers = ("tb-9p",)
    host_tools = (("diod", "diod", "nas.backend netns/docker with 9P"),)
    link_probe_column = "nas_9p_ms"


@pytest.fixture
def ninep():
    storage.register(NineP())
    yield PROTOCOLS["ninep"]
    storage.unregister("ninep")


def test_a_registered_protocol_is_seen_everywhere(ninep: Storage) -> None:
    # scenarios: storage.protocol accepts it (and its client process is on the path)
    sc = load_scenario(REPO / "scenarios/nfs-swap.yaml", ["storage.protocol=ninep"]).scenario
    assert sc.storage.role is ninep and "tb-9p" in sc.path_processes()
    # the checker: its frames are a class of their own, on the path, and its kind names the mechanism
    waiting = BlockedTask("tb-work", 131, "D", frames=("p9_client_rpc", "p9_client_write", "v9fs_file_write_iter"))
    assert classify(waiting) == ("ninep",)
    mech = name_mechanism(Evidence(blocked=(BlockedTask(**{**waiting.__dict__, "classes": ("ninep",)}),)),
                          StallFacts(protocol="ninep"))
    assert mech is not None and mech.name == "storage-wait" and "(9P transport)" in mech.sentence
    # doctor lists its host tool, the NAS probes and the timeline have its column, the index names its variant
    assert ("diod", "diod", "nas.backend netns/docker with 9P") in doctor.optional_tools()
    assert "nas_9p_ms" in NasProbe.all_columns() and "nas_9p_ms" in timeline.columns()
    assert ninep.variant({}.get) == "ninep" and ninep.service_ports(sc) == (564,)


def test_once_unregistered_it_is_gone_and_options_need_a_module() -> None:
    with pytest.raises(ConfigError, match="storage.protocol: must be one of aoe, iscsi, local, nbd, nfs, not 'ninep'"):
        load_scenario(REPO / "scenarios/nfs-swap.yaml", ["storage.protocol=ninep"])
    assert "ninep" not in {p.protocol for p in frames.protocols()}

    class WithOptions(NineP):
        spec = dict  # any options section

    with pytest.raises(Exception, match="need its module in testbed/storage/"):
        storage.register(WithOptions())
