"""The bisection rules (syzkaller's for a flaky answer) and the search over an ordered list of kernels."""

import pytest

from testbed.engine import bisect


@pytest.mark.parametrize("verdicts,expect,answer", [
    (["recovered"], None, "good"),
    (["deadlocked"], None, "bad"),  # N = 1: one failure is bad
    (["unknown"], None, "skip"),
    (["recovered"] * 6, None, "good"),
    (["recovered"] * 5 + ["deadlocked"], None, "skip"),  # 1 failure < max(2, 6/6): flaky, not bad
    (["recovered"] * 4 + ["deadlocked"] * 2, None, "bad"),
    (["deadlocked", "deadlocked", "unknown", "unknown"], None, "bad"),  # judged 2 >= 4/2
    (["deadlocked", "unknown", "unknown"], None, "skip"),  # judged 1 < 3/2
    (["recovered", "unknown", "unknown", "unknown"], None, "skip"),
    (["recovered"] * 12 + ["oom"], None, "skip"),  # 1 < max(2, 13/6)
    (["recovered"] * 10 + ["oom"] * 2, None, "bad"),  # 2 >= max(2, 12/6)
    (["recovered"] * 16 + ["oom"] * 2, None, "skip"),  # 2 < 18/6 = 3
    (["deadlocked"] * 3, "deadlocked", "good"),  # a control: its expect is the good answer
    (["recovered"] * 3, "deadlocked", "bad"),
])
def test_decide(verdicts, expect, answer) -> None:
    assert bisect.decide(verdicts, expect)[0] == answer


def test_counts() -> None:
    ans, why, failures, judged, unknown = bisect.decide(["recovered", "oom", "oom", "unknown"], None)
    assert (ans, failures, judged, unknown) == ("bad", 2, 3, 1)
    assert "2 of 3 judged runs not recovered" in why


def fake(answers: dict[str, str]):
    calls: list[str] = []

    def evaluate(k: str) -> bisect.Step:
        calls.append(k)
        return bisect.Step(k, answers[k], "recorded")  # type: ignore[arg-type]

    return evaluate, calls


def test_finds_the_first_change_by_halving() -> None:
    ks = [f"k{i}" for i in range(9)]
    evaluate, calls = fake({k: ("good" if i < 6 else "bad") for i, k in enumerate(ks)})
    out = bisect.search(ks, evaluate)
    assert (out.first_changed, out.last_same, out.concluded) == ("k6", "k5", True)
    assert calls[:2] == ["k0", "k8"] and len(calls) <= 2 + 3  # the ends, then log2(8) halvings


def test_change_relative_to_a_bad_first_kernel() -> None:
    evaluate, _ = fake({"a": "bad", "b": "bad", "c": "good"})
    out = bisect.search(["a", "b", "c"], evaluate)
    assert out.first_changed == "c" and "first change at c (good)" in out.message


def test_no_change() -> None:
    evaluate, calls = fake({"a": "good", "b": "bad", "c": "good"})
    out = bisect.search(["a", "b", "c"], evaluate)
    assert out.first_changed is None and out.concluded and calls == ["a", "c"]
    assert "no change" in out.message and "would not be seen" in out.message


def test_skips_are_stepped_around() -> None:
    evaluate, _ = fake({"a": "good", "b": "skip", "c": "good", "d": "bad", "e": "skip"})
    out = bisect.search(["a", "b", "c", "d", "e"], evaluate)
    assert out.first_changed == "d" and out.last_same == "c" and out.concluded


def test_a_skip_next_to_the_change_is_a_candidate() -> None:
    evaluate, _ = fake({"a": "good", "b": "skip", "c": "bad", "d": "bad", "e": "skip"})
    out = bisect.search(["a", "b", "c", "d", "e"], evaluate)
    assert not out.concluded and out.candidates == ("b", "c")  # b might already be bad


def test_only_skips_between_leaves_candidates() -> None:
    evaluate, _ = fake({"a": "good", "b": "skip", "c": "skip", "d": "bad"})
    out = bisect.search(["a", "b", "c", "d"], evaluate)
    assert not out.concluded and out.candidates == ("b", "c", "d") and out.last_same == "a"


def test_unjudged_reference() -> None:
    evaluate, calls = fake({"a": "skip", "b": "bad"})
    out = bisect.search(["a", "b"], evaluate)
    assert not out.concluded and calls == ["a"] and "could not be judged" in out.message


def test_bisect_command_refuses_bad_lists(capsys) -> None:
    from testbed.cli import main

    assert main(["bisect", "scenarios/iscsi-swap.yaml", "--kernels", "debian:trixie"]) == 3
    assert "at least two kernels" in capsys.readouterr().err
    assert main(["bisect", "scenarios/iscsi-swap.yaml", "--kernels", "debian:trixie", "debian:trixie"]) == 3
    assert "named twice" in capsys.readouterr().err
    assert main(["bisect", "scenarios/iscsi-swap.yaml", "--kernels", "debian:bullseye", "debian:potato"]) == 3
    assert "client.kernel: unknown Debian suite 'potato'" in capsys.readouterr().err


def test_run_bisect_step_exit_codes_for_bad_input(tmp_path, capsys) -> None:
    """A kernel folder that is not a kernel: skip (125), never bad (1: git bisect would blame the commit);
    a mistake of ours or the user's: 128, which stops git bisect run."""
    from testbed.cli import main

    assert main(["run", "scenarios/iscsi-swap.yaml", "--bisect", "--set", f"client.kernel=path:{tmp_path}"]) == 125
    assert "bisect: skip (125)" in capsys.readouterr().out
    assert main(["run", "scenarios/iscsi-swap.yaml", "--bisect", "--set", "storage.protocol=floppy"]) == 128
    assert "bisect: abort (128)" in capsys.readouterr().out


def test_no_change_before_skipped_kernels_concludes_nothing() -> None:
    evaluate, _ = fake({"a": "good", "b": "good", "c": "skip"})
    out = bisect.search(["a", "b", "c"], evaluate)
    assert out.first_changed is None and not out.concluded and out.candidates == ("c",)
