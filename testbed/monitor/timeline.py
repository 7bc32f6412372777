"""The 1 Hz timeline: guest telemetry beside workload progress, ping, QMP status, QEMU CPU time and
run-queue wait, and the independent NAS probes (testbed/monitor/probes.py).

Rows go to timeline.csv as they are sampled and stay in memory for the checker.
"""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path
from typing import Any

from testbed.errors import GuestError
from testbed.store.history import History
from testbed.monitor.ping import Pinger
from testbed.monitor.probes import NasProbe, ProbeError
from testbed.nas.base import Nas
from testbed.vm.machine import VM

_BEFORE_NAS = ["t", "phase", "progress", "total", "agent_age_s", "ping_ms", "client_status", "nas_status", "client_cpu_s",
               "client_run_s", "client_wait_s", "nas_probed"]
_AFTER_NAS = [
    "MemFree", "MemAvailable", "SwapTotal", "SwapFree", "Dirty", "Writeback",
    "pswpin", "pswpout", "pgscan_direct", "pgscan_kswapd", "pgscan_direct_throttle", "allocstall", "oom_kill",
    "nr_dirty", "nr_writeback", "nr_written", "PFMemallocDrop", "TCPMemoryPressures", "rx_bytes", "tx_bytes", "rx_drop",
    "ReasmReqds", "ReasmFails", "ReasmTimeout", "FragFails", "UdpRcvbufErrors", "workload_user_s", "workload_system_s",
]


def columns() -> list[str]:
    """timeline.csv's columns: the NAS probes' as the protocols registered now declare them."""
    return [*_BEFORE_NAS, *NasProbe.all_columns(), *_AFTER_NAS]


COLUMNS = columns()  # this package's protocols


# Completed writeback, swap-out included (pswpin/pswpout count I/O submitted, which a guest queueing
# to a dead server keeps doing); swap-in shows as the workload's own progress.
ACTIVITY = ("nr_written",)


def telemetry_row(tel: dict[str, Any]) -> dict[str, Any]:
    """The timeline's figures from one agent telemetry message."""
    mem = tel.get("meminfo", {})
    vm = tel.get("vmstat", {})
    tcp = tel.get("netstat", {}).get("TcpExt", {})
    devs = {k: v for k, v in tel.get("netdev", {}).items() if k != "lo"}
    row: dict[str, Any] = {k: mem.get(k) for k in ("MemFree", "MemAvailable", "SwapTotal", "SwapFree", "Dirty", "Writeback")}
    row.update({k: vm.get(k) for k in ("pswpin", "pswpout", "pgscan_direct", "pgscan_kswapd", "pgscan_direct_throttle", "oom_kill", "nr_dirty", "nr_writeback", "nr_written")})
    row["allocstall"] = sum(v for k, v in vm.items() if k.startswith("allocstall"))
    row["PFMemallocDrop"] = tcp.get("PFMemallocDrop")
    row["TCPMemoryPressures"] = tcp.get("TCPMemoryPressures")
    row["rx_bytes"] = sum(d.get("rx_bytes", 0) for d in devs.values())
    row["tx_bytes"] = sum(d.get("tx_bytes", 0) for d in devs.values())
    row["rx_drop"] = sum(d.get("rx_drop", 0) for d in devs.values())
    ip = tel.get("snmp", {}).get("Ip", {})
    row.update({k: ip.get(k) for k in ("ReasmReqds", "ReasmFails", "ReasmTimeout", "FragFails")})
    row["UdpRcvbufErrors"] = tel.get("snmp", {}).get("Udp", {}).get("RcvbufErrors")
    cpu = tel.get("workload_cpu") or {}  # a command workload's cgroup (empty for tb-work's own workloads)
    for key, col in (("user_usec", "workload_user_s"), ("system_usec", "workload_system_s")):
        row[col] = round(cpu[key] / 1e6, 3) if isinstance(cpu.get(key), int) else None
    return row


class Timeline:
    def __init__(self, path: Path, history: History, client: VM, nas: Nas | None, pinger: Pinger | None,
                 nas_probe: NasProbe | None = None):
        self.path, self.history, self.client, self.nas, self.pinger = path, history, client, nas, pinger
        self.nas_probe = nas_probe
        self._probing: threading.Thread | None = None  # the NAS probes' sample in flight
        self.rows: list[dict[str, Any]] = []
        self.phase = "setup"
        self.progress = 0
        self.total = 0
        self.last_progress_t = history.now()
        self.last_activity_t = self.last_progress_t  # workload progress or writeback completed in the guest
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)
        self._file = open(path, "w", newline="")
        self.columns = columns()
        self._csv = csv.DictWriter(self._file, fieldnames=self.columns)
        self._csv.writeheader()

    def set_progress(self, done: int, total: int) -> None:
        if done > self.progress:
            self.last_progress_t = self.history.now()
            self.last_activity_t = max(self.last_activity_t, self.last_progress_t)
        self.progress, self.total = done, total

    def restart_clock(self, t: float) -> None:
        """The pressure starts now: nothing before counts as progress or its absence."""
        self.last_progress_t = self.last_activity_t = t

    def _note_activity(self, row: dict[str, Any]) -> None:
        """Writeback (swap-out included) completed since the last row: the guest is moving."""
        prev = self.rows[-1] if self.rows else None
        if prev and any(isinstance(row.get(k), int) and isinstance(prev.get(k), int) and row[k] > prev[k]
                        for k in ACTIVITY):
            self.last_activity_t = max(self.last_activity_t, row["t"])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)  # one sample can take two QMP timeouts and a ping
        self._file.close()

    def _status(self, vm: VM | Nas | None) -> str:
        if vm is None:
            return ""
        if not vm.alive():
            return "dead"
        try:
            return vm.qmp.status()
        except GuestError:
            return "no-qmp"

    def _probe_nas(self, out: dict[str, Any]) -> None:
        assert self.nas_probe
        try:
            out.update(self.nas_probe.sample())
            out["nas_probed"] = 1
        except ProbeError as e:  # its own machinery broke: said once, its columns stay empty
            self.history.add("error", "nas-probe", message=str(e))
        except Exception as e:  # a probe bug must not pass for a silent NAS: recorded, the row says "not probed"
            self.history.add("error", "nas-probe", message=repr(e))

    def sample(self) -> dict[str, Any]:
        row: dict[str, Any] = {"t": round(self.history.now(), 2), "phase": self.phase,
                               "progress": self.progress, "total": self.total}
        probed: dict[str, Any] = {}
        # The NAS probes run beside the client's ping and QMP calls, so a row stays within its second;
        # while the last sample is still in flight no other starts (the row then says "not probed").
        beside = None
        if self.nas_probe and not (self._probing and self._probing.is_alive()):
            beside = self._probing = threading.Thread(target=self._probe_nas, args=(probed,), daemon=True)
            beside.start()
        agent = self.client.agent
        row["agent_age_s"] = round(time.monotonic() - agent.last_seen, 2) if agent.last_seen else None
        row["ping_ms"] = round(rtt, 2) if self.pinger and (rtt := self.pinger.ping(0.8)) is not None else None
        row["client_status"] = self._status(self.client)
        row["nas_status"] = self._status(self.nas)
        row["client_cpu_s"] = round(self.client.cpu_seconds(), 2)
        sched = self.client.schedstat()
        row["client_run_s"], row["client_wait_s"] = (round(sched[0], 2), round(sched[1], 2)) if sched else (None, None)
        if agent.telemetry:
            row.update(telemetry_row(agent.telemetry))
        if beside:
            beside.join(2.0)
        done = dict(probed) if beside and not beside.is_alive() else {}  # only a finished sample is written
        row["nas_probed"] = done.get("nas_probed", 0) if self.nas_probe else None
        row.update({k: done.get(k) for k in NasProbe.all_columns()})
        return row

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                row = self.sample()
            except Exception as e:  # recorded; sampling goes on (a gap in the timeline, not its end)
                self.history.add("error", "timeline-sample", message=repr(e))
                self._stop.wait(1.0)
                continue
            self._note_activity(row)
            self.rows.append(row)
            try:
                self._csv.writerow({k: row.get(k) for k in self.columns})
                self._file.flush()
            except OSError as e:  # a full results disk: the rows stay in memory, the runner ends the case
                self.history.write_error = self.history.write_error or e
            next_t += 1.0
            self._stop.wait(max(0.0, next_t - time.monotonic()))
