"""One QEMU guest: start it, wait for its agent's `ready`, run commands, stop it. Registered for undo."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testbed.host import proc
from testbed.host.cleanup import Cleanup
from testbed.errors import GuestError
from testbed.vm import argv as qargv
from testbed.vm import shell
from testbed.vm.agent import Agent, ExecResult
from testbed.vm.caps import host_caps
from testbed.vm.qmp import Qmp


def tail(path: Path | None, lines: int = 6) -> str:
    """The last lines of a log, without our own `$ argv` lines; a kernel panic line wins if present."""
    if not path or not path.exists():
        return ""
    text = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip() and not ln.startswith("$ ")]
    panic = [i for i, ln in enumerate(text) if "Kernel panic" in ln]
    if panic:
        return " | ".join(text[max(0, panic[0] - 2) : panic[0] + 1])
    return " | ".join(text[-lines:])


class VM:
    backend = "vm"  # as a NAS: which backend (testbed/nas/host.py has the netns one)
    srv = "/srv"  # as a NAS: where its exports live (the data disk's mount point)

    def __init__(self, spec: qargv.VMSpec, cleanup: Cleanup):
        self.spec, self.cleanup = spec, cleanup
        self.argv = qargv.build(spec, host_caps())
        self.proc: subprocess.Popen[bytes] | None = None
        self.agent = Agent(spec.agent_socket, spec.name)
        self.qmp = Qmp(spec.qmp_socket, spec.name)
        self.started_at = 0.0
        self.ready_at = 0.0
        self.net_devs: list[str] = []  # guest interface names, in the order of spec.nics
        self.boot: dict[str, Any] = {}  # how it came up: mode cold|restored, and why not restored
        self.stopping = False  # set when we stop it: an exit after that is ours, not a failure

    def exit_info(self) -> dict[str, Any] | None:
        """How QEMU ended (status, and the signal that killed it), or None while it runs."""
        if self.proc is None or self.proc.poll() is None:
            return None
        rc = self.proc.returncode
        info: dict[str, Any] = {"status": rc}
        if rc < 0:
            try:
                info["signal"] = signal.Signals(-rc).name
            except ValueError:
                info["signal"] = f"signal {-rc}"
        return info

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def qemu_log(self) -> Path:
        return self.spec.qemu_log or self.spec.rundir / f"qemu-{self.name}.log"

    def start(self, timeout: float = 10) -> None:
        self.spec.rundir.mkdir(parents=True, exist_ok=True)
        for sock in (self.spec.qmp_socket, self.spec.agent_socket):
            sock.unlink(missing_ok=True)
        with open(self.qemu_log, "ab") as log:
            log.write(("$ " + " ".join(self.argv) + "\n").encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us, not QEMU: teardown stops it in order
                preexec_fn=proc.die_with_parent,  # SIGKILLed testbed: its QEMUs go too
            )
        self.started_at = time.monotonic()
        self.cleanup.push(f"QEMU {self.name} (pid {self.proc.pid})", self.stop)
        deadline = time.monotonic() + timeout
        try:
            self.agent.connect(deadline)
            self.qmp.connect(deadline)
        except GuestError:
            self._raise_if_dead()
            raise

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _raise_if_dead(self) -> None:
        if self.proc and self.proc.poll() is not None:
            raise GuestError(
                f"{self.name}: QEMU exited with status {self.proc.returncode}: {tail(self.qemu_log, 3)}"
                + (f"; console: {tail(self.spec.console, 4)}" if tail(self.spec.console) else "")
            )

    def wait_ready(self, timeout: float) -> float:
        """Seconds from QEMU start to the agent's `ready`; GuestError if it dies or never gets there."""
        deadline = time.monotonic() + timeout
        while not self.agent.ready.wait(0.1):
            self._raise_if_dead()
            if self.agent.closed.is_set() and not self.agent.ready.is_set():
                self._raise_if_dead()
            if time.monotonic() > deadline:
                raise GuestError(
                    f"{self.name}: guest did not report ready within {timeout:.0f} s"
                    f" (console: {tail(self.spec.console, 4) or 'empty'}; full log {self.spec.console})"
                )
        self.ready_at = time.monotonic()
        return self.ready_at - self.started_at

    def exec(self, argv: list[str], timeout: float = 60, check: bool = False) -> ExecResult:
        res = self.agent.exec(argv, timeout)
        return res.require(self.name) if check else res

    def sh(self, script: str, timeout: float = 60, check: bool = True, args: Sequence[str] = ()) -> ExecResult:
        """A guest shell snippet: a constant script whose values come as "$1", "$2" ... from `args`, or
        one joined from argv lists by testbed.vm.shell (the host never builds shell strings for itself)."""
        return self.exec(["/bin/sh", "-c", script, "sh", *args], timeout, check)

    def run_all(self, *steps: shell.Step, timeout: float = 60, check: bool = True) -> ExecResult:
        """Several commands in one guest process start (in a starved guest each start can take seconds)."""
        return self.sh(shell.script(*steps), timeout, check)

    def block_device(self, serial: str) -> str:
        """The guest block device whose virtio serial is `serial`."""
        res = self.sh('for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = "$1" ] && echo /dev/${d##*/}; done',
                      10, args=[serial])
        dev = res.stdout.strip().splitlines()
        if not dev:
            raise GuestError(f"{self.name}: no disk with serial {serial}")
        return dev[0]

    def schedstat(self) -> tuple[float, float] | None:
        """Seconds QEMU's threads (vCPUs included) ran, and spent runnable but waiting for a host CPU,
        summed from /proc/PID/task/*/schedstat: a guest starved by the host shows here, not inside."""
        if not self.proc:
            return None
        run = wait = 0
        try:
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                try:
                    fields = (task / "schedstat").read_text().split()
                    run, wait = run + int(fields[0]), wait + int(fields[1])
                except (OSError, IndexError, ValueError):  # a thread that ended meanwhile
                    continue
        except OSError:
            return None
        return run / 1e9, wait / 1e9

    def cpu_seconds(self) -> float:
        """QEMU's user+system CPU time: a busy guest (reclaim spinning) shows here even when it answers nothing."""
        if not self.proc:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, grace: float = 5) -> None:
        """Quit through QMP, then SIGTERM, then SIGKILL; close channels and remove our sockets."""
        self.stopping = True
        if self.proc and self.proc.poll() is None:
            try:
                self.qmp.quit()
            except GuestError:
                pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(grace)
        self.qmp.close()
        self.agent.close()
        for sock in (self.spec.qmp_socket, self.spec.agent_socket):
            sock.unlink(missing_ok=True)
