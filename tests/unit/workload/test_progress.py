from testbed.workload import Progress


def test_progress_lines() -> None:
    p = Progress()
    assert p.feed('{"progress":10,"total":100,"pass":0,"phase":"write","t":0.1}')
    assert not p.feed('{"progress":10,"total":100,"pass":0,"phase":"write","t":0.6}')
    assert (p.done, p.total, p.phase) == (10, 100, "write")
    p.feed('{"mismatch":{"page":7,"pass":0,"word":2,"expected":1,"got":2}}')
    assert p.mismatch["page"] == 7
    p.feed("not json")
    assert p.other == ["not json"]
    p.feed('{"done":true,"pages":50,"passes":2,"seconds":1.0}')
    assert p.finished["pages"] == 50
