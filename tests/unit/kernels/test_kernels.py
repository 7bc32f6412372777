"""Kernel references, the archive's answers (recorded), the config check (a recorded Debian config,
edited as a user's would be), path kernels' folders, and images keyed by kernel."""

import gzip
import shutil
from pathlib import Path

import pytest

from testbed.config.scenario import load_scenario
from testbed.errors import ConfigError, KernelError
from testbed.images.kmods import plain_name, read_module, select
from testbed.kernels import debian, kconfig, preflight
from testbed.kernels.ref import KernelRef, module_dirs, parse, slug

FIX = Path(__file__).parent.parent.parent / "fixtures" / "kernels"
REPO = Path(__file__).parent.parent.parent.parent


def debian_config() -> dict[str, str]:
    return kconfig.parse_config(gzip.decompress((FIX / "config-6.1.0-50-amd64.gz").read_bytes()).decode())


def make_path_kernel(root: Path, config_text: str) -> Path:
    """The layout `make bzImage modules && make modules_install INSTALL_MOD_PATH=<dir>/modules` leaves."""
    root.mkdir(parents=True)
    (root / "bzImage").write_bytes(b"MZ kernel image stand-in: the folder checks read no byte of it")
    (root / ".config").write_text(config_text)
    mods = root / "modules/lib/modules/6.1.0-test/kernel/fs/nfs"
    mods.mkdir(parents=True)
    (mods / "nfs.ko").write_bytes(b"\x7fELF")
    return root


@pytest.mark.parametrize("text,want", [
    ("default", KernelRef("default")),
    ("debian:bullseye", KernelRef("suite", suite="bullseye")),
    ("debian:bookworm-backports", KernelRef("suite", suite="bookworm-backports")),
    ("debian:linux-image-6.1.0-9-amd64=6.1.27-1", KernelRef("package", package="linux-image-6.1.0-9-amd64", version="6.1.27-1")),
    ("debian:linux-image-6.12.118+deb13-amd64=6.12.118-1", KernelRef("package", package="linux-image-6.12.118+deb13-amd64", version="6.12.118-1")),
])
def test_references_parse(text: str, want: KernelRef) -> None:
    assert parse(text, "s.yaml", "client.kernel") == want
    assert str(want) == text


@pytest.mark.parametrize("text,says", [
    ("debian:potato", "unknown Debian suite 'potato'"),
    ("debian:linux-headers-6.1=1", "not a Debian linux-image-* package"),
    ("debian:linux-image-6.1.0-9-amd64=", "not a Debian package version"),
    ("vmlinuz", "want default, debian:<suite>"),
    ("path:", "path: needs a folder"),
    ("path:/no/such/kernel/dir", "is not a folder"),
])
def test_bad_references_name_the_field(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(text, "s.yaml", "client.kernel")
    assert str(e.value).startswith("s.yaml: client.kernel: ") and says in str(e.value)


def test_path_kernel_layouts(tmp_path: Path) -> None:
    k = make_path_kernel(tmp_path / "k", "CONFIG_NFS_FS=m\n")
    ref = parse(f"path:{k}", "s.yaml", "client.kernel")
    assert ref.kind == "path" and ref.path == str(k)
    assert [p.name for p in module_dirs(k)] == ["6.1.0-test"]
    (k / ".config").unlink()
    with pytest.raises(KernelError, match="no .config"):
        parse(f"path:{k}", "s.yaml", "client.kernel")
    (k / ".config").write_text("")
    (k / "bzImage").rename(k / "vmlinuz")  # either name will do
    parse(f"path:{k}", "s.yaml", "client.kernel")
    shutil.rmtree(k / "modules")
    with pytest.raises(KernelError, match="modules_install"):
        parse(f"path:{k}", "s.yaml", "client.kernel")


def test_slugs_for_case_ids() -> None:
    assert slug("debian:bullseye") == "bullseye"
    assert slug("debian:linux-image-6.1.0-9-amd64=6.1.27-1") == "6.1.27-1"
    assert slug("path:/src/linux/out-v6.2") == "path-out-v6.2"


def test_newest_kernel_per_suite_from_recorded_madison() -> None:
    triples = debian.parse_madison((FIX / "madison-linux-image-amd64.txt").read_text())
    assert ("5.10.262-1", "debian-security", "bullseye-security") in triples
    # A stable suite's newest kernel is in -security, not in the release itself.
    assert debian.newest_in_suite(triples, "bullseye") == "5.10.262-1"
    assert debian.newest_in_suite(triples, "bookworm") == "6.1.192-2"
    assert debian.newest_in_suite(triples, "trixie") == "6.12.118-1"
    assert debian.newest_in_suite(triples, "bookworm-backports") == "6.12.95-1~bpo12+1"
    assert debian.newest_in_suite(triples, "sid") == "7.2.13-1"
    assert debian.newest_in_suite([t for t in triples if t[2] != "sid"], "sid") is None


def test_version_order_is_debians() -> None:
    triples = [("6.1.99-1", "debian", "bookworm"), ("6.1.100-1", "debian", "bookworm"),
               ("6.1.100-1~bpo", "debian", "bookworm-updates")]
    assert debian.newest_in_suite(triples, "bookworm") == "6.1.100-1"  # not the string order's 6.1.99


def test_metapackage_dependency() -> None:
    show = ("Package: linux-image-amd64\nVersion: 6.12.118-1\n"
            "Depends: linux-image-6.12.118+deb13-amd64 (= 6.12.118-1)\nDescription: Linux for 64-bit PCs (meta-package)\n")
    assert debian.image_dependency(show) == ("linux-image-6.12.118+deb13-amd64", "6.12.118-1")
    assert debian.image_dependency("Package: x\n") is None


def test_config_parse() -> None:
    cfg = kconfig.parse_config('CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D="text"\nCONFIG_E=7\n')
    assert cfg == {"CONFIG_A": "y", "CONFIG_B": "m", "CONFIG_D": '"text"', "CONFIG_E": "7"}
    assert kconfig.Need("CONFIG_B", "x").met(cfg) and not kconfig.Need("CONFIG_C", "x").met(cfg)
    assert kconfig.Need("CONFIG_C", "x", ("CONFIG_A",)).met(cfg)
    assert not kconfig.Need("CONFIG_E", "x").met(cfg)  # a number is no feature switch


def scenario(*sets: str):
    return load_scenario(REPO / "scenarios/nfs-swap.yaml", list(sets)).scenario


@pytest.mark.parametrize("sets,option", [
    ((), "CONFIG_NFS_SWAP"),
    (("storage.nfs.version=4.2",), "CONFIG_NFS_V4_2"),
    (("storage.protocol=iscsi",), "CONFIG_ISCSI_TCP"),
    (("storage.protocol=aoe",), "CONFIG_ATA_OVER_ETH"),
    (("faults=[{kind: ipsec}]",), "CONFIG_XFRM_USER"),
])
def test_debian_config_has_what_scenarios_need_and_an_edit_is_refused(sets, option) -> None:
    sc = scenario(*sets)
    needs = preflight.client_needs(sc)
    assert option in {n.option for n in needs}
    cfg = debian_config()
    kconfig.check(cfg, needs, "s.yaml", "client.kernel", "kernel default")  # the recipe's kernel passes
    edited = {k: v for k, v in cfg.items() if k != option}
    with pytest.raises(KernelError) as e:
        kconfig.check(edited, needs, "s.yaml", "client.kernel", "kernel path:/k (6.1.0-test)")
    assert str(e.value).startswith(f"s.yaml: client.kernel: kernel path:/k (6.1.0-test) lacks {option} (needed: ")
    assert e.value.exit_code == 3


def test_nfs_file_workload_needs_no_nfs_swap() -> None:
    sc = scenario("workload.kind=write")
    assert "CONFIG_NFS_SWAP" not in {n.option for n in preflight.client_needs(sc)}


def test_path_kernel_without_nfs_swap_is_refused_before_any_image(tmp_path: Path, monkeypatch) -> None:
    """The acceptance's fixture: a path kernel whose .config (a Debian one, edited) lacks CONFIG_NFS_SWAP.
    prepare() copies it into a cache of its own and refuses it with the option named; nothing boots."""
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path / "cache"))
    text = gzip.decompress((FIX / "config-6.1.0-50-amd64.gz").read_bytes()).decode()
    assert "CONFIG_NFS_SWAP=y" in text
    k = make_path_kernel(tmp_path / "k", text.replace("CONFIG_NFS_SWAP=y", "# CONFIG_NFS_SWAP is not set"))
    sc = scenario(f"client.kernel=path:{k}", "nas.backend=netns")
    with pytest.raises(KernelError, match=r"client.kernel: kernel path:.* \(6.1.0-test\) lacks CONFIG_NFS_SWAP"):
        preflight.prepare(sc, sc.path, lambda m: None)
    assert not (tmp_path / "cache/images").exists()  # refused before an image was built,
    assert not (tmp_path / "cache/kernels").exists()  # and before the tree was copied in


def test_nas_kernel_only_for_a_nas_vm() -> None:
    with pytest.raises(ConfigError, match="nas.kernel: the netns NAS runs on the host's kernel"):
        scenario("nas.backend=netns", "nas.kernel=debian:trixie")
    assert scenario("nas.kernel=debian:trixie").nas.kernel == "debian:trixie"


def test_modules_lenient_for_other_kernels() -> None:
    deps = {"kernel/fs/ext4/ext4.ko.xz": []}
    missing: list[str] = []
    assert select(deps, ["ext4", "af_key", "kernel/crypto/"], set(), "r.yaml", missing) == ["kernel/fs/ext4/ext4.ko.xz"]
    assert missing == ["af_key", "kernel/crypto/"]
    with pytest.raises(ConfigError, match="af_key"):
        select(deps, ["af_key"], set(), "r.yaml")


def test_compressed_modules_are_installed_plain(tmp_path: Path) -> None:
    import lzma
    elf = b"\x7fELF" + bytes(range(200))
    (tmp_path / "m.ko.xz").write_bytes(lzma.compress(elf, format=lzma.FORMAT_XZ))
    assert read_module(tmp_path / "m.ko.xz") == elf
    assert plain_name("kernel/net/m.ko.xz") == "kernel/net/m.ko" and plain_name("a/b.ko") == "a/b.ko"


def test_closest_kernel_to_one_the_mirror_lost() -> None:
    triples = debian.parse_madison((FIX / "madison-linux-image-amd64.txt").read_text())
    assert debian.closest(triples, "6.1.153-1")[0] == "6.1.176-1"  # same series, the oldest above
    assert debian.closest(triples, "6.1.180-1")[0] == "6.1.176-1"  # same series, the newest not above
    assert debian.closest(triples, "6.12.200-1")[0] == "6.12.118-1"
    assert debian.closest(triples, "4.19.1-1")[0] == "5.10.223-1"  # no 4.19 any more: the oldest there is


def bzimage(release: str) -> bytes:
    """An x86 boot-protocol header whose kernel_version points at `release` (as `make bzImage` writes it)."""
    head = bytearray(0x1000)
    head[0x202:0x206] = b"HdrS"
    text = f"{release} (builder@host) #1 SMP PREEMPT_DYNAMIC".encode() + b"\0"
    head[0x20E:0x210] = (0x600 - 0x200).to_bytes(2, "little")
    head[0x600:0x600 + len(text)] = text
    return bytes(head)


def test_the_release_a_kernel_image_carries(tmp_path: Path) -> None:
    from testbed.kernels.ref import image_release

    image = tmp_path / "bzImage"
    image.write_bytes(bzimage("6.2.0-rc1-g1234"))  # a setup header as the boot protocol lays it out
    assert image_release(image) == "6.2.0-rc1-g1234"
    image.write_bytes(b"\0" * 0x400)  # no HdrS magic: not a bzImage
    assert image_release(image) is None
    assert image_release(tmp_path / "missing") is None
    for p in Path.home().glob(".cache/netswap-testbed/kernels/deb-*/vmlinuz"):  # the real ones, where cached
        assert image_release(p) == p.parent.name.split("_")[0].removeprefix("deb-linux-image-")


def test_a_reused_install_mod_path_picks_the_image_s_release(tmp_path: Path) -> None:
    from testbed.kernels.ref import release_moddir

    k = make_path_kernel(tmp_path / "k", "")
    (k / "modules/lib/modules/6.2.0-rc1-g1234/kernel").mkdir(parents=True)
    (k / "bzImage").write_bytes(bzimage("6.2.0-rc1-g1234"))
    assert release_moddir(k).name == "6.2.0-rc1-g1234"
    parse(f"path:{k}", "s.yaml", "client.kernel")
    (k / "bzImage").write_bytes(bzimage("6.3.0"))
    with pytest.raises(KernelError, match="several module releases .* none is the release bzImage carries"):
        parse(f"path:{k}", "s.yaml", "client.kernel")


def test_scenario_validation_does_not_look_at_the_kernel_folder() -> None:
    """A case folder read back after its kernel tree is gone still parses; the folder is checked before boot."""
    sc = scenario("client.kernel=path:/gone/linux-build")
    assert sc.client.kernel == "path:/gone/linux-build"
    with pytest.raises(KernelError, match="is not a folder"):
        preflight.prepare(sc, sc.path, lambda m: None)


def test_oops_patterns_are_the_kernel_s_own_lines() -> None:
    from testbed.monitor.console import scan_line

    assert [n for n, _ in scan_line("[ 12.5] traps: tb-work[131] general protection fault ip:401000")] == []
    assert [n for n, _ in scan_line("[ 61.2] general protection fault, probably for non-canonical address")] == ["oops"]
    assert [n for n, _ in scan_line("[ 61.2] RIP: 0010:kmem_cache_alloc_node_noprof+0x6e/0x310")] == ["oops-rip"]


def test_clean_keeps_path_kernel_copies_whose_folder_is_there(tmp_path: Path, monkeypatch) -> None:
    """A copy is a cache while its folder exists (a rerun finds it); once the folder is gone it is stale."""
    import json

    from testbed.kernels import source

    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path / "cache"))
    k = tmp_path / "build"
    k.mkdir()
    entry = source.kernels_dir() / "path-0123456789abcdef"
    entry.mkdir(parents=True)
    (entry / "manifest.json").write_text(json.dumps({"key": entry.name, "release": "6.1.0-test", "ref": f"path:{k}",
                                                     "source": {"kind": "path", "path": str(k)}}))
    dead = source.kernels_dir() / ".tmp-path-feed-999999999"
    dead.mkdir()
    assert source.stale() == [dead]
    k.rmdir()
    assert source.stale() == [dead, entry]


# apt-get update's own words for a suite whose Release file has expired (seen on a trixie host, 2026-12-07)
EXPIRED = ("E: Release file for http://deb.debian.org/debian/dists/sid/InRelease is expired (invalid since 2d 3h 5min"
           " 8s). Updates for this repository will not be applied.")


class FakeApt:
    """apt-get as the archive answered: `update` fails for the suites in `broken` with apt's recorded
    error; `download` leaves a .deb where the package is in that suite's lists."""

    def __init__(self, broken: set[str], has: dict[str, str]):
        self.broken, self.has, self.calls = broken, has, []

    def __call__(self, argv, cwd=None, **kw):
        from testbed.errors import CommandError

        src = next(a.split("=", 1)[1] for a in argv if a.startswith("Dir::Etc::SourceList="))
        suite = Path(src).parent.name
        self.calls.append((suite, argv[-1] if argv[-1] == "update" else argv[-2]))
        if argv[-1] == "update":
            if suite in self.broken:
                raise CommandError(argv, 100, "", "Hit:1 http://deb.debian.org/debian sid InRelease\n" + EXPIRED)
            return None
        package = argv[-1]
        if self.has.get(package.split("=")[0]) == suite:
            (Path(cwd) / (package.replace("=", "_") + "_amd64.deb")).write_bytes(b"!<arch>\n")
            return None
        raise CommandError(argv, 100, "", f"E: Version '{package.split('=')[1]}' for '{package.split('=')[0]}' was not found")


def test_each_suite_has_its_own_apt_state_and_an_unreadable_one_is_named(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path))
    apt = FakeApt({"sid"}, {"linux-image-6.1.0-50-amd64": "bookworm"})
    monkeypatch.setattr(debian.proc, "run", apt)
    said: list[str] = []
    # the default kernel: only its own suite is read
    deb = debian.download("linux-image-6.1.0-50-amd64", "6.1.176-1", tmp_path / "d", said.append, ("bookworm",))
    assert deb.name.startswith("linux-image-6.1.0-50-amd64_") and [c[0] for c in apt.calls] == ["bookworm", "bookworm"]
    assert "bookworm-security" in (tmp_path / "apt/bookworm/sources.list").read_text()
    assert "sid" not in (tmp_path / "apt/bookworm/sources.list").read_text()
    # a suite whose index cannot be read: named, with apt's reason, and not fatal for the others
    with pytest.raises(debian.SuiteUnreadable, match=r"debian:sid: its package index could not be read \(E: Release file"):
        debian.refresh("sid", said.append)
    # a named package is looked up in every suite, in order: sid is said and skipped on the way
    apt.has["linux-image-6.12.95+bpo-amd64"] = "bookworm-backports"
    apt.calls.clear()
    deb = debian.download("linux-image-6.12.95+bpo-amd64", "6.12.95-1~bpo12+1", tmp_path / "e", said.append)
    assert deb.exists()
    assert [s for s, what in apt.calls if what != "update"] == ["bullseye", "bookworm", "trixie", "bookworm-backports"]
    assert ("sid", "update") in apt.calls and any(s.startswith("kernels: debian:sid:") and "expired" in s for s in said)


def test_a_failed_update_with_older_lists_goes_on_and_no_index_at_all_is_an_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path))
    apt = FakeApt(set(), {})
    monkeypatch.setattr(debian.proc, "run", apt)
    said: list[str] = []
    debian.refresh("trixie", said.append)
    stamp = tmp_path / "apt/trixie/updated"
    import os
    os.utime(stamp, (0, 0))  # older than LISTS_MAX_AGE_S
    apt.broken = {"trixie"}
    assert debian.refresh("trixie", said.append) == tmp_path / "apt/trixie"
    assert "going on with its package lists of" in said[-1] and "E: Release file" in said[-1]
    apt.broken = set(debian.SUITES)  # nothing readable, nothing cached: the error names them
    for suite in debian.SUITES:
        (tmp_path / "apt" / suite / "updated").unlink(missing_ok=True)
    with pytest.raises(Exception, match="no package index could be read: debian:bullseye"):
        debian.download("linux-image-x", "1", tmp_path / "f", said.append)
