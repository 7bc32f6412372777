"""QEMU's kdump files come in makedumpfile's flattened form: rewritten as the plain file drgn seeks in."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from testbed.commands.inspect import the_dump
from testbed.errors import UsageError
from testbed.vm.dump import FLATTENED, Dump, keep, of_case, reassemble


def test_a_flattened_dump_is_reassembled(tmp_path: Path) -> None:
    header = FLATTENED.ljust(16, b"\0") + struct.pack(">qq", 1, 4096)
    records = [(0, b"KDUMP   hello"), (8192, b"page two"), (4096, b"block")]
    body = b"".join(struct.pack(">qq", off, len(data)) + data for off, data in records)
    p = tmp_path / "client.kdump"
    p.write_bytes(header.ljust(4096, b"\0") + body + struct.pack(">qq", -1, -1))
    reassemble(p)
    got = p.read_bytes()
    assert got[:13] == b"KDUMP   hello" and got[4096:4101] == b"block" and got[8192:8200] == b"page two"
    assert len(got) == 8200


def test_a_plain_file_is_left_alone(tmp_path: Path) -> None:
    p = tmp_path / "client.kdump"
    p.write_bytes(b"KDUMP   " + b"x" * 100)
    reassemble(p)
    assert p.read_bytes() == b"KDUMP   " + b"x" * 100


def test_the_dump_cache_is_bounded_oldest_first(tmp_path: Path, monkeypatch) -> None:
    import os

    from testbed.vm import dump

    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path))
    for i, case in enumerate(("a", "b", "c")):
        d = dump.dumps_dir("tb000001", case)
        d.mkdir(parents=True)
        (d / "client-stall.kdump").write_bytes(b"x" * 2**20)
        os.utime(d, (1000 + i, 1000 + i))
    assert [p.name for p in dump.cached()] == ["a", "b", "c"]
    gone = dump.prune(2.5, keep=dump.dumps_dir("tb000001", "a"))
    assert [g.split("/")[-1] for g in gone] == ["b (1 MB)"] and [p.name for p in dump.cached()] == ["a", "c"]
    dump.prune(0)
    assert dump.cached() == [] and not (tmp_path / "dumps" / "tb000001").exists()


def test_a_kept_dump_is_found_before_the_cache_s(tmp_path: Path) -> None:
    """--keep-dumps: the case folder's copy outlives the cache; `testbed inspect` opens the last one taken."""
    cache = tmp_path / "cache" / "client-stall.kdump"
    cache.parent.mkdir()
    cache.write_bytes(b"KDUMP   " + bytes(100))
    case = tmp_path / "case"
    case.mkdir()
    kept = keep(Dump(cache, 1.0, 0.1), case)
    assert kept == case / "dumps/client-stall.kdump" and kept.read_bytes() == cache.read_bytes()
    assert keep(Dump(None, 1.0, None, "failed"), case) is None
    later = tmp_path / "cache" / "client-finished.kdump"
    later.write_bytes(b"x")
    gone = tmp_path / "cache" / "client-no-answer.kdump"
    recorded = [{"path": str(cache)}, {"path": str(gone)}, {"path": str(later)}, {"path": None, "error": "x"}]
    assert of_case(case, recorded) == [kept, later]  # the copy for the stall, the cache for the rest; gone: not


def test_inspect_says_why_a_case_has_no_dump_to_open(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("")
    with pytest.raises(UsageError, match="took no memory dump"):
        the_dump(tmp_path, None)
    events.write_text(json.dumps({"t": 1.0, "kind": "evidence", "name": "memory-dump", "why": "stall",
                                  "path": str(tmp_path / "gone.kdump")}) + "\n")
    with pytest.raises(UsageError, match="gone from the cache"):
        the_dump(tmp_path, None)
    (tmp_path / "dumps").mkdir()
    (tmp_path / "dumps/client-stall.kdump").write_bytes(b"x")
    assert the_dump(tmp_path, None) == (tmp_path / "dumps/client-stall.kdump", "stall")
    with pytest.raises(UsageError, match="no dump taken at 'finished'"):
        the_dump(tmp_path, "finished")
