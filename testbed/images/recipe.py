"""Image recipes: what goes into a guest image, parsed strictly, and the hash that keys its cache entry."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from testbed.config.strict import from_dict, load_yaml
from testbed.errors import ConfigError, UsageError
from testbed.host.paths import repo_root

# The builder's own code decides the image too (init, module rules, layout): it is part of the hash.
BUILDER_SOURCES = ("build.py", "initramfs.py", "kmods.py", "recipe.py")


@dataclass(frozen=True)
class Kernel:
    package: str
    version: str

    def validate(self, source: str, path: str) -> None:
        if not self.package.startswith("linux-image-"):
            raise ConfigError(source, f"{path}.package", "must be a Debian linux-image-* package")


@dataclass(frozen=True)
class Recipe:
    name: str
    kernel: Kernel
    sources: tuple[str, ...]
    packages: tuple[str, ...]
    modules: tuple[str, ...]
    description: str = ""
    suite: str = "bookworm"
    variant: Literal["minbase", "essential", "apt", "required", "important"] = "minbase"
    initramfs_modules: tuple[str, ...] = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")
    overlays: tuple[str, ...] = ("../common/overlay", "overlay")
    programs: dict[str, str] = field(default_factory=dict)
    exclude_paths: tuple[str, ...] = ()
    root_extra_mb: int = 96
    path: str = ""

    def validate(self, source: str, path: str) -> None:
        if not self.sources:
            raise ConfigError(source, "sources", "needs at least one apt source line")
        for i, line in enumerate(self.sources):
            if not line.startswith("deb "):
                raise ConfigError(source, f"sources[{i}]", "must be a one-line apt source starting with 'deb '")

    @property
    def dir(self) -> Path:
        return Path(self.path).parent

    def overlay_dirs(self) -> list[Path]:
        return [(self.dir / o).resolve() for o in self.overlays]

    def program_sources(self) -> dict[str, Path]:
        return {dest: (repo_root() / src) for dest, src in self.programs.items()}


def recipe_names() -> list[str]:
    root = repo_root() / "images"
    return sorted(p.parent.name for p in root.glob("*/recipe.yaml"))


def load_recipe(name: str) -> Recipe:
    path = repo_root() / "images" / name / "recipe.yaml"
    if not path.exists():
        known = ", ".join(recipe_names()) or "none"
        raise UsageError(f"unknown image {name!r} (known: {known}; recipes live in {path.parent.parent})")
    data = load_yaml(path)
    if isinstance(data, dict):
        data = {**data, "path": str(path)}
    recipe = from_dict(Recipe, data, str(path))
    if recipe.name != name:
        raise ConfigError(str(path), "name", f"must be {name!r}, the recipe's folder name")
    for d in recipe.overlay_dirs():
        if not d.is_dir():
            raise ConfigError(str(path), "overlays", f"overlay folder {d} does not exist")
    for dest, src in recipe.program_sources().items():
        if not src.is_file():
            raise ConfigError(str(path), f"programs.{dest}", f"source {src} does not exist")
    return recipe


def _hash_tree(h: hashlib._Hash, root: Path) -> None:
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            h.update(f"L {rel} {os.readlink(p)}\n".encode())
        elif p.is_file():
            h.update(f"F {rel} {p.stat().st_mode & 0o7777:o}\n".encode())
            h.update(p.read_bytes())
        elif p.is_dir():
            h.update(f"D {rel}\n".encode())


def recipe_hash(recipe: Recipe) -> str:
    """Hash of everything that decides the image: builder, recipe text, overlays, guest programs, kernel."""
    h = hashlib.sha256()
    for src in BUILDER_SOURCES:
        h.update((Path(__file__).parent / src).read_bytes())
    h.update(Path(recipe.path).read_bytes())
    h.update(f"kernel {recipe.kernel.package}={recipe.kernel.version}\n".encode())
    for d in recipe.overlay_dirs():
        h.update(f"overlay {d.name}\n".encode())
        _hash_tree(h, d)
    for dest, src in sorted(recipe.program_sources().items()):
        h.update(f"program {dest}\n".encode())
        h.update(src.read_bytes())
    return h.hexdigest()[:16]
