"""Running one case end to end: images, network, NAS, client, storage, monitors, workload and faults,
verdict, evidence, teardown (reverse order, always). A testbed failure becomes `unknown`."""

from __future__ import annotations

import errno
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from testbed import storage, workload

from testbed.vm import guests

from testbed.store import index
from testbed.check import casefile, completeness, readings
from testbed.check.evidence import parse_zoneinfo, read_evidence
from testbed.check.mechanism import StallFacts
from testbed.check.state import DumpState
from testbed.check.verdict import Judgement, Observations, fault_windows, is_ok, judge
from testbed.host.cleanup import Cleanup, check_interrupted, process_facts, stop_record, wait_result
from testbed.config.scenario import Deadlines, LoadedScenario
from testbed.config.strict import to_dict
from testbed.errors import GuestError, ResultsDiskError, TestbedError
from testbed.faults.base import FaultContext
from testbed.faults.scheduler import Scheduler
from testbed.store.history import History
from testbed.images.build import ensure
from testbed.kernels import preflight as kernel_preflight
from testbed.kernels import ref as kernel_ref
from testbed.monitor import helpers
from testbed.monitor.console import ConsoleWatcher
from testbed.monitor.evidence import sysrq_dump
from testbed.monitor.ping import Pinger
from testbed.monitor.probes import NasProbe, ProbeError
from testbed.monitor.timeline import Timeline
from testbed import forensics
from testbed import nas as nas_backends
from testbed.forensics import symbols
from testbed.vm import dump as guest_dump
from testbed.nas.base import Backend as NasBackend, Nas, NasSetup
from testbed.net.build import BuiltNet
from testbed.net.build import build as build_net
from testbed.images.cache import Image
from testbed.report.progress import Ui
from testbed.host.rundir import make_rundir
from testbed.store.runs import RunDir
from testbed.host.tags import new_tag
from testbed.vm import accel as accel_mod
from testbed.vm import slowdown
from testbed.vm.machine import VM

POLL_S = 0.5
ZONEINFO = "zoneinfo-start.txt"


@dataclass
class CaseResult:
    case_id: str
    verdict: str
    expected: str | None
    ok: bool
    path: str
    data: dict[str, Any]


@dataclass
class _Setup:
    """What one setup step hands the next."""

    undo: Cleanup
    client_img: Image | None = None
    backend: NasBackend | None = None  # None: the storage has no NAS
    accel: str = ""
    rundir: Path | None = None
    client_node: str = ""
    nas_node: str = ""
    client_ip: str = ""
    net: BuiltNet | None = None
    ends: storage.Ends | None = None
    export: Future[dict[str, Any]] | None = None


class Case:
    """One case's state; `run` drives it, teardown always happens through the undo stack."""

    def __init__(self, loaded: LoadedScenario, run: RunDir, case_id: str, accel: str, ui: Ui,
                 axes: dict[str, Any] | None = None):
        self.loaded, self.sc, self.topo = loaded, loaded.scenario, loaded.topology
        self.axes = axes or {}
        self.case_id, self.accel_req, self.ui = case_id, accel, ui
        self.dir = run.case(case_id)
        self.history = History(self.dir.path / "events.jsonl")
        self.tag = new_tag()
        wl = self.sc.workload
        self.obs = Observations(deadlines=self.sc.deadlines, progress=workload.get(wl.kind).new_progress(wl),
                                events=self.history.events, rows=[], path_processes=self.sc.path_processes(),
                                expected_victims=wl.expected_oom_victims,
                                declared_faults=completeness.declared_faults(self.sc),
                                declared_verify=completeness.declared_verify(self.sc))
        self.facts: dict[str, Any] = {"tag": self.tag}
        self.client: VM | None = None
        self.nas: Nas | None = None
        self.dumps: list[guest_dump.Dump] = []
        self.timeline: Timeline | None = None
        self.scheduler: Scheduler | None = None
        self.nas_ip = ""
        self.store: storage.Storage | None = None
        self.counters: dict[str, dict[str, Any]] = {}
        self.deadlines = self.sc.deadlines  # scaled by the host's slowdown once it is known

    def phase(self, name: str, detail: str = "", **data: Any) -> None:
        if name != "teardown":
            check_interrupted()
        self.history.add("phase", name, **data)
        self.ui.phase(self.case_id, name, detail)
        if self.timeline:
            self.timeline.phase = name

    def run(self) -> CaseResult:
        try:
            return self._run()
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise self._disk_full(e) from None
            raise

    def _disk_full(self, e: OSError) -> ResultsDiskError:
        return ResultsDiskError(
            f"results disk full ({e.strerror}) under {self.dir.path.parent}: case {self.case_id} is not recorded "
            "(its folder stays .incomplete and never counts); earlier cases are intact; free space, then run again "
            "(a matrix: --resume)")

    def _run(self) -> CaseResult:
        started = time.monotonic()
        self.dir.write_yaml("scenario.yaml", {**to_dict(self.sc), "topology_resolved": to_dict(self.topo)})
        try:
            with Cleanup() as undo:
                try:
                    self._setup_and_run(undo)
                except Exception as e:  # every failure becomes a judged case; only Ctrl-C escapes
                    if not isinstance(e, TestbedError):
                        self.history.add("error", "traceback", text=traceback.format_exc())
                        e = TestbedError(f"internal error: {e!r}")
                    self.history.add("error", type(e).__name__, message=str(e))
                    if self.obs.pressure_start is None:
                        self.obs.setup_error = str(e)
                    elif self.client is not None and not self.client.alive():
                        self.obs.ended_by = "client-died"
                        self.history.add("workload", "client-gone", qemu=self.client.exit_info())
                    else:
                        self.obs.setup_error = str(e)
                finally:
                    self.phase("teardown")
            if self.timeline:
                self.obs.rows = self.timeline.rows
            for err in undo.errors:
                self.history.add("error", "teardown", message=err)
        except KeyboardInterrupt:
            for err in undo.errors:  # what the interrupted teardown could not undo is said here too
                self.history.add("error", "teardown", message=err)
            self.history.add("error", "interrupted", **stop_record(self.history))
            self.history.close()
            raise  # the case stays <case>.incomplete: a resume reruns it
        if self.history.write_error:  # nothing more can be written: the case is not recorded
            raise self._disk_full(self.history.write_error)
        j = judge(self.obs)
        return self._finish(j, time.monotonic() - started)

    def _setup_and_run(self, undo: Cleanup) -> None:
        """The case's phases, each a step that registers what it makes on `undo`, then the pressure."""
        s = _Setup(undo)
        for step in (self._images, self._network, self._nas, self._client, self._storage, self._monitors, self._faults):
            step(s)
        self._pressure()

    def _say(self, message: str) -> None:
        self.ui.note(self.case_id, message)

    def _images(self, s: _Setup) -> None:
        """Kernels, images, the accelerator and the host's slowdown (which scales the deadlines)."""
        sc = self.sc
        self.phase("images")
        self.history.add("fact", "format", version=casefile.FORMAT)  # what this folder holds: casefile.FORMATS
        for w in sc.warnings():  # runs, and its verdict is the answer: said before it starts
            self._say(f"warning: {w}")
            self.history.add("fact", "scenario-warning", message=w)
        self.history.add("fact", "process", **process_facts())  # how a stop request reaches us (docs/ci.md: Stopping)
        # The kernels are prepared and their configs checked before anything boots (the commands did it
        # already for every scenario: here it is a cache lookup).
        kernels = kernel_preflight.prepare(sc, sc.path, self._say)
        s.client_img = ensure("client", kernel_ref.parse(sc.client.kernel, sc.path, "client.kernel"), say=self._say)
        s.backend = nas_backends.make(sc, self.tag) if sc.storage.role.needs_nas else None
        nas_img = s.backend.image(self._say) if s.backend else None
        asked = {"client": sc.client.kernel, "nas": sc.nas.kernel}  # the image may have been built for another ref
        self.facts["images"] = {i.name: {"hash": i.hash, "kernel": i.kernel_version, "package": i.kernel_package,
                                         "kernel_ref": asked[i.name], "packages_hash": i.packages_hash}
                                for i in (s.client_img, nas_img) if i}
        self.facts["kernel"] = s.client_img.kernel_version
        self.facts["kernel_source"] = {"ref": kernels.client.ref, "release": kernels.client.release,
                                       **kernels.client.source}
        self.history.add("fact", "kernel", source=self.facts["kernel_source"])
        choice = accel_mod.choose(self.accel_req, s.client_img, say=self._say)
        s.accel = choice.accel
        self.facts["accel"] = {"accel": choice.accel, "reason": choice.reason}
        self.history.add("fact", "accel", accel=choice.accel, reason=choice.reason)
        slow = slowdown.measure()
        self.deadlines = scaled(sc.deadlines, slow.factor)
        self.obs.deadlines = self.deadlines
        self.facts["slowdown"] = {"factor": slow.factor, "measured_s": slow.measured_s, "reference_s": slow.reference_s}
        self.history.add("fact", "slowdown", **self.facts["slowdown"], deadlines=to_dict(self.deadlines))

    def _network(self, s: _Setup) -> None:
        """The run's namespace, bridges and taps (and a userspace NAS's namespace or container)."""
        undo = s.undo
        self.phase("network", self.topo.name)
        s.rundir = make_rundir(self.tag, undo)
        s.client_node, s.nas_node = self.topo.node_for("client"), self.topo.node_for("nas")
        hosted_in = s.backend.netns() if s.backend else None
        hosted = {s.nas_node: hosted_in} if hosted_in else {}
        if s.backend:  # e.g. a container, whose namespace must be there for the NAS's veth end
            s.backend.before_network(undo, self._say)
        s.net = build_net(self.topo, self.tag, undo, hosted=hosted)
        self.history.add("fact", "network", **s.net.describe())
        s.client_ip, nas_ip = s.net.address_of(s.client_node), s.net.address_of(s.nas_node)
        self.nas_ip = nas_ip
        s.ends = storage.Ends(self.tag, s.client_ip, nas_ip)

    def _nas(self, s: _Setup) -> None:
        """The NAS (VM, namespace or container), then its export, which overlaps the client's boot."""
        sc, undo, store = self.sc, s.undo, self.sc.storage.role
        if s.backend is None:
            return
        assert s.net is not None and s.rundir is not None and s.ends is not None
        self.phase("nas", s.backend.describe())
        self.nas = s.backend.start(NasSetup(s.net, s.nas_node, s.accel, s.rundir, self.dir.path, undo, self._say))
        vm = self.nas.machine()
        if vm is not None:
            self._watch(vm, "nas", undo)
        self._booted("nas", self.nas.boot)
        exporting = ThreadPoolExecutor(1, thread_name_prefix=f"export-{self.tag}")
        undo.push("export thread", exporting.shutdown, False)
        s.export = exporting.submit(store.export, self.nas, sc, s.ends)

    def _client(self, s: _Setup) -> None:
        """The client VM, the kernel it really runs, its sysctls and its zone watermarks."""
        sc, undo = self.sc, s.undo
        assert s.client_img is not None and s.rundir is not None and s.net is not None
        self.phase("client", f"{sc.client.mem_mb} MB")
        disks = sc.storage.role.client_disks(sc, s.rundir, undo)
        self.client = guests.boot(role="client", node=s.client_node, tag=self.tag, image=s.client_img, net=s.net,
                                  mem_mb=sc.client.mem_mb, vcpus=sc.client.vcpus, accel=s.accel, rundir=s.rundir,
                                  logdir=self.dir.path, undo=undo, boot_s=sc.deadlines.boot_s, disks=disks,
                                  mode=sc.client.boot, say=self._say)
        self._booted("client", self.client.boot)
        self._watch(self.client, "client", undo)
        self.history.add("fact", "client-ready", boot_s=round(self.client.ready_at - self.client.started_at, 2),
                         memtotal_kb=(self.client.agent.telemetry or {}).get("meminfo", {}).get("MemTotal"))
        # The kernel the guest runs, asked of it: the verdict's kernel is what ran, not what was meant to.
        running = self.client.exec(["uname", "-r"], 15, check=True).stdout.strip()
        self.facts["kernel_source"]["running"] = running
        if running != s.client_img.kernel_version:
            raise TestbedError(f"the client runs kernel {running}, not {s.client_img.kernel_version} of its image "
                               f"{s.client_img.hash} (a path kernel whose image and modules come from different "
                               "builds, or a stale ready snapshot)")
        if sc.client.sysctl:
            for key, value in sc.client.sysctl.items():
                self.client.exec(["sysctl", "-w", f"{key}={value}"], 10, check=True)
            self.history.add("fact", "client-sysctl", **sc.client.sysctl)
        # The zone watermarks the kernel reclaims against, after the sysctls that move them.
        zoneinfo = self.client.exec(["cat", "/proc/zoneinfo"], 15, check=True).stdout
        (self.dir.path / ZONEINFO).write_text(zoneinfo)
        self.history.add("fact", "zone-watermarks", zones=[z.to_dict() for z in parse_zoneinfo(zoneinfo)])

    def _storage(self, s: _Setup) -> None:
        """The export joined, then the client attached (mount and swapon, login, discover, nbd-client)."""
        sc = self.sc
        assert self.client is not None and s.ends is not None
        if s.export is not None:
            self.history.add("fact", "nas-export", **wait_result(s.export))
        self.phase("storage", f"{sc.storage.protocol}, {'swap' if sc.workload.uses_swap else 'filesystem'}")
        self.history.add("fact", "storage-attached", protocol=sc.storage.protocol,
                         **sc.storage.role.attach(self.client, sc, s.ends))
        # The protocol counters are read once, after the pressure: counters start at the fresh mount,
        # and reading /proc/self/mountstats just before the pressure was followed by the NFS swap
        # deadlock in 4 runs out of 4 (0 of 6 without it): the probe must not be part of the experiment.
        self.store = sc.storage.role

    def _monitors(self, s: _Setup) -> None:
        """The ping from the switch, the NAS probes and the 1 Hz timeline."""
        undo = s.undo
        assert s.net is not None and s.ends is not None and self.client is not None
        pinger = Pinger(s.net.netns, s.client_ip)
        undo.push("ping socket", pinger.close)
        probe = None
        if self.nas is not None:
            try:
                probe = NasProbe(self.nas, self.sc.storage.role, self.sc, s.ends, s.net)
                undo.push("NAS probes", probe.close)
                self.history.add("fact", "nas-probes", **probe.facts())
            except ProbeError as e:  # recorded: the verdict then has no probe to cite
                self.history.add("error", "nas-probe", message=str(e))
        self.timeline = Timeline(self.dir.path / "timeline.csv", self.history, self.client, self.nas, pinger, probe)
        self.timeline.start()
        undo.push("timeline", self.timeline.stop)

    def _faults(self, s: _Setup) -> None:
        """The faults' scheduler (set up now, started with the workload) and the path helpers' states."""
        sc = self.sc
        assert self.client is not None and s.net is not None and s.ends is not None
        ctx = FaultContext(client=self.client, nas=self.nas, history=self.history, sc=sc, storage=sc.storage.role,
                           net=s.net, ends=s.ends, case_dir=self.dir.path, undo=Cleanup())
        self.scheduler = Scheduler(sc.faults, ctx)
        s.undo.push("faults (schedule, heals, helpers)", self.scheduler.close)
        if sc.faults:
            self.phase("faults", ", ".join(f.kind for f in sc.faults))
            self.scheduler.setup()
        self.history.add("fact", "path-helpers", helpers=helpers.states(self.client, sc.path_processes()))

    def _booted(self, role: str, boot: dict[str, Any]) -> None:
        """How the guest came up (restored from its ready snapshot, or booted cold and why): in the verdict."""
        self.facts.setdefault("boot", {})[role] = boot
        self.history.add("fact", f"{role}-boot", **boot)

    def _watch(self, vm: VM, role: str, undo: Cleanup) -> None:
        w = ConsoleWatcher(role, vm.spec.console, self.history)
        w.start()
        undo.push(f"console watcher ({role})", w.stop)
        threading.Thread(target=self._exit_watch, args=(vm, role), name=f"exit-{role}-{self.tag}", daemon=True).start()

    def _exit_watch(self, vm: VM, role: str) -> None:
        """A VM's QEMU that ends while the case still needs it (not stopped by us) is recorded with how it
        ended: killed from outside or crashed, that is a testbed failure (testbed/check/rules.py)."""
        if vm.proc is None:
            return
        vm.proc.wait()
        info = vm.exit_info() or {}
        if not vm.stopping:
            self.history.add("vm", "exited", vm=role, **info)

    def _on_line(self, line: str) -> None:
        # The workload's own words are kept: `testbed judge` re-derives the verdict from them.
        with open(self.dir.path / casefile.WORKLOAD_LINES, "a") as f:
            f.write(line.rstrip("\n") + "\n")
        p = self.obs.progress
        if p.feed(line):
            self._advanced()

    def _advanced(self) -> None:
        p = self.obs.progress
        if self.timeline:
            self.timeline.set_progress(p.done, p.total)
        self.ui.progress(self.case_id, p.done, p.total, p.detail())

    def _on_telemetry(self, tel: dict[str, Any]) -> None:
        """A command workload's group CPU time, from every telemetry message (the agent's own thread,
        as the output lines: one at a time)."""
        if self.obs.progress.feed_cpu(tel.get("workload_cpu") or {}):
            self._advanced()

    def _pressure(self) -> None:
        assert self.client and self.timeline and self.scheduler
        sc, obs, tl = self.sc, self.obs, self.timeline
        wl = workload.get(sc.workload.kind)
        argv = wl.argv(sc)
        self.phase("workload", " ".join(argv[1:]), argv=argv)
        (self.dir.path / casefile.WORKLOAD_LINES).touch()  # there even when the workload prints nothing
        if wl.progress_from_telemetry:
            self.client.agent.on_telemetry.append(self._on_telemetry)
        if sc.evidence.dump != "never":
            self._pause_on_panic()
        job = self.client.agent.start(argv, on_line=self._on_line)
        obs.pressure_start = self.history.now()
        tl.restart_clock(obs.pressure_start)
        self.scheduler.start()
        while True:
            self._until_end(job)
            obs.pressure_end = self.history.now()
            if obs.ended_by != "stall":
                break
            self._evidence()
            # The guest is looked at again once the evidence is taken: one that moved meanwhile (or
            # finished, or died) was slow, not stuck; the stall is withdrawn and the end classified again.
            if job.done() or not self.client.alive() or tl.last_activity_t > obs.pressure_end:
                self.history.add("workload", "stall-withdrawn", progress=obs.progress.done,
                                 last_activity_t=round(tl.last_activity_t, 1))
                obs.ended_by, obs.stall_since, obs.pressure_end, obs.evidence = "", None, None, None
                self.phase("workload", "the guest moved while the evidence was taken")
                continue
            break
        if self._on_telemetry in self.client.agent.on_telemetry:
            self.client.agent.on_telemetry.remove(self._on_telemetry)
        if obs.ended_by == "finished" and wl.ends_by_exit:
            self._exited_zero(wl)
        if obs.ended_by == "finished":
            obs.client_answers = self.client.agent.ping(15) is not None
            self.history.add("probe", "client-answers", ok=obs.client_answers)
            if obs.client_answers:
                self._counters("after")
                if self.sc.evidence.dump == "always":  # one to compare the failures' with
                    self._memory_dump("finished")
            else:
                self._evidence()

    def _exited_zero(self, wl: workload.Workload) -> None:
        """A workload that ends by its exit status exited 0: its verification command, if it has one, decides
        whether it finished (exit 0) or its data did not check out (anything else: `corrupted`); recorded for
        `judge`."""
        assert self.client
        sc, p = self.sc, self.obs.progress
        finished: dict[str, Any] = {"done": True, "command": wl.command(sc),
                                    "seconds": round((self.obs.pressure_end or 0) - (self.obs.pressure_start or 0), 1)}
        argv = wl.verification(sc)
        if argv:
            timeout = self.deadlines.progress_s + self.deadlines.recover_s
            self.phase("verify", " ".join(argv))
            try:
                res = self.client.exec(argv, timeout)
            except GuestError as e:
                self.history.add("workload", "verify", argv=argv, status=None, error=str(e))
                p.error = f"verification `{workload.shorten(argv)}` got no answer: {e}"
                return
            out = (res.stdout + res.stderr).strip().splitlines()[-5:]
            self.history.add("workload", "verify", argv=argv, status=res.status, timed_out=res.timed_out, output=out)
            if res.timed_out:
                p.error = f"verification `{workload.shorten(argv)}` did not finish in {timeout:.0f} s"
                return
            if res.status < 0 or res.status in (126, 127):  # killed, or never ran: it checked nothing
                p.error = f"verification `{workload.shorten(argv)}` could not check (status {res.status}): {' | '.join(out[-2:])}"
                return
            if res.status != 0:
                p.mismatch = {"verify": argv, "status": res.status, "output": out}
                return
            finished["verify"] = {"argv": argv, "status": 0}
        p.finished = finished
        self.history.add("workload", "finished", **finished)

    def _until_end(self, job: Any) -> None:
        """Poll until the workload ends, the client dies, progress stalls or the total deadline."""
        assert self.client
        sc, obs, tl = self.sc, self.obs, self.timeline
        assert tl
        while True:
            time.sleep(POLL_S)
            check_interrupted()
            now = self.history.now()
            if self.history.write_error:
                raise self._disk_full(self.history.write_error)
            if job.done() and self.client.agent.closed.is_set():
                # The channel closed under a running job: QEMU is exiting (panic, poweroff).
                if self.client.proc:
                    try:
                        self.client.proc.wait(10)
                    except subprocess.TimeoutExpired:
                        pass
                obs.ended_by = "client-died"
                self.history.add("workload", "channel-closed", qemu_alive=self.client.alive())
                break
            if job.done():
                res = job.wait(5)
                obs.workload_status, obs.workload_stderr = res.status, res.stderr
                obs.ended_by = "finished" if res.status == 0 else "workload-failed"
                self.history.add("workload", "exit", status=res.status, stderr=res.stderr[-500:])
                break
            if tl.rows and tl.rows[-1].get("client_status") == "guest-panicked":
                self._panicked()
                obs.ended_by = "client-died"
                break
            if not self.client.alive():
                obs.ended_by = "client-died"
                self.history.add("workload", "client-gone", qemu=self.client.exit_info())
                break
            if self._stalled(now):
                obs.ended_by, obs.stall_since = "stall", tl.last_activity_t
                self.history.add("workload", "stall", last_progress_t=round(tl.last_activity_t, 1), progress=obs.progress.done,
                                 last_workload_progress_t=round(tl.last_progress_t, 1))
                break
            if now - obs.pressure_start > self.deadlines.total_s:
                obs.ended_by = "total-deadline"
                self.history.add("workload", "total-deadline", total_s=round(self.deadlines.total_s, 1),
                                 progress=obs.progress.done)
                break

    def _evidence(self) -> None:
        """Blocked tasks and memory (sysrq w, m through QMP: nothing needed from guest userspace),
        then the path helpers' states if the guest still answers; parsed into evidence.json."""
        assert self.client
        self.phase("evidence", "sysrq w, m via QMP")
        taken = self.history.now()
        dump = self.dir.path / casefile.SYSRQ
        if dump.exists():  # from a stall that was withdrawn: kept under its time, never read as this one
            dump.rename(dump.with_name(f"sysrq-client-withdrawn-{int(taken)}.txt"))
        sysrq_dump(self.client, "wm", dump, self.history)
        state = self._memory_dump(self._dump_why()) if self.sc.evidence.dump != "never" else None
        if self.sc.evidence.dump != "never" and self.nas is not None and self.nas.machine() and self._nas_suspect():
            self._memory_dump(self._dump_why(), "nas")  # the NAS side is suspect: its state too
        at_stall = helpers.states(self.client, self.sc.path_processes())
        self.history.add("fact", "path-helpers-at-stall", helpers=at_stall)
        text = dump.read_text() if dump.exists() else ""
        facts = StallFacts(self.sc.storage.protocol, tuple(at_stall) if isinstance(at_stall, list) else (),
                           state=DumpState.from_forensics({**state, "why": self._dump_why()}) if state else None)
        self.obs.facts = facts
        if "Show Blocked State" not in text:  # sysrq w never printed: there is no evidence, not an empty one
            self.history.add("evidence", "no-dump", reason="sysrq w printed nothing on the console")
            ev_dumped = forensics.evidence_of(state, round(taken, 3)) if state else None
            if ev_dumped is not None and ev_dumped.blocked:  # the memory dump still shows who waits where
                self.dir.write_json(casefile.EVIDENCE, {"evidence": ev_dumped.to_dict(), "facts": facts.to_dict(),
                                                        "telemetry": "not read (from the memory dump)"})
                self.obs.evidence = ev_dumped
                self.history.add("evidence", "blocked-from-memory-dump", tasks=len(ev_dumped.blocked))
            return
        zoneinfo = (self.dir.path / ZONEINFO).read_text() if (self.dir.path / ZONEINFO).exists() else None
        ev = read_evidence(text, taken_t=round(taken, 3), sources=(casefile.SYSRQ, ZONEINFO), zoneinfo=zoneinfo)
        tel = self.client.agent.fresh_telemetry()
        self.dir.write_json(casefile.EVIDENCE, {"evidence": ev.to_dict(), "facts": facts.to_dict(),
                                                "telemetry": tel or "stale (the agent stopped answering)"})
        self.obs.evidence = ev

    def _pause_on_panic(self) -> None:
        """A guest panic pauses the client from now on (QMP set-action; the guest's pvpanic driver tells
        QEMU), so that it can be dumped; before, a panic ends QEMU (-no-reboot), as at boot."""
        assert self.client
        try:
            self.client.qmp.cmd("set-action", timeout=5, panic="pause")
            self.history.add("fact", "panic-action", action="pause")
        except GuestError as e:  # an older QEMU: a panic ends QEMU, and nothing is dumped
            self.history.add("fact", "panic-action", action="qemu default", error=str(e))

    def _panicked(self) -> None:
        """The client panicked and QEMU paused it: its memory is dumped, then QEMU is ended (the case goes
        on as for a client that died)."""
        assert self.client
        self.history.add("workload", "client-panicked")
        if self.sc.evidence.dump != "never":
            self._memory_dump("panic")
        try:
            self.client.qmp.quit()
        except GuestError:
            pass
        if self.client.proc:
            try:
                self.client.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.history.add("workload", "client-gone", qemu=self.client.exit_info(), after="panic")

    def _dump_why(self) -> str:
        return "stall" if self.obs.ended_by == "stall" else "no-answer"

    def _memory_dump(self, why: str, machine: str = "client") -> dict[str, Any] | None:
        """A VM's memory (the client's; or the NAS VM's where the NAS side is suspect), from the host
        (testbed/vm/dump.py), read into forensics.json (the NAS's: forensics-nas.json) where drgn is
        installed (testbed/forensics); what was read, or None. A dump or a reading that fails is recorded,
        never a verdict change."""
        vm = self.client if machine == "client" else (self.nas.machine() if self.nas else None)
        if vm is None:
            return None
        self.phase("evidence", f"memory dump of the {machine} ({why})")
        d = guest_dump.take(vm.qmp, guest_dump.dumps_dir(self.tag, self.case_id) / f"{machine}-{why}.kdump")
        self.history.add("evidence", "memory-dump", vm=machine, why=why, **d.record())
        gone = guest_dump.prune(keep=d.path.parent if d.path else None)
        if gone:  # the cache is bounded: the oldest cases' dumps went
            self.history.add("evidence", "memory-dumps-pruned", removed=gone)
        self.dumps.append(d)
        if self.sc.evidence.keep_dumps and d.path is not None:
            self.history.add("evidence", "memory-dump-kept", path=str(guest_dump.keep(d, self.dir.path)))
        if d.path is None:
            return None
        self.phase("evidence", "reading the dump (drgn)")
        source, release = self._kernel_of(machine)
        debug = symbols.ensure(source, release, lambda m: self.phase("evidence", m))
        # the protocol's reader knows the client's side of the storage path; the NAS's is read generically
        got = forensics.read_dump(d.path, release or None, self.sc.storage.role if machine == "client" else None, debug)
        self.dir.write_json(forensics.FILE if machine == "client" else forensics.NAS_FILE,
                            {**got, "dump": d.record(), "why": why})
        self.history.add("evidence", "forensics", vm=machine, why=why, **forensics.summary(got))
        return got

    def _kernel_of(self, machine: str) -> tuple[dict[str, Any], str]:
        """The kernel a VM runs, as symbols.ensure wants it: its source and release."""
        if machine == "client":
            source = self.facts.get("kernel_source", {})
            return source, source.get("running") or source.get("release") or ""
        return symbols.of_image(self.facts.get("images", {}).get("nas", {}))

    def _nas_suspect(self) -> bool:
        """The NAS probes agree the NAS side failed over the last 30 s (readings.nas_trouble)."""
        now = self.history.now()
        return bool(self.timeline and readings.nas_trouble(self.timeline.rows, now - 30.0, now))

    def _counters(self, when: str) -> None:
        """The protocol's own counters; a stuck client may not answer, which is recorded, not fatal."""
        assert self.client and self.store
        try:
            self.counters[when] = self.store.counters(self.client)
        except GuestError as e:
            self.counters[when] = {"unavailable": str(e)}
        self.history.add("probe", f"storage-counters-{when}", **self.counters[when])

    def _stalled(self, now: float) -> bool:
        """Progress stopped in the guest: no workload progress, no swap in or out, no writeback
        completed for progress_s (host-side counters do not count: a NAS retransmitting into a ring
        nobody refills keeps them rising)."""
        tl, d = self.timeline, self.deadlines
        assert tl
        last = tl.last_activity_t
        if now - last > d.progress_s:
            return True
        # A healed fault the client never recovers from is the seed's deadlock: judge it at recover_s.
        for w in fault_windows(self.history.events):
            if w.end is not None and last < w.end and now - w.end > d.recover_s:
                return True
        return False

    def _finish(self, j: Judgement, wall: float) -> CaseResult:
        ok = is_ok(j.verdict, self.sc.expect)
        j.figures["case_wall_s"] = round(wall, 1)
        if self.dumps:  # what the dumps cost (the guest is stopped while QEMU copies its memory)
            j.figures["dump_s"] = round(sum(d.seconds for d in self.dumps), 1)
            j.figures["dump_mb"] = round(sum(d.mb or 0 for d in self.dumps), 1)
        data = {
            "case": self.case_id,
            "scenario": self.sc.name,
            "axes": self.axes,
            "verdict": j.verdict,
            "rule": j.rule,  # the row of the rule table that decided
            "expected": self.sc.expect,
            "as_expected": ok,
            "reasons": j.reasons,
            "mechanism": j.mechanism.to_dict() if j.mechanism else None,
            "figures": j.figures,
            "ended_by": self.obs.ended_by,
            "protocol_counters": self.counters,
            **self.facts,
        }
        self.history.add("verdict", j.verdict, reasons=j.reasons)
        self.history.close()
        path = self.dir.complete(data)
        self.ui.verdict(self.case_id, j.verdict, self.sc.expect, ok, j.reasons, str(path))
        return CaseResult(self.case_id, j.verdict, self.sc.expect, ok, str(path), data)


def scaled(d: Deadlines, factor: float) -> Deadlines:
    """The pressure deadlines stretched for a slower host (boot_s is the VM's own and stays)."""
    return replace(d, progress_s=d.progress_s * factor, recover_s=d.recover_s * factor, total_s=d.total_s * factor)


def run_case(loaded: LoadedScenario, run: RunDir, case_id: str, accel: str, ui: Ui,
             axes: dict[str, Any] | None = None) -> CaseResult:
    result = Case(loaded, run, case_id, accel, ui, axes).run()
    try:
        index.add_case(Path(result.path), run.path.parent)
    except (OSError, sqlite3.Error) as e:  # the folders are the truth; the index is rebuilt from them
        index.warn_once(str(run.path.parent), f"results index not updated ({e}): `testbed index --rebuild` "
                        "once there is room")
    return result


__all__ = ["run_case", "CaseResult", "Case"]
