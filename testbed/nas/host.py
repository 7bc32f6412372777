"""The netns NAS: userspace servers (nfs-ganesha with a private rpcbind, tgt, vblade) on the host, in
a network namespace of the run (`<tag>-nas`) joined to the switch by a veth whose bridge end has
the name the NAS's tap would have. Its data lives in the run's folder (`nas-srv/`), as the VM NAS's
data disk does.

`HostNas` is the `Nas` face (testbed/nas/base.py) of it: `exec`, `sh`, `run_all`, `agent.start` (a job),
`agent.ping` and `qmp.status` (whether its servers run, or are stopped), `serve` (a server as a
process group of ours), `net_devs`, `srv`. What only a VM has (a guest kernel to freeze, a console,
sysrq) it does not pretend to have (`machine()` is None): faults that need it are refused when the
scenario is checked.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from testbed.host import proc
from testbed.host.cleanup import Cleanup, wait_result
from testbed.errors import GuestError
from testbed.host.paths import data_dir
from testbed.nas.base import PROCS_HEADER, Backend, NasSetup, Traits
from testbed.vm import shell
from testbed.vm.agent import ExecResult
from testbed.vm.machine import VM

IFACE = "eth0"


def netns_name(tag: str) -> str:
    return f"{tag}-nas"


class HostJob:
    """A command in the NAS's namespace, like an agent job: wait() for its ExecResult, kill()."""

    def __init__(self, argv: list[str], full: list[str], timeout: float, on_line: Callable[[str], None] | None):
        self.argv = argv
        self.timeout = timeout
        self.on_line = on_line
        self.p = subprocess.Popen(full, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                                  start_new_session=True, preexec_fn=proc.die_with_parent)
        self._out: list[str] = []
        self._errs: list[str] = []
        self._readers = [threading.Thread(target=self._read, daemon=True, name=f"nas-job-{self.p.pid}"),
                         threading.Thread(target=self._read_err, daemon=True, name=f"nas-job-err-{self.p.pid}")]
        for t in self._readers:
            t.start()

    def _read(self) -> None:
        assert self.p.stdout
        for line in self.p.stdout:
            if self.on_line:
                self.on_line(line.rstrip("\n"))
            else:
                self._out.append(line)

    def _read_err(self) -> None:  # apart from stdout: a full stderr pipe must never stall the command
        assert self.p.stderr
        self._errs.append(self.p.stderr.read())

    def done(self) -> bool:
        return self.p.poll() is not None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.p.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float | None = None) -> ExecResult:
        limits = [t for t in (self.timeout, timeout) if t]
        limit = min(limits) if limits else None
        timed_out = False
        try:
            self.p.wait(limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            self.kill()
            self.p.wait(5)
        for t in self._readers:
            t.join(5)
        return ExecResult(self.argv, self.p.returncode if self.p.returncode is not None else -1, "".join(self._out),
                          "".join(self._errs), timed_out=timed_out)


class HostAgent:
    """The agent-shaped face of the netns NAS."""

    def __init__(self, nas: HostNas):
        self.nas = nas

    def start(self, argv: list[str], *, timeout: float = 0, on_line: Callable[[str], None] | None = None) -> HostJob:
        job = HostJob(argv, self.nas.probe_prefix(argv), timeout, on_line)
        if timeout == 0:  # a server for the whole case (vblade): ended with the case
            self.nas.undo.push(f"NAS process {' '.join(argv[:2])} (pid {job.p.pid})", _end, job)
        return job

    def ping(self, timeout: float = 5) -> float | None:
        """None when a server process of the NAS is stopped (a service freeze) or its namespace is gone;
        else the seconds it took to look. A userspace NAS has no guest to ask: its processes are what
        answers (a server stopped by restart-service is the service probe's to report, as for a VM)."""
        t = time.monotonic()
        state = self.nas.server_state()
        return time.monotonic() - t if state in ("running", "gone") and self.nas.alive() else None


def _end(job: HostJob) -> None:
    job.kill(signal.SIGTERM)
    try:
        job.p.wait(3)
    except subprocess.TimeoutExpired:
        job.kill(signal.SIGKILL)
        job.p.wait(5)


class HostStatus:
    """`qmp.status()` of a NAS without QEMU, with a VM's meaning: `running` while its namespace is there
    (its servers may be down: a restarted service is the service probe's to see, as with a NAS VM),
    `paused` while a server is stopped (service-freeze), `dead` once the namespace is gone."""

    def __init__(self, nas: HostNas):
        self.nas = nas

    def status(self) -> str:
        if not self.nas.alive():
            return "dead"
        return "paused" if self.nas.server_state() == "stopped" else "running"


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(d.name))
    return out


def processes_argv(tag: str, comm: str) -> list[str]:
    """The NAS's own processes named `comm` with their state letter, one `pid state` a line, run on the
    host. They are found by `ip netns pids`, not pgrep: another run's servers are on the same host."""
    return ["/bin/sh", "-c", f'echo "{PROCS_HEADER} $2"; for p in $(ip netns pids "$1"); do '
            '[ "$(cat /proc/$p/comm 2>/dev/null)" = "$2" ] && '
            'echo "$p $(cut -d")" -f2 /proc/$p/stat | cut -d" " -f2)"; done; true', "sh", netns_name(tag), comm]


class HostNas:
    traits = Traits("netns", "host, in the NAS namespace", own_kernel=False, detached_servers=False,
                    shares_host_run=True)

    def __init__(self, tag: str, root: Path, undo: Cleanup):
        self.tag = tag
        self.name = netns_name(tag)
        self.netns = netns_name(tag)
        self.root = root
        self.srv = str(root / "srv")
        self.undo = undo
        self.net_devs = [IFACE]
        self.agent = HostAgent(self)
        self.qmp = HostStatus(self)
        self.boot: dict[str, Any] = {"mode": "netns"}
        self.scratch: dict[str, Any] = {}
        self.servers: dict[str, subprocess.Popen[bytes]] = {}  # name -> daemon started by serve()
        # Servers are started from this one thread, which lives until teardown: their parent-death signal
        # (die_with_parent) fires when the *thread* that started them ends, and a heal runs on a fault
        # thread that ends right after it.
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-servers")
        undo.push(f"{self.name} server starter", self._spawner.shutdown, True)

    def alive(self) -> bool:
        return os.path.exists(f"/run/netns/{self.netns}")

    # What differs for a NAS in a container (testbed/nas/container.py): how a command enters it, how a
    # server is started, signalled and seen, and where its files are seen from the host.
    def prefix(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def probe_prefix(self, argv: list[str]) -> list[str]:
        """How a probe's command (the service check) runs: here as any command."""
        return self.prefix(argv)

    def host_path(self, path: str) -> Path:
        return Path(path)

    def host_dir(self) -> Path:
        return self.root

    def machine(self) -> VM | None:
        return None

    def on_undo(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        self.undo.push(what, fn, *args)

    def processes_argv(self, comm: str) -> list[str]:
        return processes_argv(self.tag, comm)

    def launch(self, name: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            return subprocess.Popen(self.prefix(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=proc.die_with_parent)

    def signal_group(self, name: str, sig: int, p: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass

    def members(self, name: str, p: subprocess.Popen[bytes]) -> list[int]:
        return group_members(p.pid)

    def leader(self, name: str, p: subprocess.Popen[bytes]) -> int | None:
        return p.pid

    def exec(self, argv: list[str], timeout: float = 60, check: bool = False) -> ExecResult:
        res = HostJob(list(argv), self.prefix(list(argv)), timeout, None).wait()
        return res.require(self.name) if check else res

    def sh(self, script: str, timeout: float = 60, check: bool = True, args: Sequence[str] = ()) -> ExecResult:
        return self.exec(["/bin/sh", "-c", script, "sh", *args], timeout, check)

    def run_all(self, *steps: shell.Step, timeout: float = 60, check: bool = True) -> ExecResult:
        return self.sh(shell.script(*steps), timeout, check)

    def serve(self, name: str, argv: list[str], *, ready: Callable[[], bool] | None = None, timeout: float = 20,
              settle_s: float = 0.0, log: Path | None = None) -> None:
        """Start a daemon in the foreground in the NAS's namespace (its process group is ours to end),
        and wait until `ready()`, then `settle_s`; GuestError with its log's tail when it exits before
        or never gets there."""
        self.stop_server(name)
        log = log or self.root / f"{name}.log"
        p = wait_result(self._spawner.submit(self.launch, name, argv, log))
        self.servers[name] = p
        self.undo.push(f"NAS server {name} (pid {p.pid})", self.stop_server, name)
        deadline = time.monotonic() + timeout
        while not (ready is None or ready()):
            if p.poll() is not None or time.monotonic() > deadline:
                raise self._failed(name, log, p, f"not ready after {timeout:.0f} s")
            time.sleep(0.1)
        time.sleep(settle_s)
        if settle_s and self.server_state() != "running":
            raise self._failed(name, log, p, "stopped")

    def _failed(self, name: str, log: Path, p: subprocess.Popen[bytes], otherwise: str) -> GuestError:
        text = log.read_text(errors="replace").strip().splitlines()[-4:] if log.exists() else []
        why = f"exited {p.returncode}" if p.poll() is not None else otherwise
        return GuestError(f"{self.name}: {name} {why}: {' | '.join(text)}")

    def stop_server(self, name: str) -> str:
        """End a server's whole process group (ganesha's includes its rpcbind): SIGTERM, then SIGKILL."""
        p = self.servers.pop(name, None)
        if p is None:
            return f"{name}: not running"
        for sig, wait in ((signal.SIGCONT, 0.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            if not self.members(name, p):
                break
            self.signal_group(name, sig, p)
            deadline = time.monotonic() + wait
            while self.members(name, p) and time.monotonic() < deadline:
                p.poll()  # reaps our own child; its orphans are init's to reap
                time.sleep(0.05)
        p.poll()
        return f"{name} stopped (SIGTERM, then SIGKILL)"

    def signal_servers(self, sig: int) -> str:
        """Send sig to every server's process group (SIGSTOP/SIGCONT: a service freeze); what was done."""
        done = []
        for name, p in list(self.servers.items()):
            if p.poll() is None:
                self.signal_group(name, sig, p)
                done.append(f"{name} (group of pid {self.leader(name, p)})")
        want = "stopped" if sig == signal.SIGSTOP else "running"
        deadline = time.monotonic() + 2
        while done and self.server_state() not in (want, "gone") and time.monotonic() < deadline:
            time.sleep(0.02)  # a signal is delivered when the process is next scheduled
        return f"{signal.Signals(sig).name} to " + (", ".join(done) or "no server (none running)")

    def server_state(self) -> str:
        """running, stopped (a server's process is stopped: SIGSTOP) or gone (none runs)."""
        live = [(n, p) for n, p in list(self.servers.items()) if p.poll() is None]
        if not live:
            return "gone"
        for name, p in live:
            try:
                fields = Path(f"/proc/{self.leader(name, p)}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return "gone"
            if fields[0] in ("T", "t"):
                return "stopped"
        return "running"


def make_root(tag: str, undo: Cleanup, what: str) -> Path:
    """The NAS's data folder (on disk: the runtime folder may be a tmpfs, where a swap file or LUN
    would pin host memory), made for the run and removed with it."""
    root = data_dir() / tag
    (root / "srv").mkdir(parents=True, exist_ok=True)
    undo.push(f"{what} NAS data {root}", shutil.rmtree, root, True)
    return root


class NetnsBackend(Backend):
    """Its namespace and veth are made by the network builder (`netns`)."""

    traits = HostNas.traits

    def netns(self) -> str:
        return netns_name(self.tag)

    def describe(self) -> str:
        return f"netns: userspace servers in namespace {self.netns()}"

    def start(self, s: NasSetup) -> HostNas:
        return HostNas(self.tag, make_root(self.tag, s.undo, "netns"), s.undo)
