"""Ready snapshots: which folder a key may use, and what `testbed clean` counts as stale."""

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from testbed.vm import snapshot
from testbed.vm.snapshot import SnapshotKey

KEY = SnapshotKey(role="client", image="acce549196da5ca2", mem_mb=128, vcpus=1, accel="tcg", qemu="7.2.22",
                  nic_mtus=(1500,), disks=())


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path))
    return tmp_path


def store(key: SnapshotKey, state: bytes = b"x" * 100, meta_key: SnapshotKey | None = None,
          state_bytes: int | None = None) -> Path:
    d = snapshot.snapshots_dir() / key.dirname
    d.mkdir(parents=True)
    (d / snapshot.STATE).write_bytes(state)
    (d / snapshot.ROOT).write_bytes(b"qcow")
    (d / snapshot.META).write_text(json.dumps({"key": asdict(meta_key or key), "built_at": "2026-11-28T00:00:00Z",
                                               "save_s": 6.0, "state_bytes": len(state) if state_bytes is None else state_bytes}))
    return d


def test_every_field_of_the_key_changes_the_folder() -> None:
    variants = [replace(KEY, mem_mb=160), replace(KEY, accel="kvm"), replace(KEY, qemu="8.2.0"), replace(KEY, image="0" * 16),
                replace(KEY, nic_mtus=(9000,)), replace(KEY, nic_mtus=(1500, 1500)), replace(KEY, vcpus=2),
                replace(KEY, disks=(("tbnasdata", 2**31),)), replace(KEY, role="nas"), replace(KEY, format=snapshot.FORMAT + 1)]
    names = {v.dirname for v in variants} | {KEY.dirname}
    assert len(names) == len(variants) + 1


def test_a_complete_snapshot_is_used() -> None:
    store(KEY)
    snap, why = snapshot.lookup(KEY)
    assert snap is not None and why == "" and snap.key == KEY and snap.state_bytes == 100


def test_none_yet_is_not_an_error() -> None:
    assert snapshot.lookup(KEY) == (None, "")


def test_a_folder_saved_for_another_key_is_never_used() -> None:
    store(KEY, meta_key=replace(KEY, mem_mb=256))
    snap, why = snapshot.lookup(KEY)
    assert snap is None and "mem_mb: 256 != 128" in why


@pytest.mark.parametrize("damage", ["truncated", "no-meta", "bad-meta", "no-root"])
def test_a_damaged_snapshot_is_refused_with_its_reason(damage: str) -> None:
    d = store(KEY, state_bytes=200 if damage == "truncated" else None)
    if damage == "no-meta":
        (d / snapshot.META).unlink()
    if damage == "bad-meta":
        (d / snapshot.META).write_text("{not json")
    if damage == "no-root":
        (d / snapshot.ROOT).unlink()
    snap, why = snapshot.lookup(KEY)
    assert snap is None
    assert {"truncated": "200 were saved", "no-meta": "unreadable", "bad-meta": "unreadable",
            "no-root": "root.qcow2 is missing"}[damage] in why


def test_discard_removes_the_folder() -> None:
    d = store(KEY)
    snapshot.discard(d)
    assert not d.exists() and list(snapshot.snapshots_dir().iterdir()) == []


def test_stale_lists_orphans_and_dead_temporaries_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from testbed.images import cache as image_cache

    class Img:
        hash = KEY.image

    monkeypatch.setattr(image_cache, "all_entries", lambda: [Img()])
    monkeypatch.setattr(snapshot, "host_caps", lambda: type("C", (), {"version": KEY.qemu})())
    live = store(KEY)
    orphan = store(replace(KEY, image="f" * 16))
    old_qemu = store(replace(KEY, qemu="7.1.0"))
    dead_tmp = snapshot.snapshots_dir() / ".tmp-999999999-client-x"
    live_tmp = snapshot.snapshots_dir() / f".tmp-{__import__('os').getpid()}-client-y"
    dead_tmp.mkdir()
    live_tmp.mkdir()
    assert set(snapshot.stale()) == {orphan, old_qemu, dead_tmp}
    assert live.exists()
