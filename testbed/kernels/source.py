"""A kernel reference made into a prepared kernel: its image, its .config and its modules with a
modules.dep, in the cache (cache_dir/kernels/<key>/), complete once its manifest exists.

Debian kernels are fetched by package and version (a suite is resolved to its newest package first);
a `path:` kernel is copied in, keyed by the hash of its image, config and modules, so a rebuilt tree is
a new kernel and an unchanged one is found again (bisection steps)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testbed.host import proc
from testbed.errors import TestbedError
from testbed.images import kmods
from testbed.kernels import debian
from testbed.kernels.ref import SUITES, KernelRef, kernel_image, release_moddir
from testbed.host.paths import cache_dir

Say = Callable[[str], None]


@dataclass(frozen=True)
class KernelTree:
    """A prepared kernel. `release` is its `uname -r`; `source` says where it came from (kind debian:
    package and version, and the suite it was resolved from; kind path: the folder and the hashes of its
    config and of the whole tree); `key` names its cache folder and goes into the image's hash."""

    key: str
    release: str
    ref: str
    source: dict[str, Any] = field(default_factory=dict)
    dir: str = ""

    @property
    def vmlinuz(self) -> Path:
        return Path(self.dir) / "vmlinuz"

    @property
    def config(self) -> Path:
        return Path(self.dir) / "config"

    @property
    def base(self) -> Path:
        """The folder whose lib/modules/<release> holds the modules (depmod -b's base)."""
        return Path(self.dir)

    @property
    def moddir(self) -> Path:
        return Path(self.dir) / "lib/modules" / self.release

    @property
    def package(self) -> str:
        """How image manifests and verdicts name it: package=version, or path (config sha256)."""
        s = self.source
        if s.get("kind") == "debian":
            return f"{s['package']}={s['version']}"
        return f"{s.get('path')} (config sha256 {str(s.get('config_sha256'))[:12]})"


def kernels_dir() -> Path:
    return cache_dir() / "kernels"


def _read(folder: Path) -> KernelTree | None:
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return None
    tree = KernelTree(**{**json.loads(manifest.read_text()), "dir": str(folder)})
    if not (tree.vmlinuz.is_file() and tree.config.is_file() and (tree.moddir / "modules.dep").is_file()):
        return None
    return tree


def prepare(ref: KernelRef, default: tuple[str, str], say: Say, default_suite: str = "") -> KernelTree:
    """The prepared kernel `ref` names; `default` is the recipe's pinned (package, version), found in
    `default_suite` (the recipe's suite: only its index is read). A named package is looked up in every
    suite; a suite reference in its own."""
    if ref.kind == "path":
        return _prepare_path(ref, say)
    if ref.kind == "default":
        package, version = default
        origin: dict[str, Any] = {"pinned_by": "recipe"}
        suites: tuple[str, ...] = (default_suite,) if default_suite in SUITES else ()
    elif ref.kind == "suite":
        package, version = debian.resolve_suite(ref.suite, say)
        origin = {"suite": ref.suite}
        suites = (ref.suite,)
    else:
        package, version = ref.package, ref.version
        origin = {}
        suites = ()
    key = f"deb-{package}_{version}".replace(":", "%")
    source = {"kind": "debian", "package": package, "version": version, **origin}
    return _prepared(key, str(ref), source, say, lambda tmp: _unpack_deb(package, version, tmp, say, suites))


def _prepared(key: str, ref: str, source: dict[str, Any], say: Say, fill: Callable[[Path], str]) -> KernelTree:
    """The cache entry `key`, made by `fill(tmp)` (which returns the release) when it is missing; one maker
    at a time per key. The source recorded is this lookup's (a suite resolved today), the files the key's."""
    found = _read(kernels_dir() / key)
    if found:
        return KernelTree(key=found.key, release=found.release, ref=ref, source=source, dir=found.dir)
    kernels_dir().mkdir(parents=True, exist_ok=True)
    with open(kernels_dir() / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _read(kernels_dir() / key)
        if found is None:
            tmp = kernels_dir() / f".tmp-{key}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            try:
                release = fill(tmp)
                say(f"kernels: {release}: decompressing modules")
                decompress_tree(tmp / "lib/modules" / release)
                proc.run(["depmod", "-b", str(tmp), release], timeout=300)
                data = {"key": key, "release": release, "ref": ref, "source": source}
                (tmp / "manifest.json").write_text(json.dumps(data, indent=2) + "\n")
                final = kernels_dir() / key
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            found = _read(kernels_dir() / key)
            if found is None:
                raise TestbedError(f"kernel {ref}: prepared folder {kernels_dir() / key} is incomplete")
    return KernelTree(key=found.key, release=found.release, ref=ref, source=source, dir=found.dir)


def decompress_tree(moddir: Path) -> int:
    """Every compressed module under moddir made plain (.ko.xz/.ko.zst/.ko.gz -> .ko): the host's depmod may
    not read them all (Debian 12's kmod has no zlib: it leaves .ko.gz out of modules.dep without a word),
    and the images hold plain modules anyway. Returns how many were decompressed."""
    n = 0
    for dirpath, _, files in os.walk(moddir):
        for name in files:
            if name.endswith(kmods.COMPRESSED):
                src = Path(dirpath) / name
                dst = Path(dirpath) / kmods.plain_name(name)
                dst.write_bytes(kmods.read_module(src))
                shutil.copystat(src, dst)
                src.unlink()
                n += 1
    return n


def _unpack_deb(package: str, version: str, tmp: Path, say: Say, suites: tuple[str, ...]) -> str:
    deb = debian.download(package, version, tmp / "deb", say, suites)
    unpacked = tmp / "unpacked"
    proc.run(["dpkg-deb", "-x", str(deb), str(unpacked)], timeout=600)
    shutil.rmtree(tmp / "deb")
    found = [p for base in ("lib/modules", "usr/lib/modules") if (unpacked / base).is_dir()
             for p in sorted((unpacked / base).iterdir()) if p.is_dir()]
    if len(found) != 1:
        raise TestbedError(f"{package} {version}: expected one lib/modules/<release> in the package, found "
                           f"{[p.name for p in found]}")
    release = found[0].name
    for name, dest in ((f"vmlinuz-{release}", "vmlinuz"), (f"config-{release}", "config")):
        src = unpacked / "boot" / name
        if not src.is_file():
            raise TestbedError(f"{package} {version}: the package has no /boot/{name}")
        os.rename(src, tmp / dest)
    (tmp / "lib/modules").mkdir(parents=True)
    os.rename(found[0], tmp / "lib/modules" / release)
    shutil.rmtree(unpacked)
    return release


_hashed: dict[tuple[Any, ...], tuple[str, str]] = {}  # per process: a matrix's cases hash a tree once


def _module_files(moddir: Path) -> list[Path]:
    """Every module-tree file, through symlinked folders too (the top-level build/source links point
    into the source tree and are no part of the kernel)."""
    out = []
    for dirpath, dirnames, files in os.walk(moddir, followlinks=True):
        if Path(dirpath) == moddir:
            dirnames[:] = [d for d in dirnames if d not in ("build", "source")]
        out += [Path(dirpath) / f for f in files if not f.startswith("modules.")]
    return sorted(out)


def _hash_path_kernel(folder: Path, moddir: Path) -> tuple[str, str]:
    """(sha256 of the whole tree: image, config, every module file; sha256 of .config)."""
    image = kernel_image(folder)
    assert image is not None
    files = _module_files(moddir)
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in (image, folder / ".config", *files))
    if stamp not in _hashed:
        _hashed[stamp] = _hash_tree(folder, image, moddir, files)
    return _hashed[stamp]


def _hash_tree(folder: Path, image: Path, moddir: Path, files: list[Path]) -> tuple[str, str]:
    h = hashlib.sha256()
    config = (folder / ".config").read_bytes()
    for label, data in (("image", image.read_bytes()), ("config", config)):
        h.update(f"{label} {len(data)}\n".encode())
        h.update(data)
    for p in files:
        h.update(f"module {p.relative_to(moddir).as_posix()}\n".encode())
        h.update(p.read_bytes())
    return h.hexdigest(), hashlib.sha256(config).hexdigest()


def _prepare_path(ref: KernelRef, say: Say) -> KernelTree:
    folder = Path(ref.path)
    moddir = release_moddir(folder)
    assert moddir is not None  # parse() checked there is one
    say(f"kernels: hashing {folder}")
    tree_sha, config_sha = _hash_path_kernel(folder, moddir)
    key = f"path-{tree_sha[:16]}"
    source = {"kind": "path", "path": str(folder), "release": moddir.name, "config_sha256": config_sha,
              "tree_sha256": tree_sha}

    def fill(tmp: Path) -> str:
        image = kernel_image(folder)
        assert image is not None
        shutil.copy2(image, tmp / "vmlinuz")
        shutil.copy2(folder / ".config", tmp / "config")
        # The top-level build and source links point into the user's tree: not copied; other links are
        # followed (the copy must not depend on the user's folder staying as it is).
        shutil.copytree(moddir, tmp / "lib/modules" / moddir.name, symlinks=False,
                        ignore=lambda d, names: [n for n in names if Path(d) == moddir and n in ("build", "source")])
        return moddir.name

    return _prepared(key, str(ref), source, say, fill)


def stale() -> list[Path]:
    """Temporary folders of makers that died, and copies of path kernels whose folder is gone (a bisection
    step's build, removed), when no run is using them. A copy whose folder is still there is a cache (the
    same tree is found again without copying), and Debian kernels cost a download: both stay."""
    root = kernels_dir()
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.iterdir()):
        if p.name.startswith(".tmp-"):
            pid = p.name.rsplit("-", 1)[-1]
            if not (pid.isdigit() and os.path.exists(f"/proc/{pid}")):
                out.append(p)
        elif p.name.startswith("path-") and p.is_dir() and not _source_exists(p) and not _in_use(p):
            out.append(p)
    return out


def _source_exists(entry: Path) -> bool:
    try:
        source = json.loads((entry / "manifest.json").read_text()).get("source", {})
    except (OSError, ValueError):
        return False
    return bool(source.get("path")) and Path(source["path"]).is_dir()


@contextlib.contextmanager
def holding(tree: KernelTree) -> Iterator[None]:
    """A shared hold on a prepared kernel while an image is built from it: `testbed clean` leaves it alone."""
    lock = kernels_dir() / f"{tree.key}.lock"
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        yield


def _in_use(entry: Path) -> bool:
    """A prepared kernel a live run holds (its lock taken: being made, or its image being built from it)."""
    lock = entry.with_name(entry.name + ".lock")
    if not lock.exists():
        return False
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def remove(entry: Path) -> None:
    """Remove a prepared kernel under its lock (the lock file itself stays: a new one on another inode
    would let two makers in at once)."""
    lock = entry.with_name(entry.name + ".lock")
    if not lock.exists():
        shutil.rmtree(entry, ignore_errors=True)
        return
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return  # taken meanwhile: in use
        shutil.rmtree(entry, ignore_errors=True)


def describe(tree: KernelTree) -> dict[str, Any]:
    d = asdict(tree)
    d.pop("dir")
    return d
