"""The NAS backend and server fields: valid pairs, refused pairs with their reason, faults that need a
NAS kernel of its own; the netns NAS's service answer and its servers' configuration."""

from pathlib import Path

import pytest

from testbed.config.scenario import load_scenario
from testbed.errors import ConfigError
from testbed.nas import host as nas_host
from testbed.storage import iscsi, nfs

REPO = Path(__file__).parents[3]


@pytest.mark.parametrize("scenario, sets, server", [
    ("nfs-swap.yaml", [], ("nfs", "kernel")),
    ("nfs-swap.yaml", ["nas.backend=netns"], ("nfs", "ganesha")),
    ("nfs-swap.yaml", ["nas.backend=netns", "storage.nfs.server=ganesha"], ("nfs", "ganesha")),
    ("iscsi-swap.yaml", [], ("iscsi", "lio")),
    ("iscsi-swap.yaml", ["nas.backend=netns"], ("iscsi", "tgt")),
    ("aoe-swap.yaml", ["nas.backend=netns"], ("aoe", "vblade")),
    ("nfs-swap.yaml", ["nas.backend=docker"], ("nfs", "ganesha")),
    ("iscsi-swap.yaml", ["nas.backend=docker"], ("iscsi", "tgt")),
])
def test_each_backend_defaults_to_the_servers_it_runs(scenario: str, sets: list[str], server: tuple[str, str]) -> None:
    sc = load_scenario(REPO / "scenarios" / scenario, sets).scenario
    role = sc.storage.role
    got = {"nfs": lambda: role.server(sc), "iscsi": lambda: role.target(sc), "aoe": lambda: "vblade"}[server[0]]()
    assert (sc.storage.protocol, got) == server


@pytest.mark.parametrize("scenario, sets, field, words", [
    ("nfs-swap.yaml", ["storage.nfs.server=ganesha"], "storage.nfs.server", "NAS image has kernel nfsd"),
    ("nfs-swap.yaml", ["nas.backend=netns", "storage.nfs.server=kernel"], "storage.nfs.server", "host's kernel"),
    ("iscsi-swap.yaml", ["storage.iscsi.target=tgt"], "storage.iscsi.target", "has LIO"),
    ("iscsi-swap.yaml", ["nas.backend=netns", "storage.iscsi.target=lio"], "storage.iscsi.target", "host's kernel"),
    ("nfs-swap.yaml", ["nas.backend=kvm"], "nas.backend", "must be one of"),
    ("nfs-swap.yaml", ["nas.backend=docker", "storage.nfs.server=kernel"], "storage.nfs.server", "host's kernel"),
    ("nfs-swap.yaml", ["nas.backend=netns", "nas.boot=cold"], "nas.boot", "no VM to boot"),
    ("faults/nas-restart.yaml", ["nas.backend=netns", "faults.0.mode=freeze"], "faults[0].mode", "service-freeze"),
    ("faults/nas-restart.yaml", ["faults.0.mode=service-freeze"], "faults[0].mode", "kernel"),
    ("faults/ipsec.yaml", ["nas.backend=netns"], "faults[0].kind", "NAS's own kernel"),
])
def test_invalid_pairs_are_config_errors_that_say_why(scenario: str, sets: list[str], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_scenario(REPO / "scenarios" / scenario, sets)
    assert e.value.field == field and words in e.value.message


def test_service_freeze_and_restart_validate_on_netns() -> None:
    for mode in ("service-freeze", "restart-service"):
        sc = load_scenario(REPO / "scenarios/faults/nas-restart.yaml", ["nas.backend=netns", f"faults.0.mode={mode}"]).scenario
        assert sc.faults[0].mode == mode


def test_netns_service_is_read_from_the_nas_namespace_only() -> None:
    argv = nas_host.processes_argv("tb0a1b2c", "tgtd")
    assert argv[:2] == ["/bin/sh", "-c"] and argv[-2:] == ["tb0a1b2c-nas", "tgtd"] and "ip netns pids" in argv[2]
    s = iscsi.Iscsi()
    assert s.parse_service("procs tgtd\n812 S\n").alive is True
    assert s.parse_service("procs tgtd\n812 T\n").detail == "tgtd pid 812 stopped (SIGSTOP)"
    assert s.parse_service("procs tgtd\n").alive is False
    assert s.parse_service("1\n").alive is True  # LIO's TPG enable, as before
    n = nfs.Nfs()
    assert n.parse_service("procs ganesha.nfsd\n77 S\n").alive is True
    assert n.parse_service("threads 8\nmountd 412\n").alive is True


def test_ganesha_exports_the_run_folder_at_the_kernel_servers_path_for_the_client_only() -> None:
    conf = nfs.ganesha_conf("/run/x/nas-srv/srv/nfs", "/run/x/rec", "10.201.0.2", "10.201.0.1", "3, 4")
    assert "Path = /run/x/nas-srv/srv/nfs;" in conf and f"Pseudo = {nfs.EXPORT};" in conf
    assert "Mount_Path_Pseudo = true;" in conf and "Bind_addr = 10.201.0.2;" in conf
    assert "Clients = 10.201.0.1;" in conf and "Squash = No_Root_Squash;" in conf


def test_tgt_control_sockets_differ_per_run() -> None:
    ports = {iscsi.tgt_control_port(f"tb{i:06x}") for i in range(0, 2**24, 2**14)}
    assert len(ports) > 900 and all(1000 <= p < 31000 for p in ports)  # tgtd: -C 0..32767


def test_docker_nas_sees_container_files_through_its_root_without_leaving_it() -> None:
    from testbed.nas.container import DockerNas

    nas = DockerNas.__new__(DockerNas)  # no engine needed: only the path mapping
    nas.pid = 4242
    assert nas.host_path("/var/run/tgtd/socket.1200") == Path("/proc/4242/root/run/tgtd/socket.1200")
    assert nas.host_path("/srv/x") == Path("/proc/4242/root/srv/x")


def test_docker_image_is_named_by_its_recipe() -> None:
    from testbed.nas import container

    tag = container.image_tag()
    assert tag.startswith("netswap-nas:") and len(tag.split(":")[1]) == 16
    recipe = container.recipe_path().read_text()
    assert "netbase" in recipe and "nfs-ganesha-vfs" in recipe


def test_the_docker_recipe_is_not_taken_for_a_vm_image() -> None:
    from testbed.images.recipe import load_recipe, recipe_names

    assert recipe_names() == ["client", "nas"]  # `testbed image build all` builds VM images only
    for name in recipe_names():
        assert load_recipe(name).kernel.package
