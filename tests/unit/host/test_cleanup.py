import subprocess
import sys
import textwrap

import pytest

from testbed.host.cleanup import Cleanup


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

    from testbed.host.cleanup import INTERRUPTED, check_interrupted

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


def _in_a_child(code: str) -> subprocess.CompletedProcess[str]:
    """Signal handling is process-wide: each case runs in a fresh interpreter."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)


def test_a_stop_during_teardown_is_held_and_raised_after_every_undo() -> None:
    """A SIGTERM while an undo stack is closed must neither cut teardown short nor be lost (it once was:
    signals were ignored while closing, and a case ran on to its deadline)."""
    cp = _in_a_child("""
        import os, signal, time
        from testbed.host.cleanup import Cleanup, install_signal_handlers, STOP
        install_signal_handlers()
        done = []
        undo = Cleanup()
        undo.push("first", done.append, "first")
        undo.push("second", lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(0.2), done.append("second")))
        try:
            undo.close()
            print("NOT RAISED")
        except KeyboardInterrupt as e:
            print("raised", e, done, STOP[0].signum == signal.SIGTERM)
        print("handler back", signal.getsignal(signal.SIGTERM).__name__)
    """)
    assert "raised signal 15 (during teardown) ['second', 'first'] True" in cp.stdout, cp.stdout + cp.stderr
    assert "handler back _on_signal" in cp.stdout


def test_signals_blocked_by_the_launcher_are_unblocked() -> None:
    """A launcher may hand down a mask with SIGTERM blocked: the testbed must still stop on it."""
    cp = _in_a_child("""
        import os, signal, time
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        from testbed.host.cleanup import install_signal_handlers, process_facts
        install_signal_handlers()
        print("blocked", process_facts()["SigBlk"])
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            print("NOT STOPPED")
        except KeyboardInterrupt as e:
            print("stopped", e)
    """)
    assert "blocked []" in cp.stdout and "stopped signal 15" in cp.stdout, cp.stdout + cp.stderr


def test_the_interrupted_record_names_the_signal_and_its_delay() -> None:
    cp = _in_a_child("""
        import os, signal, time
        from testbed.host.cleanup import install_signal_handlers, stop_record
        class H: t0 = time.monotonic() - 10
        install_signal_handlers()
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            time.sleep(0.3)
            r = stop_record(H)
            print(r["signal"], 9.9 < r["received_t"] < 11, 0.29 < r["stopped_after_s"] < 2)
    """)
    assert "SIGINT True True" in cp.stdout, cp.stdout + cp.stderr


def test_a_second_stop_during_a_nested_teardown_does_not_cut_the_outer_one_short() -> None:
    """The faults' own stack is closed by an undo of the case's: a stop held there must not escape before the
    case's VMs and namespace are undone (a CI cancel sends SIGINT, then SIGTERM)."""
    cp = _in_a_child("""
        import os, signal, time
        from testbed.host.cleanup import Cleanup, install_signal_handlers
        install_signal_handlers()
        done = []
        inner = Cleanup()
        inner.push("flood", lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(0.1), done.append("flood")))
        outer = Cleanup()
        outer.push("net", done.append, "net")
        outer.push("vm", lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(0.1), done.append("vm")))
        outer.push("faults", inner.close)
        try:
            outer.close()
            print("NOT RAISED")
        except KeyboardInterrupt as e:
            print("raised", e, done)
        print("handlers", signal.getsignal(signal.SIGINT).__name__, signal.getsignal(signal.SIGTERM).__name__)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(2)
        except KeyboardInterrupt:
            print("later stops still stop")
    """)
    assert "raised signal 2 (during teardown) ['flood', 'vm', 'net']" in cp.stdout, cp.stdout + cp.stderr
    assert "handlers _on_signal _on_signal" in cp.stdout and "later stops still stop" in cp.stdout


def test_wait_result_returns_a_timeout_the_function_raised() -> None:
    """A TimeoutError raised by the waited-on function is its result, not "not done yet" (no spinning)."""
    from concurrent.futures import ThreadPoolExecutor

    from testbed.host.cleanup import wait_result

    def times_out() -> None:
        raise TimeoutError("socket timed out")

    with ThreadPoolExecutor(1) as ex:
        with pytest.raises(TimeoutError, match="socket timed out"):
            wait_result(ex.submit(times_out), slice_s=0.05)
        assert wait_result(ex.submit(lambda: 7)) == 7
