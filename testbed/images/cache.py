"""The image cache: one folder per (recipe name, recipe hash), complete only once its manifest exists.

A build writes into a hidden temporary folder and renames it into place as its last step, so an
interrupted build never leaves an entry that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testbed.host.paths import cache_dir


@dataclass(frozen=True)
class Image:
    name: str
    hash: str
    kernel_version: str
    kernel_package: str
    size_bytes: int
    built_at: str
    build_seconds: float
    dir: str
    recipe_hash: str = ""  # the recipe's part of `hash` (the kernel's is the other)
    kernel_ref: str = "default"  # as the scenario wrote it (testbed/kernels/ref.py)
    kernel_source: dict[str, Any] = field(default_factory=dict)  # package and version, or path and hashes
    missing_modules: list[str] = field(default_factory=list)  # recipe modules this kernel has not
    packages: dict[str, str] = field(default_factory=dict)  # the guest's packages and versions (dpkg-query -W)
    packages_hash: str = ""  # of `packages`: two images are the same guest when it matches

    @property
    def kernel(self) -> Path:
        return Path(self.dir) / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return Path(self.dir) / "initrd.img"

    @property
    def root(self) -> Path:
        return Path(self.dir) / "root.img"

    def write_manifest(self, folder: Path) -> None:
        data = asdict(self)
        data.pop("dir")
        (folder / "manifest.json").write_text(json.dumps(data, indent=2) + "\n")


def images_dir() -> Path:
    return cache_dir() / "images"


def entry_dir(name: str, digest: str) -> Path:
    return images_dir() / f"{name}-{digest}"


def read_entry(folder: Path) -> Image | None:
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return None
    data = json.loads(manifest.read_text())
    img = Image(dir=str(folder), **data)
    if not (img.kernel.is_file() and img.initrd.is_file() and img.root.is_file()):
        return None
    return img


def lookup(name: str, digest: str) -> Image | None:
    return read_entry(entry_dir(name, digest))


def all_entries() -> list[Image]:
    root = images_dir()
    if not root.is_dir():
        return []
    found = [read_entry(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return [i for i in found if i]


def remove_stale_temps() -> None:
    """Temporary folders of builds that were killed (not interrupted: those clean up themselves).
    A folder whose builder (the pid in its name) still runs is left alone."""
    root = images_dir()
    if root.is_dir():
        for p in root.glob(".tmp-*"):
            pid = p.name.rsplit("-", 1)[-1]
            if pid.isdigit() and os.path.exists(f"/proc/{pid}"):
                continue
            shutil.rmtree(p, ignore_errors=True)
