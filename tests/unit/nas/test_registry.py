"""NAS backends by name: the three found in testbed/nas/, each one's traits, and a backend registered
from this test module (nothing in testbed/ edited) that scenario checks and protocols take as they take
the others: by its traits, never by its name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import nas
from testbed.config.scenario import load_scenario
from testbed.errors import ConfigError
from testbed.nas.base import Backend, Nas, NasSetup, Traits

REPO = Path(__file__).parents[3]


class RemoteBackend(Backend):
    """A NAS somewhere else that runs userspace servers and lets them fork (say, a board on the bench)."""

    traits = Traits("remote", "remote host", own_kernel=False, detached_servers=True, shares_host_run=False)

    def describe(self) -> str:
        return "remote"

    def start(self, s: NasSetup) -> Nas:
        raise NotImplementedError("registration only")


@pytest.fixture
def remote() -> Iterator[None]:
    nas.register(RemoteBackend)
    yield
    nas.unregister("remote")


def test_the_backends_and_their_traits() -> None:
    assert nas.names() == ["vm", "docker", "netns"]
    assert [nas.traits(n).own_kernel for n in nas.names()] == [True, False, False]
    assert nas.traits("netns").shares_host_run and not nas.traits("docker").shares_host_run
    assert nas.traits("vm").detached_servers and not nas.traits("docker").detached_servers


def test_an_unknown_backend_names_the_ones_there_are() -> None:
    with pytest.raises(ConfigError) as e:
        load_scenario(REPO / "scenarios/nfs-swap.yaml", ["nas.backend=remote"])
    assert e.value.field == "nas.backend" and e.value.message == "must be one of vm, docker, netns, not 'remote'"


def test_a_registered_backend_is_taken_by_its_traits(remote: None) -> None:
    sc = load_scenario(REPO / "scenarios/nfs-swap.yaml", ["nas.backend=remote"]).scenario
    assert sc.storage.role.server(sc) == "ganesha"  # no kernel of its own: the userspace server
    sc = load_scenario(REPO / "scenarios/iscsi-swap.yaml", ["nas.backend=remote"]).scenario
    assert sc.storage.role.target(sc) == "tgt"
    load_scenario(REPO / "scenarios/nbd-swap.yaml", ["nas.backend=remote"])  # its servers may fork
    with pytest.raises(ConfigError) as e:
        load_scenario(REPO / "scenarios/faults/ipsec.yaml", ["nas.backend=remote"])
    assert "with nas.backend remote the NAS's kernel is the host's" in e.value.message
    with pytest.raises(ConfigError) as e:
        load_scenario(REPO / "scenarios/nfs-swap.yaml", ["nas.backend=remote", "nas.kernel=6.1"])
    assert e.value.field == "nas.kernel"


def test_nbd_names_the_backends_that_can_run_it(remote: None) -> None:
    with pytest.raises(ConfigError) as e:
        load_scenario(REPO / "scenarios/nbd-swap.yaml", ["nas.backend=netns"])
    assert e.value.message.startswith("nbd needs nas.backend vm, remote (")


def test_a_backend_without_traits_is_refused() -> None:
    class Bare(Backend):
        def describe(self) -> str:
            return ""

        def start(self, s: NasSetup) -> Nas:
            raise NotImplementedError

    with pytest.raises(Exception, match="no Traits"):
        nas.register(Bare)
