from pathlib import Path

from testbed.check.evidence import BlockedTask, Evidence, read_evidence
from testbed.check.verdict import Observations, fault_windows, judge
from testbed.config.scenario import Deadlines, load_scenario
from testbed.faults.outcome import Window
from testbed.store.history import Event
from testbed.workload import Progress

REPO = Path(__file__).parents[3]
NFS_PATH = load_scenario(REPO / "scenarios/nfs-swap.yaml").scenario.path_processes()
# A real dump: tb-work blocked in swap-in (on the path).
ON_PATH = read_evidence((REPO / "tests/fixtures/sysrq/ipsec-static-swapin-6.1.txt").read_text())


def rows(n: int, progress_until: int, cpu_per_s: float = 0.1, nas: str = "running") -> list[dict]:
    return [
        {"t": float(t), "progress": min(t, progress_until) * 100, "client_cpu_s": t * cpu_per_s, "nas_status": nas,
         "pswpin": t * 10, "pswpout": t * 20, "PFMemallocDrop": 0, "MemFree": 2000, "allocstall": t,
         "oom_kill": 0, "pgscan_direct": t, "pgscan_direct_throttle": 0}
        for t in range(n)
    ]


def finished() -> Progress:
    p = Progress(done=200, total=200)
    p.finished = {"done": True, "pages": 100, "passes": 2, "seconds": 30.0}
    return p


def obs(**kw) -> Observations:
    base = dict(deadlines=Deadlines(), progress=Progress(done=50, total=200), events=[], rows=rows(60, 60),
                pressure_start=0.0, pressure_end=59.0, path_processes=NFS_PATH, evidence=ON_PATH)
    base.update(kw)
    return Observations(**base)


def test_finished_and_verified_is_recovered() -> None:
    j = judge(obs(progress=finished(), ended_by="finished", workload_status=0, client_answers=True))
    assert j.verdict == "recovered"
    assert j.figures["swap_out_mb"] == round(59 * 20 * 4096 / 2**20, 1)


def test_recovered_measures_time_to_recover_after_heal() -> None:
    events = [Event(10.0, "fault", "nas-outage:inject"), Event(30.0, "fault", "nas-outage:heal")]
    r = rows(60, 60)
    for row in r:  # no progress from t=10 to t=42
        if 10 <= row["t"] <= 42:
            row["progress"] = 1000
        elif row["t"] > 42:
            row["progress"] = 1000 + (row["t"] - 42) * 100
    j = judge(obs(progress=finished(), ended_by="finished", workload_status=0, client_answers=True, events=events, rows=r))
    assert j.verdict == "recovered"
    assert j.figures["time_to_recover_s"] == 13.0


def test_stall_with_an_unhealed_fault_is_stalled() -> None:
    events = [Event(10.0, "fault", "nas-outage:inject", {"path_down": True}),
              Event(80.0, "fault", "nas-outage:heal", {"teardown": True})]
    j = judge(obs(ended_by="stall", stall_since=10.0, events=events, rows=rows(60, 10)))
    assert j.verdict == "stalled"
    assert "never healed" in j.reasons[-1]


def test_stall_while_nas_healthy_and_idle_cpu_is_deadlocked() -> None:
    j = judge(obs(ended_by="stall", stall_since=10.0, rows=rows(60, 10, cpu_per_s=0.05)))
    assert j.verdict == "deadlocked"


def test_stall_with_busy_cpu_and_reclaim_rising_is_livelocked() -> None:
    j = judge(obs(ended_by="stall", stall_since=10.0, rows=rows(60, 10, cpu_per_s=0.95), evidence=Evidence()))
    assert j.verdict == "livelocked" and "rising in 100% of the last 10 sample intervals" in j.reasons[-1], j.reasons


def test_a_named_deadlock_wins_over_a_spin_and_both_are_said() -> None:
    """NeilBrown's r1 shape: reclaim busy while blocked tasks on the path name a mechanism."""
    j = judge(obs(ended_by="stall", stall_since=10.0, rows=rows(60, 10, cpu_per_s=0.95)))
    assert j.verdict == "deadlocked" and j.mechanism is not None
    assert any("reclaim spinning too, while blocked tasks name the mechanism" in r for r in j.reasons), j.reasons


def test_one_allocstall_increment_is_no_livelock() -> None:
    once = [{**r, "allocstall": 5 + (r["t"] >= 50), "pgscan_direct": 5} for r in rows(60, 10, cpu_per_s=0.95)]
    j = judge(obs(ended_by="stall", stall_since=10.0, rows=once, evidence=Evidence()))
    assert j.verdict == "unknown" and "stalled without evidence" in j.reasons[-1], j.reasons


def test_stall_while_nas_paused_is_stalled_even_without_fault_events() -> None:
    j = judge(obs(ended_by="stall", stall_since=10.0, rows=rows(60, 10, nas="paused")))
    assert j.verdict == "stalled"


def test_mismatch_is_corrupted() -> None:
    p = Progress(done=5, total=10, mismatch={"page": 1234, "pass": 1, "word": 3})
    j = judge(obs(progress=p, ended_by="workload-failed", workload_status=3))
    assert j.verdict == "corrupted" and j.figures["first_bad_page"] == 1234


def test_oom_kill_of_workload_is_oom() -> None:
    ev = [Event(20.0, "console", "oom-kill", {"line": "Out of memory: Killed process 99 (tb-work)", "groups": ["99", "tb-work"]})]
    j = judge(obs(ended_by="workload-failed", workload_status=-9, events=ev))
    assert j.verdict == "oom"


def test_oom_kill_elsewhere_is_only_a_reason() -> None:
    ev = [Event(20.0, "console", "oom-kill", {"line": "Out of memory: Killed process 9 (sleep)", "groups": ["9", "sleep"]})]
    j = judge(obs(progress=finished(), ended_by="finished", workload_status=0, client_answers=True, events=ev))
    assert j.verdict == "recovered"
    assert "sleep" in j.reasons[0]


def test_swap_write_error_is_io_error() -> None:
    ev = [Event(20.0, "console", "swap-write-error", {"line": "Write-error on swap-device (0:42:1234)"})]
    assert judge(obs(ended_by="stall", stall_since=20.0, events=ev)).verdict == "io-error"


def test_setup_failure_is_unknown_never_a_product_verdict() -> None:
    j = judge(obs(setup_error="NAS did not boot", ended_by="stall"))
    assert j.verdict == "unknown"


def test_a_checker_that_throws_yields_unknown() -> None:
    j = judge(obs(ended_by="stall", stall_since=None, rows=[{"t": "bad"}]))
    assert j.verdict == "unknown"


def test_panic_with_nothing_to_kill_is_oom() -> None:
    ev = [Event(20.0, "console", "oom-no-victim", {"line": "Out of memory and no killable processes..."}),
          Event(20.1, "console", "panic", {"line": "Kernel panic - not syncing: System is deadlocked on memory"})]
    assert judge(obs(ended_by="client-died", events=ev)).verdict == "oom"


def test_client_death_without_cause_is_unknown() -> None:
    ev = [Event(20.1, "console", "panic", {"line": "Kernel panic - not syncing: Attempted to kill init!"})]
    j = judge(obs(ended_by="client-died", events=ev))
    assert j.verdict == "unknown" and "Attempted to kill init" in j.reasons[-1]


def test_kernel_crash_is_unknown_with_what_crashed_where() -> None:
    """trixie 6.12.118 under TCG, swapping over NFS (results/...-tbddca14): a double fault in the sunrpc
    receive worker. The kernel's own words, but an emulator could be at fault: unknown, named."""
    from testbed.monitor.console import scan_line

    lines = ["[   61.215846] Oops: double fault: 0000 [#1] PREEMPT SMP NOPTI",
             "[   61.217485] RIP: 0010:kmem_cache_alloc_node_noprof+0x6e/0x310",
             "[   61.220123] Kernel panic - not syncing: Fatal exception in interrupt"]
    ev = [Event(61.0 + i, "console", name, {"line": line, "groups": list(m.groups())})
          for i, line in enumerate(lines) for name, m in scan_line(line)]
    j = judge(obs(ended_by="client-died", events=ev))
    assert j.verdict == "unknown"
    assert j.reasons[-1] == ("the client VM died: Oops: double fault: 0000 [#1] PREEMPT SMP NOPTI at "
                             "kmem_cache_alloc_node_noprof+0x6e/0x310; Kernel panic - not syncing: Fatal exception in interrupt")


def test_healed_freeze_never_recovered_is_deadlocked() -> None:
    """The seed's deadlock: the NAS came back, the client did not."""
    events = [Event(10.0, "fault", "nas-outage:inject", {"index": 0}), Event(30.0, "fault", "nas-outage:heal", {"index": 0})]
    r = rows(200, 10, cpu_per_s=0.05)
    for row in r:
        row["nas_status"] = "paused" if 10 <= row["t"] < 30 else "running"
    j = judge(obs(ended_by="stall", stall_since=10.0, events=events, rows=r))
    assert j.verdict == "deadlocked", j.reasons


def test_fault_injected_after_the_stall_does_not_explain_it() -> None:
    events = [Event(100.0, "fault", "link:inject", {"index": 0, "path_down": True})]
    j = judge(obs(ended_by="stall", stall_since=50.0, events=events, rows=rows(160, 50, cpu_per_s=0.05)))
    assert j.verdict == "deadlocked"


def test_two_faults_of_one_kind_are_paired_by_index() -> None:
    events = [Event(10.0, "fault", "link:inject", {"index": 0}), Event(12.0, "fault", "link:inject", {"index": 1}),
              Event(20.0, "fault", "link:heal", {"index": 1}), Event(25.0, "fault", "link:heal", {"index": 0})]
    assert fault_windows(events) == [Window("link", 10.0, 25.0), Window("link", 12.0, 20.0)]


def test_nas_console_trouble_is_not_the_clients() -> None:
    ev = [Event(20.0, "console", "io-error", {"vm": "nas", "line": "Buffer I/O error on dev vdb"})]
    j = judge(obs(progress=finished(), ended_by="finished", workload_status=0, client_answers=True, events=ev))
    assert j.verdict == "recovered"


def test_failed_fault_injection_is_unknown() -> None:
    ev = [Event(10.0, "fault", "ipsec:inject-failed", {"error": "ip xfrm policy add timed out"})]
    j = judge(obs(ended_by="stall", stall_since=10.0, events=ev))
    assert j.verdict == "unknown" and "ipsec:inject-failed" in j.reasons[-1]


def test_stall_under_ipsec_with_the_nas_healthy_is_deadlocked() -> None:
    """IPsec is a condition the client must cope with, not an outage: a stall under it is the seed's deadlock."""
    events = [Event(15.0, "fault", "ipsec:inject", {"index": 0}), Event(120.0, "fault", "ipsec:heal", {"teardown": True})]
    j = judge(obs(ended_by="stall", stall_since=36.0, events=events, rows=rows(130, 36, cpu_per_s=0.05)))
    assert j.verdict == "deadlocked"


def test_expired_dhcp_lease_is_a_path_down_from_its_expiry() -> None:
    inject = Event(5.0, "fault", "dhcp:inject", {"index": 0, "mode": "server-stop"})
    expired = Event(120.0, "fault", "dhcp:path-down", {"index": 0, "path_down": True})
    # Progress stopped when the lease ran out: the expired lease explains it.
    j = judge(obs(ended_by="stall", stall_since=120.0, pressure_end=229.0, events=[inject, expired],
                  rows=rows(230, 120, cpu_per_s=0.05)))
    assert j.verdict == "stalled" and "dhcp" in j.reasons[-1], j.reasons
    # Progress stopped long before the lease ran out: the server being away does not explain it.
    j = judge(obs(ended_by="stall", stall_since=30.0, pressure_end=139.0, events=[inject, expired],
                  rows=rows(140, 30, cpu_per_s=0.05)))
    assert j.verdict == "deadlocked", j.reasons


def test_stale_telemetry_is_said_not_taken_for_no_effect() -> None:
    heal = Event(40.0, "fault", "competing-traffic:heal", {"index": 0, "effect_unknown": "the client's telemetry was stale"})
    j = judge(obs(progress=finished(), ended_by="finished", workload_status=0, client_answers=True, events=[heal]))
    assert any("telemetry was stale" in r for r in j.reasons) and not any("no visible effect" in r for r in j.reasons)


def test_a_fault_step_the_client_could_not_finish_is_named() -> None:
    inject = Event(16.0, "fault", "ipsec:inject", {"index": 0, "stuck": "swanctl --initiate: no answer within 45 s"})
    j = judge(obs(ended_by="stall", stall_since=29.0, events=[inject], rows=rows(130, 29, cpu_per_s=0.05)))
    assert j.verdict == "deadlocked" and any("could not finish it: swanctl" in r for r in j.reasons), j.reasons


def test_a_path_that_came_back_no_longer_explains_a_stall() -> None:
    ev = [Event(5.0, "fault", "dhcp:inject", {"index": 0}), Event(30.0, "fault", "dhcp:path-down", {"index": 0, "path_down": True}),
          Event(34.0, "fault", "dhcp:path-up", {"index": 0})]
    j = judge(obs(ended_by="stall", stall_since=60.0, events=ev, rows=rows(170, 60, cpu_per_s=0.05)))
    assert j.verdict == "deadlocked", j.reasons


def test_an_address_the_client_lost_by_itself_is_its_own_deadlock() -> None:
    lost = Event(79.4, "fault", "dhcp:address-lost", {"index": 0, "path_down": False,
                                                       "finding": "the client lost its storage address at t=79 s"})
    ev = [Event(20.0, "fault", "dhcp:inject", {"index": 0}), lost, Event(80.6, "fault", "dhcp:heal", {"index": 0})]
    j = judge(obs(ended_by="stall", stall_since=79.4, pressure_end=169.0, events=ev, rows=rows(170, 79, cpu_per_s=0.05)))
    assert j.verdict == "deadlocked" and any("lost its storage address" in r for r in j.reasons), j.reasons


def test_an_oom_kill_after_the_stall_is_not_the_cause() -> None:
    kill = Event(181.0, "console", "oom-kill", {"vm": "client", "groups": ["156", "tb-work"], "line": "Out of memory: Killed process 156 (tb-work)"})
    j = judge(obs(ended_by="stall", stall_since=33.0, pressure_end=123.0, events=[kill], rows=rows(130, 33, cpu_per_s=0.05)))
    assert j.verdict == "deadlocked" and any("after the stall, the OOM killer killed tb-work" in r for r in j.reasons), j.reasons
    j = judge(obs(ended_by="stall", stall_since=33.0, pressure_end=200.0, events=[kill], rows=rows(210, 33, cpu_per_s=0.05)))
    assert j.verdict == "oom"


def kill_of(name: str) -> Event:
    return Event(20.0, "console", "oom-kill", {"vm": "client", "groups": ["77", name],
                                               "line": f"Out of memory: Killed process 77 ({name})"})


def test_oom_victims_are_matched_against_the_declared_path() -> None:
    iscsi = load_scenario(REPO / "scenarios/iscsi-swap.yaml").scenario.path_processes()
    assert "iscsid" in iscsi and "iscsid" not in NFS_PATH
    stall = dict(ended_by="stall", stall_since=30.0, pressure_end=59.0, events=[kill_of("iscsid")], rows=rows(60, 30, cpu_per_s=0.05))
    assert judge(obs(path_processes=iscsi, **stall)).verdict == "oom"
    j = judge(obs(**stall))  # no iscsid on an NFS client's path: only a reason
    assert j.verdict == "deadlocked" and any("not on the storage path" in r for r in j.reasons), j.reasons


def test_fault_helpers_join_the_path_as_the_kernel_names_them() -> None:
    dhcp = load_scenario(REPO / "scenarios/faults/dhcp-renew.yaml").scenario.path_processes()
    ike = load_scenario(REPO / "scenarios/faults/ipsec-ikev2.yaml").scenario.path_processes()
    assert "udhcpc" in dhcp and "udhcpc" not in NFS_PATH  # started through an applet link of that name
    assert "charon" in ike and "charon" not in NFS_PATH


def test_a_failed_injection_on_a_finished_workload_is_unknown() -> None:
    # ../shared/evidence/link-delay-inject-failed-20261127: netem could not be set, the workload
    # finished undisturbed, and the case was judged recovered.
    ev = [Event(20.0, "fault", "link:inject-failed", {"error": "modprobe sch_netem failed", "index": 0})]
    j = judge(obs(progress=finished(), ended_by="finished", workload_status=0, client_answers=True, events=ev))
    assert j.verdict == "unknown" and "link:inject-failed" in j.reasons[0], j.reasons


def test_events_after_the_pressure_do_not_decide() -> None:
    # A NAS frozen for good; its heal lands while the evidence is taken (after the stall was called).
    ev = [Event(10.0, "fault", "nas-outage:inject", {"path_down": True, "index": 0}),
          Event(62.0, "fault", "nas-outage:heal", {"index": 0})]
    j = judge(obs(ended_by="stall", stall_since=10.0, pressure_end=59.0, events=ev, rows=rows(60, 10, cpu_per_s=0.05)))
    assert j.verdict == "stalled", j.reasons
    late_teardown = [Event(75.0, "fault", "dhcp:teardown-failed", {"error": "socket closed"})]
    j = judge(obs(progress=finished(), ended_by="finished", workload_status=0, client_answers=True, events=late_teardown))
    assert j.verdict == "recovered", j.reasons


def test_corruption_seen_outranks_a_failed_fault_and_teardown_failures_decide_nothing() -> None:
    p = Progress(done=10, total=200)
    p.mismatch = {"page": 7, "pass": 1, "word": 3}
    failed = Event(20.0, "fault", "link:inject-failed", {"error": "no netem", "index": 0})
    assert judge(obs(progress=p, ended_by="workload-failed", workload_status=3, events=[failed])).verdict == "corrupted"
    # A heal that failed only because the case was ending (marked by the scheduler) is no failure.
    end_heal = Event(59.6, "fault", "dhcp:heal-failed", {"error": "agent gone", "index": 0, "teardown": True})
    j = judge(obs(progress=finished(), ended_by="finished", workload_status=0, client_answers=True, events=[end_heal]))
    assert j.verdict == "recovered", j.reasons


def test_only_scheduled_or_declared_operations_fail_a_fault() -> None:
    rekey = Event(30.0, "fault", "ipsec:rekey-failed", {"error": "ip xfrm timed out", "index": 0,
                                                        "stuck": "rekeying the static SAs: ip xfrm timed out"})
    j = judge(obs(progress=finished(), ended_by="finished", workload_status=0, client_answers=True, events=[rekey]))
    assert j.verdict == "recovered" and any("could not finish it: rekeying" in r for r in j.reasons), j.reasons
    flap = Event(30.0, "fault", "link-flap:flap-failed", {"error": "no such device", "index": 0, "fault_failed": True})
    j = judge(obs(progress=finished(), ended_by="finished", workload_status=0, client_answers=True, events=[flap]))
    assert j.verdict == "unknown" and "link-flap:flap-failed" in j.reasons[-1], j.reasons



def test_a_stall_without_evidence_is_unknown() -> None:
    stall = dict(ended_by="stall", stall_since=30.0, rows=rows(60, 30, cpu_per_s=0.05))
    j = judge(obs(evidence=None, **stall))
    assert j.verdict == "unknown" and "no sysrq dump was taken" in j.reasons[-1], j.reasons
    j = judge(obs(evidence=Evidence(), **stall))
    assert j.verdict == "unknown" and "shows no blocked task" in j.reasons[-1], j.reasons
    agent_only = Evidence(blocked=(BlockedTask("tb-agent", 1, "D", frames=("port_fops_write",), classes=("virtio-console",)),))
    j = judge(obs(evidence=agent_only, **stall))
    assert j.verdict == "unknown" and "none on the memory/storage path" in j.reasons[-1], j.reasons


def test_a_deadlock_names_its_blocked_tasks_and_mechanism() -> None:
    j = judge(obs(ended_by="stall", stall_since=30.0, rows=rows(60, 30, cpu_per_s=0.05)))
    assert j.verdict == "deadlocked" and j.mechanism is not None and j.mechanism.name == "swap-in-wait"
    assert any(r.startswith("blocked on the memory/storage path: tb-work") for r in j.reasons), j.reasons


def test_busy_cpu_without_reclaim_moving_is_not_livelock() -> None:
    flat = [{**r, "allocstall": 5, "pgscan_direct": 5} for r in rows(60, 30, cpu_per_s=0.9)]
    assert judge(obs(ended_by="stall", stall_since=30.0, rows=flat)).verdict == "deadlocked"


def probed(rows_: list[dict], **cols) -> list[dict]:
    return [{**r, "nas_probed": 1, "nas_agent_ms": 3.0, "nas_service": 1, "nas_connect_ms": 1.0, "nas_connect_error": "", **cols}
            for r in rows_]


def test_the_service_probe_decides_a_server_side_stall() -> None:
    stall = dict(ended_by="stall", stall_since=30.0)
    j = judge(obs(rows=probed(rows(60, 30, cpu_per_s=0.05), nas_service=0), **stall))
    assert j.verdict == "stalled" and "service probe" in j.reasons[-1], j.reasons
    refused = probed(rows(60, 30, cpu_per_s=0.05), nas_connect_ms=None, nas_connect_error="ECONNREFUSED")
    assert "ECONNREFUSED" in judge(obs(rows=refused, **stall)).reasons[-1]
    assert judge(obs(rows=probed(rows(60, 30, cpu_per_s=0.05)), **stall)).verdict == "deadlocked"  # healthy NAS
    broken = probed(rows(60, 30, cpu_per_s=0.05), nas_connect_ms=None, nas_connect_error="probe broken")
    assert judge(obs(rows=broken, **stall)).verdict == "deadlocked"  # our probe broke: says nothing of the NAS
    unprobed = probed(rows(60, 30, cpu_per_s=0.05), nas_probed=0, nas_service=None, nas_agent_ms=None, nas_connect_ms=None)
    assert judge(obs(rows=unprobed, **stall)).verdict == "deadlocked"  # samples the probes did not finish


def test_a_paused_client_or_a_starved_qemu_is_unknown() -> None:
    stall = dict(ended_by="stall", stall_since=30.0)
    paused = [{**r, "client_status": "paused" if r["t"] >= 30 else "running"} for r in rows(60, 30, cpu_per_s=0.05)]
    j = judge(obs(rows=paused, **stall))
    assert j.verdict == "unknown" and "client VM was paused" in j.reasons[-1], j.reasons
    starved = [{**r, "client_wait_s": r["t"] * 0.7, "client_run_s": r["t"] * 0.1} for r in rows(60, 30, cpu_per_s=0.05)]
    j = judge(obs(rows=starved, **stall))
    assert j.verdict == "unknown" and "waited for a host CPU 88%" in j.reasons[-1], j.reasons
    busy = [{**r, "client_wait_s": r["t"] * 0.7, "client_run_s": r["t"] * 0.5} for r in rows(60, 30, cpu_per_s=0.05)]
    assert judge(obs(rows=busy, **stall)).verdict == "deadlocked"  # it had half a core: not starved
    resumed = [{**r, "client_status": "paused" if 30 <= r["t"] < 40 else "running"} for r in rows(60, 30, cpu_per_s=0.05)]
    assert judge(obs(rows=resumed, **stall)).verdict == "deadlocked"  # paused a while, then stuck by itself


def test_io_errors_count_on_the_cases_device_during_the_workload_only() -> None:
    done = dict(progress=finished(), ended_by="finished", workload_status=0, client_answers=True)
    sr0 = Event(30.0, "console", "io-error", {"vm": "client", "line": "I/O error, dev sr0, sector 0 op 0x0:(READ)"})
    assert judge(obs(events=[sr0], **done)).verdict == "recovered"  # NFS swap: no block device of ours
    attached = Event(-5.0, "fact", "storage-attached", {"protocol": "iscsi", "device": "/dev/sda"})
    sda = Event(30.0, "console", "io-error", {"vm": "client", "line": "I/O error, dev sda, sector 2048 op 0x1:(WRITE)"})
    assert judge(obs(events=[attached, sda], **done)).verdict == "io-error"
    early = Event(-2.0, "console", "io-error", {"vm": "client", "line": "I/O error, dev sda, sector 8 op 0x0:(READ)"})
    assert judge(obs(events=[attached, early], **done)).verdict == "recovered"  # before the workload
    swap = Event(30.0, "console", "swap-write-error", {"vm": "client", "line": "Write-error on swap-device (8:0:2056)"})
    assert judge(obs(events=[swap], **done)).verdict == "io-error"


def test_an_unseen_mechanism_decides_only_from_the_typed_contract_and_not_when_the_client_was_stuck() -> None:
    done = dict(progress=finished(), ended_by="finished", workload_status=0, client_answers=True)
    legacy = Event(40.0, "fault", "ipsec:heal", {"index": 0, "visible": False, "sa_bytes_client": 0})
    j = judge(obs(events=[legacy], **done))  # written before faults stated their effect: a reason only
    assert j.verdict == "recovered" and any("no visible effect" in r for r in j.reasons), j.reasons
    typed = Event(40.0, "fault", "ipsec:heal", {"index": 0, "visible": False, "sa_bytes_client": 0, "capture_esp": 0,
                                                "effect_counters": ["sa_bytes_client", "capture_esp"]})
    assert judge(obs(events=[typed], **done)).verdict == "unknown"
    stuck = Event(20.0, "fault", "ipsec:inject", {"index": 0, "stuck": "swanctl --initiate: no answer"})
    assert judge(obs(events=[stuck, typed], **done)).verdict == "recovered"


def test_the_nas_console_is_reported_and_healthy_is_said_from_what_was_checked() -> None:
    nas_oom = Event(25.0, "console", "oom-kill", {"vm": "nas", "line": "Out of memory: Killed process 88 (rpc.mountd)",
                                                  "groups": ["88", "rpc.mountd"]})
    j = judge(obs(ended_by="stall", stall_since=30.0, events=[nas_oom], rows=probed(rows(60, 30, cpu_per_s=0.05))))
    assert j.verdict == "deadlocked", j.reasons  # the NAS's own trouble is reported, not the client's verdict
    assert any(r.startswith("the NAS's console at t=25 s: oom-kill") for r in j.reasons), j.reasons
    assert any("NAS probes: service or port answered in" in r for r in j.reasons), j.reasons


def test_the_path_daemons_memory_lock_is_said_with_the_verdict() -> None:
    attach = Event(5.0, "fact", "storage-attached", {"protocol": "nbd", "device": "/dev/nbd0", "nbd_client_pids": [131],
                                                      "nbd_client_vmlck_kb": 9408, "nbd_client_oom_score_adj": -1000})
    j = judge(obs(progress=finished(), ended_by="finished", workload_status=0, client_answers=True, events=[attach]))
    assert j.verdict == "recovered"
    assert j.reasons[-1] == "nbd-client at attach: VmLck 9408 kB (memory-locked), oom_score_adj -1000"
    unlocked = Event(5.0, "fact", "storage-attached", {**attach.data, "nbd_client_vmlck_kb": 0})
    j = judge(obs(ended_by="stall", stall_since=10.0, rows=rows(60, 10, cpu_per_s=0.05), events=[unlocked]))
    assert "VmLck 0 kB (NOT memory-locked)" in j.reasons[-1]


def test_the_typed_helper_locks_are_read_and_win_over_the_older_keys() -> None:
    """Since 2026-12-07 the attach records `helper_locks` (the protocol's typed fact); older folders' keys
    are still read when it is absent."""
    typed = Event(5.0, "fact", "storage-attached", {"protocol": "nbd", "device": "/dev/nbd0", "nbd_client_vmlck_kb": 1,
                                                     "helper_locks": [{"name": "nbd-client", "vmlck_kb": 0, "oom_score_adj": 0}]})
    j = judge(obs(progress=finished(), ended_by="finished", workload_status=0, client_answers=True, events=[typed]))
    assert j.reasons[-1] == "nbd-client at attach: VmLck 0 kB (NOT memory-locked), oom_score_adj 0", j.reasons
    assert sum("at attach" in r for r in j.reasons) == 1
