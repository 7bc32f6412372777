"""`testbed image prune`: what the cache holds that this checkout can never use again.

An image is keyed by its recipe and kernel (testbed/images/build.py): once a recipe changes (a guest
program, a package, the init), its older images are never looked up again, and neither are the ready
snapshots saved from them. Those, their build logs and lock files, and the lock files of snapshots that
no longer exist are what prune removes; images of the current recipes (for any kernel) stay. An entry
whose build or snapshot lock another process holds is left alone.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from testbed.images import cache
from testbed.images.recipe import load_recipe, recipe_hash, recipe_names
from testbed.vm.snapshot import META, discard, snapshots_dir


@dataclass(frozen=True)
class Stale:
    path: Path
    why: str
    bytes: int

    def to_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "why": self.why, "bytes": self.bytes}


def size_of(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@contextmanager
def unheld(lock: Path) -> Iterator[bool]:
    """True (holding it) when nobody else holds `lock`, or it does not exist; False when another
    process builds or saves under it now."""
    if not lock.exists():
        yield True
        return
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def current_hashes() -> dict[str, str]:
    return {name: recipe_hash(load_recipe(name)) for name in recipe_names()}


def stale_images(current: dict[str, str]) -> list[cache.Image]:
    return [i for i in cache.all_entries() if current.get(i.name) != i.recipe_hash]


def find(current: dict[str, str] | None = None) -> list[Stale]:
    """Everything prune would remove, with why."""
    current = current_hashes() if current is None else current
    out: list[Stale] = []
    gone = {i.hash for i in stale_images(current)}
    for img in stale_images(current):
        why = (f"recipe {img.name} is now {current[img.name]}, this image was built from {img.recipe_hash}"
               if img.name in current else f"no recipe {img.name} any more")
        folder = Path(img.dir)
        out.append(Stale(folder, f"image {folder.name} (kernel {img.kernel_version}): {why}", size_of(folder)))
        for extra in (folder.with_name(folder.name + ".build.log"), folder.with_name(folder.name + ".lock")):
            if extra.exists():
                out.append(Stale(extra, f"{extra.suffix[1:]} file of image {folder.name}", size_of(extra)))
    live = {i.hash for i in cache.all_entries()} - gone
    root = snapshots_dir()
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                image = json.loads((folder / META).read_text())["key"]["image"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # unreadable: lookup already refuses it, and discards it when it is in the way
            if image not in live:
                out.append(Stale(folder, f"snapshot {folder.name}: saved from image {image}, which is "
                                         f"{'stale' if image in gone else 'no longer cached'}", size_of(folder)))
                lock = root / f".{folder.name}.lock"
                if lock.exists():
                    out.append(Stale(lock, f"lock file of snapshot {folder.name}", 0))
        listed = {i.path for i in out}
        for lock in sorted(root.glob(".*.lock")):
            if lock not in listed and not (root / lock.name[1:-len(".lock")]).exists():
                out.append(Stale(lock, f"lock file of snapshot {lock.name[1:-5]}, which no longer exists", 0))
    return out


def remove(items: list[Stale]) -> tuple[list[Stale], list[Stale]]:
    """Remove what `find` listed; returns (removed, skipped because another process holds its lock)."""
    done: list[Stale] = []
    busy: list[Stale] = []
    for item in items:
        p = item.path
        if p.is_dir() and p.parent == snapshots_dir():
            lock = p.parent / f".{p.name}.lock"
        elif p.is_dir():
            lock = p.with_name(p.name + ".lock")
        elif p.name.endswith(".build.log"):  # written by the build that holds the image's lock
            lock = p.with_name(p.name[: -len(".build.log")] + ".lock")
        else:
            lock = p if p.suffix == ".lock" else Path("/nonexistent")
        with unheld(lock) as free:
            if not free:
                busy.append(item)
                continue
            if p.is_dir():  # renamed first, then removed: a reader never sees half of it
                discard(p)
            else:
                p.unlink(missing_ok=True)
        done.append(item)
    return done, busy
