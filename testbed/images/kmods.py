"""Kernel module selection: the closure of the modules a recipe names, from the kernel's modules.dep."""

from __future__ import annotations

import shutil
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


def select(deps: dict[str, list[str]], wanted: list[str], builtin: set[str], source: str) -> list[str]:
    """Paths of the wanted modules (names, or folders ending in '/') and all they depend on.

    Returned in load order: every module after its dependencies. Built-in names are skipped;
    an unknown name is a ConfigError, since the scenario would fail later inside the guest.
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
                raise ConfigError(source, f"modules[{i}]", f"no module under {w} in this kernel")
            for p in sorted(hits):
                visit(p)
            continue
        name = w.replace("-", "_")
        if name in builtin:
            continue
        if name not in by_name:
            raise ConfigError(source, f"modules[{i}]", f"kernel has no module {w!r} (not built in either)")
        visit(by_name[name])
    return order


def builtin_names(moddir: Path) -> set[str]:
    f = moddir / "modules.builtin"
    return {module_name(line) for line in f.read_text().split()} if f.exists() else set()


def install(src_moddir: Path, dst_moddir: Path, paths: list[str]) -> None:
    """Copy the selected modules and the kernel's module metadata (depmod is run afterwards)."""
    dst_moddir.mkdir(parents=True, exist_ok=True)
    for rel in paths:
        dst = dst_moddir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src_moddir / rel, dst)
    for meta in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (src_moddir / meta).exists():
            shutil.copy2(src_moddir / meta, dst_moddir / meta)
