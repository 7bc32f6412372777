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


def test_interrupt_reaches_worker_threads_only() -> None:
    import threading

    from testbed.cleanup import INTERRUPTED, check_interrupted

    seen: list[str] = []

    def worker() -> None:
        try:
            check_interrupted()
            seen.append("ran on")
        except KeyboardInterrupt:
            seen.append("interrupted")

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    INTERRUPTED.set()
    try:
        check_interrupted()  # the main thread gets its own KeyboardInterrupt from the signal, not from here
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    finally:
        INTERRUPTED.clear()
    assert seen == ["ran on", "interrupted"]


def test_a_push_after_close_is_undone_at_once_and_undos_are_themselves() -> None:
    done = []
    undo = Cleanup()
    a = undo.push("a", done.append, "a")
    b = undo.push("a", done.append, "a")  # equal fields, another resource
    undo.discard(b)
    undo.close()
    assert done == ["a"] and a is not b
    undo.push("late", done.append, "late")
    assert done == ["a", "late"]
