"""Issue 15 on a real guest: a `path:` kernel made of a Debian kernel package's files (the stand-in for
a user's build: bzImage, .config, modules/ as modules_install lays them out) boots a client that swaps
over NFS, and its verdict records where the kernel came from; the same folder with CONFIG_NFS_SWAP
edited out of its .config is refused before anything is built or booted (exit 3, naming the option),
and as a `--bisect` step it is a skip (125). The NAS is userspace (netns) to keep this short."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import check_judged, cli, leftovers

from testbed.images.recipe import load_recipe
from testbed.kernels import source
from testbed.kernels.ref import KernelRef

pytestmark = pytest.mark.system


def path_kernel_from_debian(dest: Path) -> Path:
    """The client recipe's Debian kernel package, unpacked (testbed/kernels/source.py fetches it), laid out
    as a build: as a path kernel it is a kernel of its own (keyed by its files), with an image of its own."""
    recipe = load_recipe("client")
    tree = source.prepare(KernelRef("default"), (recipe.kernel.package, recipe.kernel.version), lambda m: None,
                          recipe.suite)
    dest.mkdir(parents=True)
    shutil.copy2(tree.vmlinuz, dest / "bzImage")
    shutil.copy2(tree.config, dest / ".config")
    mods = dest / "modules/lib/modules" / tree.release
    shutil.copytree(tree.moddir, mods, ignore=shutil.ignore_patterns("modules.*"))  # as the build's own
    return dest


@pytest.mark.slow  # CI tier: the refusal below (no boot); this one boots a path kernel's image
def test_path_kernel_boots_and_is_recorded(tmp_path: Path, results: dict[str, str]) -> None:
    k = path_kernel_from_debian(tmp_path / "linux-6.1-build")
    cp = cli("run", "scenarios/nfs-swap.yaml", "--json", "--set", f"client.kernel=path:{k}",
             "--set", "nas.backend=netns", env=results)
    assert cp.stdout, cp.stderr[-3000:]
    case = json.loads(cp.stdout)["cases"][0]
    run = (Path(results["TESTBED_RESULTS"]) / "latest").resolve()
    check_judged(case, run / case["case"])
    assert case["kernel"].startswith("6.1.")
    ks = case["kernel_source"]
    assert ks["kind"] == "path" and ks["path"] == str(k) and ks["ref"] == f"path:{k}"
    assert len(ks["config_sha256"]) == 64 and len(ks["tree_sha256"]) == 64
    image = case["images"]["client"]
    assert image["kernel_ref"] == f"path:{k}" and "config sha256" in image["package"]  # its own image
    assert ks["running"] == case["kernel"]  # the guest's own `uname -r`


def test_path_kernel_without_nfs_swap_is_refused_before_boot(tmp_path: Path, results: dict[str, str]) -> None:
    k = path_kernel_from_debian(tmp_path / "no-nfs-swap")
    config = k / ".config"
    config.write_text(config.read_text().replace("CONFIG_NFS_SWAP=y", "# CONFIG_NFS_SWAP is not set"))
    before = set(Path(results["TESTBED_RESULTS"]).glob("*")) if Path(results["TESTBED_RESULTS"]).exists() else set()
    cp = cli("run", "scenarios/nfs-swap.yaml", "--set", f"client.kernel=path:{k}", env=results)
    assert cp.returncode == 3, cp.stderr
    line = cp.stderr.strip().splitlines()[-1]
    assert "client.kernel" in line and "lacks CONFIG_NFS_SWAP" in line
    assert set(Path(results["TESTBED_RESULTS"]).glob("*")) == before  # no run folder: nothing started
    cp = cli("run", "scenarios/nfs-swap.yaml", "--bisect", "--set", f"client.kernel=path:{k}", env=results)
    assert cp.returncode == 125 and "bisect: skip (125)" in cp.stdout
    assert leftovers() == []
