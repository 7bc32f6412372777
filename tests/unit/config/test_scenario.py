import subprocess
import sys
from pathlib import Path

import pytest

from testbed.config.scenario import load_scenario
from testbed.errors import ConfigError

REPO = Path(__file__).parents[3]
FIX = REPO / "tests/fixtures/scenarios"

BROKEN = {
    "bad-unknown-key.yaml": "storage.nfs.verison: unknown field",
    "bad-type.yaml": "client.mem_mb: must be an integer",
    "bad-missing-node.yaml": "links[1].node: no node named 'nsa'",
    "bad-mem.yaml": "client.mem_mb: 48 MB is below 80 MB",
    "bad-swap-too-big.yaml": "storage.swap_mb: 1024 MB does not fit the NAS export",
    "bad-nfs-version.yaml": "storage.nfs.version: must be one of 3, 4.0, 4.1, 4.2",
    "bad-yaml.yaml": "line 3: not valid YAML",
    "bad-iscsi-lun-small.yaml": "storage.iscsi.lun_mb: the LUN (128 MB) is smaller than the requested swap (256 MB)",
    "bad-aoe-clash.yaml": "storage.aoe.shelf: 65535 clashes",
    "bad-transport.yaml": "storage.nfs.transport: udp: unsupported by this guest kernel",
}


@pytest.mark.parametrize("name,message", sorted(BROKEN.items()))
def test_broken_files_name_file_and_field(name: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_scenario(FIX / name)
    assert message in str(e.value)
    assert ".yaml" in str(e.value).split(":")[0]


def test_validate_cli_gives_one_line_per_broken_file() -> None:
    files = [str(FIX / n) for n in sorted(BROKEN)]
    cp = subprocess.run([sys.executable, "-m", "testbed", "validate", *files], capture_output=True, text=True, cwd=REPO)
    assert cp.returncode == 3
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == len(BROKEN)
    assert all(line.startswith("testbed: error: ") for line in lines)


def test_shipped_scenarios_validate() -> None:
    files = sorted(str(p) for p in (REPO / "scenarios").rglob("*.yaml") if "matrix" not in p.parts)
    assert files
    for f in files:
        load_scenario(Path(f))


def test_defaults_and_overrides() -> None:
    ls = load_scenario(REPO / "scenarios/nfs-swap.yaml", ["storage.nfs.version=4.2", "client.mem_mb=160"])
    sc = ls.scenario
    assert sc.storage.nfs.version == "4.2"
    assert sc.client.mem_mb == 160
    assert sc.workload.total_mb(sc.client.mem_mb) >= 1.5 * 160
    assert ls.topology.node_for("nas") == "nas"
    assert ls.raw["storage"]["nfs"]["version"] == 4.2


def test_override_of_unknown_field_is_named() -> None:
    with pytest.raises(ConfigError, match=r"--set storage.nfs.versoin=3.*storage.nfs.versoin: unknown field"):
        load_scenario(REPO / "scenarios/nfs-swap.yaml", ["storage.nfs.versoin=3"])


def test_udp_is_refused_at_validate_time() -> None:
    with pytest.raises(ConfigError, match="storage.nfs.transport: udp: unsupported by this guest kernel"):
        load_scenario(REPO / "scenarios/nfs-swap.yaml", ["storage.nfs.transport=udp"])


def test_workload_must_fit_ram_plus_swap() -> None:
    with pytest.raises(ConfigError, match="workload.ratio_to_ram.*raise storage.swap_mb"):
        load_scenario(REPO / "scenarios/nfs-swap.yaml", ["workload.ratio_to_ram=4"])


def test_unknown_fault_kind() -> None:
    with pytest.raises(ConfigError, match=r"faults\[0\].kind: must be one of client-freeze, competing-traffic"):
        load_scenario(REPO / "scenarios/nfs-swap.yaml", ["faults=[{kind: meteor, at_s: 1}]"])


def test_iscsi_below_128_mb_runs_with_a_warning() -> None:
    """Refuse only what cannot be set up: iscsid's OOM kill below 128 MB is the answer such a case gives."""
    sc = load_scenario(REPO / "scenarios/iscsi-swap.yaml", ["client.mem_mb=96"]).scenario
    assert sc.warnings() == ("client.mem_mb 96: below 128 MB iscsid (which locks ~10 MB) is expected to be OOM-killed "
                             "(verdict oom, iscsid the victim)",)
    assert load_scenario(REPO / "scenarios/iscsi-swap.yaml").scenario.warnings() == ()


def test_file_workloads_need_network_storage() -> None:
    with pytest.raises(ConfigError, match="workload.kind: write needs network storage"):
        load_scenario(REPO / "scenarios/controls/local-swap.yaml", ["workload.kind=write"])


def test_backing_size_follows_the_workload() -> None:
    sc = load_scenario(REPO / "scenarios/iscsi-write.yaml").scenario
    assert sc.backing_mb() >= sc.workload.total_mb(sc.client.mem_mb) * 9 // 8
    assert load_scenario(REPO / "scenarios/iscsi-swap.yaml").scenario.backing_mb() == 256


def test_set_a_sysctl_by_its_dotted_name() -> None:
    """`--set client.sysctl.vm.min_free_kbytes=8192` sets one sysctl (its name has dots) on top of the
    file's; `default` removes it; a list is refused, naming the field."""
    path = REPO / "scenarios/faults/link-cut.yaml"  # sets vm.min_free_kbytes itself
    sc = load_scenario(path, ["client.sysctl.vm.swappiness=100"]).scenario
    assert sc.client.sysctl == {"vm.min_free_kbytes": "8192", "vm.swappiness": "100"}
    assert load_scenario(path, ["client.sysctl.vm.min_free_kbytes=default"]).scenario.client.sysctl == {}
    with pytest.raises(ConfigError, match=r"client.sysctl.vm.swappiness: must be a plain value"):
        load_scenario(path, ["client.sysctl.vm.swappiness=[1]"])
