import pytest

from testbed.cleanup import Cleanup


def test_undo_runs_in_reverse_and_collects_errors() -> None:
    done = []

    def boom() -> None:
        raise RuntimeError("tap busy")

    with Cleanup() as undo:
        undo.push("netns", done.append, "netns")
        undo.push("tap", boom)
        undo.push("qemu", done.append, "qemu")
    assert done == ["qemu", "netns"]  # the failing undo did not stop the rest
    assert undo.errors == ["tap: tap busy"]


def test_undo_runs_when_the_body_raises() -> None:
    done = []
    with pytest.raises(KeyboardInterrupt):
        with Cleanup() as undo:
            undo.push("qemu", done.append, "qemu")
            raise KeyboardInterrupt
    assert done == ["qemu"]


def test_release_runs_one_undo_now() -> None:
    done = []
    with Cleanup() as undo:
        a = undo.push("a", done.append, "a")
        undo.push("b", done.append, "b")
        undo.release(a)
        assert done == ["a"]
    assert done == ["a", "b"]
