"""`testbed image prune`: images of older recipes and the snapshots saved from them go; current images,
their snapshots, and anything another process holds the lock of stay."""

import fcntl
import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.images import cache, prune

REPO = Path(__file__).parents[3]


def image(root: Path, name: str, digest: str, recipe: str) -> Path:
    folder = root / "images" / f"{name}-{digest}"
    folder.mkdir(parents=True)
    for f in ("vmlinuz", "initrd.img", "root.img"):
        (folder / f).write_bytes(b"x" * 1000)
    cache.Image(name=name, hash=digest, kernel_version="6.1.0-50-amd64", kernel_package="linux-image-6.1.0-50-amd64",
                size_bytes=3000, built_at="2026-12-03T07:00:00Z", build_seconds=60.0, dir=str(folder),
                recipe_hash=recipe).write_manifest(folder)
    (root / "images" / f"{name}-{digest}.build.log").write_text("built\n")
    (root / "images" / f"{name}-{digest}.lock").write_text("")
    return folder


def snapshot(root: Path, dirname: str, image_hash: str) -> Path:
    folder = root / "snapshots" / dirname
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"key": {"image": image_hash}}))
    (folder / "state.zst").write_bytes(b"s" * 500)
    (root / "snapshots" / f".{dirname}.lock").write_text("")
    return folder


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path))
    image(tmp_path, "client", "aaaa", "old-recipe")
    image(tmp_path, "client", "bbbb", "new-recipe")
    image(tmp_path, "client", "cccc", "new-recipe")  # the current recipe with another kernel: stays
    snapshot(tmp_path, "client-1111", "aaaa")
    snapshot(tmp_path, "client-2222", "bbbb")
    (tmp_path / "snapshots" / ".client-9999.lock").write_text("")  # its snapshot is long gone
    return tmp_path


def test_only_what_no_current_recipe_can_use_goes(store: Path) -> None:
    items = prune.find({"client": "new-recipe"})
    names = sorted(i.path.name for i in items)
    assert names == [".client-1111.lock", ".client-9999.lock", "client-1111", "client-aaaa", "client-aaaa.build.log",
                     "client-aaaa.lock"]
    assert next(i for i in items if i.path.name == "client-aaaa").bytes > 3000
    removed, busy = prune.remove(items)
    assert len(removed) == 6 and not busy
    assert sorted(p.name for p in (store / "images").iterdir()) == [
        "client-bbbb", "client-bbbb.build.log", "client-bbbb.lock", "client-cccc", "client-cccc.build.log", "client-cccc.lock"]
    assert sorted(p.name for p in (store / "snapshots").iterdir()) == [".client-2222.lock", "client-2222"]
    assert prune.find({"client": "new-recipe"}) == []


def test_a_recipe_that_is_gone_takes_its_images(store: Path) -> None:
    items = prune.find({"nas": "x"})
    assert {i.path.name for i in items if i.path.is_dir()} == {"client-aaaa", "client-bbbb", "client-cccc",
                                                               "client-1111", "client-2222"}
    assert "no recipe client any more" in next(i.why for i in items if i.path.name == "client-aaaa")


def test_an_image_being_built_is_left_alone(store: Path) -> None:
    with open(store / "images" / "client-aaaa.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        removed, busy = prune.remove(prune.find({"client": "new-recipe"}))
    assert {i.path.name for i in busy} == {"client-aaaa", "client-aaaa.build.log", "client-aaaa.lock"}
    assert (store / "images" / "client-aaaa" / "manifest.json").exists()
    assert not (store / "snapshots" / "client-1111").exists()  # the snapshot's own lock was free


def test_the_command_says_what_it_would_do(store: Path) -> None:
    env = {"TESTBED_CACHE": str(store), "PATH": "/usr/bin:/bin"}
    cp = subprocess.run([sys.executable, "-m", "testbed", "image", "prune", "--dry-run", "--json"], capture_output=True,
                        text=True, cwd=REPO, env=env, timeout=60)
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout)
    # the fake images are of no recipe of this checkout: all would go, and nothing went
    assert out["dry_run"] and len(out["would_remove"]) >= 5
    assert (store / "images" / "client-aaaa").exists()
