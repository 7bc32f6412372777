"""A kernel reference made into a prepared kernel: its image, its .config and its modules with a
modules.dep, in the cache (cache_dir/kernels/<key>/), complete once its manifest exists.

Debian kernels are fetched by package and version (a suite is resolved to its newest package first);
a `path:` kernel is copied in, keyed by the hash of its image, config and modules, so a rebuilt tree is
a new kernel and an unchanged one is found again (bisection steps)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testbed import proc
from testbed.errors import TestbedError
from testbed.kernels import debian
from testbed.kernels.ref import KernelRef, kernel_image, module_dirs
from testbed.paths import cache_dir

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


def prepare(ref: KernelRef, default: tuple[str, str], say: Say) -> KernelTree:
    """The prepared kernel `ref` names; `default` is the recipe's pinned (package, version)."""
    if ref.kind == "path":
        return _prepare_path(ref, say)
    if ref.kind == "default":
        package, version = default
        origin: dict[str, Any] = {"pinned_by": "recipe"}
    elif ref.kind == "suite":
        package, version = debian.resolve_suite(ref.suite, say)
        origin = {"suite": ref.suite}
    else:
        package, version = ref.package, ref.version
        origin = {}
    key = f"deb-{package}_{version}".replace(":", "%")
    source = {"kind": "debian", "package": package, "version": version, **origin}
    return _prepared(key, str(ref), source, say, lambda tmp: _unpack_deb(package, version, tmp, say))


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


def _unpack_deb(package: str, version: str, tmp: Path, say: Say) -> str:
    deb = debian.download(package, version, tmp / "deb", say)
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


def _hash_path_kernel(folder: Path, moddir: Path) -> tuple[str, str]:
    """(sha256 of the whole tree: image, config, every module file; sha256 of .config)."""
    h = hashlib.sha256()
    image = kernel_image(folder)
    assert image is not None
    config = (folder / ".config").read_bytes()
    for label, data in (("image", image.read_bytes()), ("config", config)):
        h.update(f"{label} {len(data)}\n".encode())
        h.update(data)
    for p in sorted(moddir.rglob("*")):
        if p.is_file() and not p.is_symlink() and not p.name.startswith("modules."):
            h.update(f"module {p.relative_to(moddir).as_posix()}\n".encode())
            h.update(p.read_bytes())
    return h.hexdigest(), hashlib.sha256(config).hexdigest()


def _prepare_path(ref: KernelRef, say: Say) -> KernelTree:
    folder = Path(ref.path)
    (moddir,) = module_dirs(folder)  # parse() checked there is exactly one
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
        # Symlinks (build, source) point into the user's tree: not needed, not followed.
        shutil.copytree(moddir, tmp / "lib/modules" / moddir.name, symlinks=True,
                        ignore=shutil.ignore_patterns("build", "source"))
        return moddir.name

    return _prepared(key, str(ref), source, say, fill)


def stale() -> list[Path]:
    """Temporary folders of makers that died, and path kernels' copies (their images are built from them
    once; a later run copies the tree in again in seconds). Debian kernels stay: they cost a download."""
    root = kernels_dir()
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.iterdir()):
        if p.name.startswith(".tmp-"):
            pid = p.name.rsplit("-", 1)[-1]
            if not (pid.isdigit() and os.path.exists(f"/proc/{pid}")):
                out.append(p)
        elif p.name.startswith("path-") and p.is_dir():
            out.append(p)
    return out


def describe(tree: KernelTree) -> dict[str, Any]:
    d = asdict(tree)
    d.pop("dir")
    return d
