"""Kernel module selection: the closure of the modules a recipe names, from the kernel's modules.dep."""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from pathlib import Path

from testbed.errors import ConfigError


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep -> {relative path: [dependency paths]}."""
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        mod, rest = line.split(":", 1)
        deps[mod.strip()] = rest.split()
    return deps


def module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base.replace("-", "_")


def select(deps: dict[str, list[str]], wanted: list[str], builtin: set[str], source: str,
           missing: list[str] | None = None) -> list[str]:
    """Paths of the wanted modules (names, or folders ending in '/') and all they depend on.

    Returned in load order: every module after its dependencies. Built-in names are skipped;
    an unknown name is a ConfigError, since the scenario would fail later inside the guest, unless
    `missing` is given: then it is appended there (a kernel other than the recipe's may lack what no
    scenario of it needs; the config check tells what a scenario does need).
    """
    by_name = {module_name(p): p for p in deps}
    order: list[str] = []
    seen: set[str] = set()

    def visit(path: str) -> None:
        if path in seen:
            return
        seen.add(path)
        for d in deps.get(path, []):
            visit(d)
        order.append(path)

    for i, w in enumerate(wanted):
        if w.endswith("/"):
            hits = [p for p in deps if p.startswith(w)]
            if not hits:
                if missing is not None:
                    missing.append(w)
                    continue
                raise ConfigError(source, f"modules[{i}]", f"no module under {w} in this kernel")
            for p in sorted(hits):
                visit(p)
            continue
        name = w.replace("-", "_")
        if name in builtin:
            continue
        if name not in by_name:
            if missing is not None:
                missing.append(w)
                continue
            raise ConfigError(source, f"modules[{i}]", f"kernel has no module {w!r} (not built in either)")
        visit(by_name[name])
    return order


def builtin_names(moddir: Path) -> set[str]:
    f = moddir / "modules.builtin"
    return {module_name(line) for line in f.read_text().split()} if f.exists() else set()


COMPRESSED = (".ko.xz", ".ko.zst", ".ko.gz")


def plain_name(rel: str) -> str:
    """A module's path with its compression suffix dropped (`a/b.ko.xz` -> `a/b.ko`)."""
    for suffix in COMPRESSED:
        if rel.endswith(suffix):
            return rel[: -len(suffix)] + ".ko"
    return rel


def read_module(path: Path) -> bytes:
    """A module file's ELF bytes: kernels from trixie on ship them xz-compressed, and busybox's insmod in
    our initramfs (like an old kmod) may not read those, so the images hold them plain."""
    data = path.read_bytes()
    name = path.name
    if name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if name.endswith(".ko.zst"):
        return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
    return data


def install(src_moddir: Path, dst_moddir: Path, paths: list[str]) -> None:
    """Copy the selected modules, decompressed, and the kernel's module metadata (depmod is run afterwards)."""
    dst_moddir.mkdir(parents=True, exist_ok=True)
    for rel in paths:
        dst = dst_moddir / plain_name(rel)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(read_module(src_moddir / rel))
        shutil.copystat(src_moddir / rel, dst)
    for meta in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (src_moddir / meta).exists():
            shutil.copy2(src_moddir / meta, dst_moddir / meta)
