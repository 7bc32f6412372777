"""The command workload (workload.kind: command): its spec, the progress it is judged by (its cgroup's
user CPU time and its output lines, never elapsed time), the OOM victims it declares, and its verdicts."""

from pathlib import Path

import pytest

from testbed.check.verdict import Observations, judge
from testbed.config.scenario import Deadlines, load_scenario
from testbed.errors import ConfigError
from testbed.store.history import Event
from testbed.kernels import preflight
from testbed.monitor.timeline import telemetry_row
from testbed.workload import CGROUP, CPU_STEP_US, CommandProgress, expected_victim, fill, get

REPO = Path(__file__).parents[3]
NEILBROWN = REPO / "scenarios/reference/neilbrown-stress-ng.yaml"
FIO = REPO / "scenarios/reference/fio-fsync.yaml"
# cgroup v2 cpu.stat as the guest agent sends it (put_kv_file: "key value" lines -> {"key": value}).
CPU_STAT = {"usage_usec": 5_120_000, "user_usec": 3_400_000, "system_usec": 1_720_000}


def load(path: Path, *sets: str):
    return load_scenario(path, list(sets)).scenario


# ---- spec ------------------------------------------------------------------------------------------


def test_reference_scenarios_load_with_their_commands() -> None:
    sc = load(NEILBROWN)
    assert sc.workload.kind == "command" and sc.workload.uses_swap
    argv = get("command").argv(sc)
    assert argv[:3] == ["/usr/bin/tb-work", "run", CGROUP]
    assert argv[3:9] == ["stress-ng", "--brk", "2", "--stack", "2", "--bigheap"]
    # the command is on the path; the workers it loses by design are declared apart from it
    assert "stress-ng" in sc.path_processes()
    fio = load(FIO)
    assert not fio.workload.uses_swap
    assert "--filename=/mnt/nas/fio.dat" in get("command").argv(fio)
    assert f"--size={fio.workload.total_mb(fio.client.mem_mb)}M" in fill(fio.workload.verify_argv, fio)


@pytest.mark.parametrize("sets,field,words", [
    (["workload.argv=[]"], "workload.argv", "needs the command"),
    (["workload.argv=[fio, '--size={sizemb}M']"], "workload.argv[1]", "unknown placeholder {sizemb}"),
    (["workload.argv=[fio, '--x={']"], "workload.argv[1]", "cannot be filled in"),
    (["workload.verify_argv=[fio, '']"], "workload.verify_argv[1]", "is empty"),
    (["workload.progress=[]"], "workload.progress", "cpu and/or output"),
    (["workload.progress=[cpu, cpu]"], "workload.progress", "each once"),
    (["workload.progress=[time]"], "workload.progress[0]", "must be one of"),
    (["workload.expected_oom_victims=[stress-ng]"], "workload.expected_oom_victims[0]", "matches the command itself"),
    (["workload.expected_oom_victims=['stress-*']"], "workload.expected_oom_victims[0]", "matches the command itself"),
    (["workload.storage_use=null"], "workload.storage_use", "swap or filesystem"),
])
def test_bad_command_specs_name_the_field(sets: list[str], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(NEILBROWN, *sets)
    assert f"{field}:" in str(e.value) and words in str(e.value)


def test_command_fields_are_refused_on_other_kinds() -> None:
    with pytest.raises(ConfigError, match=r"workload.argv: applies to kind command, not anon"):
        load(REPO / "scenarios/nfs-swap.yaml", "workload.argv=[/bin/true]")
    with pytest.raises(ConfigError, match=r"workload.progress: applies to kind command"):
        load(REPO / "scenarios/nfs-swap.yaml", "workload.progress=[output]")
    with pytest.raises(ConfigError, match=r"workload.processes: applies to kind readers"):
        load(REPO / "scenarios/nfs-swap.yaml", "workload.processes=4")


def test_a_command_needs_cgroups_in_the_client_kernel() -> None:
    needs = {n.option for n in preflight.client_needs(load(NEILBROWN))}
    assert "CONFIG_CGROUPS" in needs and "CONFIG_NFS_SWAP" in needs
    assert "CONFIG_CGROUPS" not in {n.option for n in preflight.client_needs(load(REPO / "scenarios/nfs-swap.yaml"))}


def test_readers_workload_is_gormans_shape() -> None:
    sc = load(REPO / "scenarios/reference/gorman-nbd.yaml")
    argv = get("readers").argv(sc)
    assert argv == ["/usr/bin/tb-work", "readers", "8", str(4 * sc.client.mem_mb), "2", "1"]
    assert get("readers").argv(load(REPO / "scenarios/reference/gorman-nbd.yaml", "client.vcpus=2"))[2] == "16"
    with pytest.raises(ConfigError, match="raise storage.swap_mb"):  # the working set must fit in swap
        load(REPO / "scenarios/reference/gorman-nbd.yaml", "storage.swap_mb=256")


# ---- progress --------------------------------------------------------------------------------------


def test_cpu_progress_is_user_time_in_steps() -> None:
    p = CommandProgress(sources=("cpu",))
    assert p.feed_cpu(CPU_STAT)
    assert p.done == 3_400_000 // CPU_STEP_US and p.user_us == 3_400_000 and p.system_us == 1_720_000
    # system time alone (reclaim, a stuck writeback) is not progress
    assert not p.feed_cpu({**CPU_STAT, "system_usec": 9_000_000})
    # a trickle below a step is not progress either (a stuck fio's status thread)
    assert not p.feed_cpu({**CPU_STAT, "user_usec": 3_400_000 + CPU_STEP_US // 2 - 1})
    assert p.feed_cpu({**CPU_STAT, "user_usec": 3_400_000 + CPU_STEP_US})
    # a message without the group (tb-work run not yet in it) changes nothing; nor does a counter going back
    assert not p.feed_cpu({}) and not p.feed_cpu({"user_usec": 1})
    assert p.user_us == 3_400_000 + CPU_STEP_US


def test_output_lines_are_progress_only_when_chosen() -> None:
    cpu_only, both = CommandProgress(sources=("cpu",)), CommandProgress(sources=("cpu", "output"))
    for line in ['stress-ng: info:  [301] dispatching hogs: 2 brk, 2 stack, 2 bigheap', '{"progress": 99}']:
        assert not cpu_only.feed(line)
        assert both.feed(line)
    # a command's output is never read as tb-work's: a JSON line claiming progress is just a line
    assert cpu_only.done == 0 and cpu_only.lines == 2 and both.done == 2
    assert cpu_only.last_words() == '{"progress": 99}'
    both.feed_cpu(CPU_STAT)
    assert both.done == 2 + 3_400_000 // CPU_STEP_US


def test_the_timeline_records_the_groups_cpu_time() -> None:
    row = telemetry_row({"workload_cpu": CPU_STAT})
    assert row["workload_user_s"] == 3.4 and row["workload_system_s"] == 1.72
    assert telemetry_row({"workload_cpu": {}})["workload_user_s"] is None


def test_expected_victims_match_the_kernels_task_names() -> None:
    declared = ("stress-ng-brk", "stress-ng-stack", "stress-ng-bigheap")
    assert expected_victim("stress-ng-bighe", declared)  # the kernel cuts names to 15 characters
    assert expected_victim("stress-ng-brk", declared)
    assert not expected_victim("stress-ng", declared)
    assert not expected_victim("stress-ng-vm", declared)
    assert expected_victim("stress-ng-vm", ("stress-ng-*",))


# ---- verdicts --------------------------------------------------------------------------------------


def rows(n: int, user_until: int) -> list[dict]:
    return [{"t": float(t), "progress": min(t, user_until), "client_cpu_s": t * 0.5, "nas_status": "running",
             "pswpin": t * 10, "pswpout": t * 20, "MemFree": 2000, "allocstall": t, "oom_kill": 0,
             "pgscan_direct": t, "workload_user_s": min(t, user_until) * 0.1} for t in range(n)]


def kill(t: float, pid: int, comm: str) -> Event:
    line = f"[  {t:.3f}] Out of memory: Killed process {pid} ({comm}) total-vm:80000kB"
    return Event(t, "console", "oom-kill", {"vm": "client", "line": line, "groups": [str(pid), comm]})


def command_obs(sc, **kw) -> Observations:
    p = get("command").new_progress(sc.workload)
    p.feed_cpu(CPU_STAT)
    base = dict(deadlines=Deadlines(), progress=p, events=[], rows=rows(60, 60), pressure_start=0.0, pressure_end=59.0,
                path_processes=sc.path_processes(), expected_victims=sc.workload.expected_oom_victims)
    base.update(kw)
    return Observations(**base)


def finished_obs(sc, **kw) -> Observations:
    o = command_obs(sc, ended_by="finished", workload_status=0, client_answers=True, **kw)
    o.progress.finished = {"done": True, "command": list(sc.workload.argv), "seconds": 59.0}
    return o


def test_expected_kills_are_reported_not_judged() -> None:
    sc = load(NEILBROWN)
    kills = [kill(20, 401, "stress-ng-bighe"), kill(30, 402, "stress-ng-bighe"), kill(31, 405, "stress-ng-brk")]
    j = judge(finished_obs(sc, events=kills))
    assert j.verdict == "recovered"
    assert any("stress-ng-bighe x2, stress-ng-brk x1, as the scenario expects" in r for r in j.reasons)
    assert any("command exited 0 after 3.4 s of user CPU" in r for r in j.reasons)
    assert j.figures["command_user_cpu_s"] == 3.4


def test_losing_the_command_itself_is_oom() -> None:
    sc = load(NEILBROWN)
    events = [kill(20, 401, "stress-ng-bighe"), kill(40, 300, "stress-ng")]
    j = judge(command_obs(sc, events=events, ended_by="workload-failed", workload_status=-9))
    assert j.verdict == "oom" and "stress-ng" in j.reasons[0]
    # the same kills with nothing declared: the workers are on the path too
    bare = load(NEILBROWN, "workload.expected_oom_victims=[]")
    assert judge(command_obs(bare, events=events[:1], ended_by="finished", workload_status=0,
                             client_answers=True)).verdict == "oom"


def test_a_failed_verification_is_corrupted() -> None:
    sc = load(FIO)
    o = command_obs(sc, ended_by="finished", workload_status=0, client_answers=True)
    o.progress.mismatch = {"verify": ["fio", "--verify_only"], "status": 1,
                           "output": ["verify: bad magic header 0, wanted acca at file /mnt/nas/fio.dat offset 0"]}
    j = judge(o)
    assert j.verdict == "corrupted" and "bad magic header" in j.reasons[0]


def test_a_command_that_fails_without_a_cause_is_unknown() -> None:
    sc = load(FIO)
    o = command_obs(sc, ended_by="workload-failed", workload_status=1)
    o.progress.feed("fio: pid=0, err=28/file:io_u.c:1845, func=io_u error, error=No space left on device")
    j = judge(o)
    assert j.verdict == "unknown" and "No space left" in j.reasons[-1]


def test_no_user_cpu_is_a_stall_judged_by_evidence() -> None:
    sc = load(NEILBROWN)
    # the guest's CPU busy (system time: reclaim) while the command's user time stood still: spinning
    spinning = judge(command_obs(sc, ended_by="stall", stall_since=10.0, rows=rows(60, 10), evidence=None))
    assert spinning.verdict == "livelocked"
    idle = rows(60, 10)
    for r in idle:
        r["client_cpu_s"] = r["t"] * 0.05
    j = judge(command_obs(sc, ended_by="stall", stall_since=10.0, rows=idle, evidence=None))
    assert j.verdict == "unknown" and "no sysrq dump" in j.reasons[-1]


def test_a_verification_that_never_ran_is_not_judged_from_the_folder(tmp_path: Path) -> None:
    """`testbed judge` reads the verify event: a non-zero check is corrupted, one that could not run
    (127) or was killed checked nothing, and a finished record is success."""
    from testbed.check.casefile import command_progress

    sc = load(FIO)
    argv = fill(sc.workload.verify_argv, sc)
    for status, want in ((1, "corrupted"), (127, "error"), (-9, "error"), (0, "finished")):
        p = get("command").new_progress(sc.workload)
        events = [Event(50.0, "workload", "verify", {"argv": argv, "status": status, "timed_out": False,
                                                      "output": ["fio: some words"]})]
        if status == 0:
            events.append(Event(50.0, "workload", "finished", {"done": True, "verify": {"argv": argv, "status": 0}}))
        command_progress(p, tmp_path / "none.jsonl", [{"t": 1.0, "workload_user_s": 2.5, "workload_system_s": 1.0}], events)
        assert p.user_us == 2_500_000
        got = "corrupted" if p.mismatch else "finished" if p.finished else "error" if p.error else None
        assert got == want, status
