"""NBD: nbd-server on the NAS serves a file as a named export; the client runs nbd-client in its resident
ioctl mode (`-nonetlink`: in its default netlink mode nbd-client 3.24 sets the device up and exits, so
nothing would be locked or protected) with `-swap`, which makes it mlockall() itself and leave the OOM
killer's reach, and `-nofork` (kept running as an agent job): a daemonised client has lost the lock; the kernel's NBD driver marks its socket for the memory reserves when the device is used
for swap (sk_set_memalloc, Mel Gorman's swap-over-NBD series). The lock and the OOM protection are read
back from the running nbd-client (VmLck, oom_score_adj) and recorded with the attach facts.

nbd-server runs on a NAS VM only: it forks a child per connection, and its one foreground mode (-d) serves
a single connection, which the NAS probes' port check would take."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from testbed.check.frames import FrameClass, HelperLock
from testbed.errors import ConfigError, GuestError
from testbed.kernels.kconfig import Need
from testbed.nas import names as backend_names, traits as backend_traits
from testbed.nas.base import Nas
from testbed.storage.base import Ends, ServiceState, Storage, is_processes, parse_pgrep, parse_processes, use_block_device
from testbed.vm.machine import VM

if TYPE_CHECKING:  # type only: see testbed/storage/base.py
    from testbed.config.scenario import Scenario

BACKING = "nbd.img"  # under the NAS's srv
CONF = "/etc/nbd-server/tb.conf"
DEVICE = "/dev/nbd0"
CLIENT_STATUS = ("for p in $(pgrep -x nbd-client); do echo pid $p; grep -E 'VmLck|VmRSS' /proc/$p/status | tr -s ' \\t' ' '; "
                 "echo oom_score_adj $(cat /proc/$p/oom_score_adj); done")


# drivers/block/nbd.c (6.x): struct nbd_config's runtime_flags bits
NBD_RT_FLAGS = ((0, "TIMEDOUT"), (1, "DISCONNECT_REQUESTED"), (2, "DISCONNECTED"), (3, "HAS_PID_FILE"),
                (4, "HAS_CONFIG_REF"), (5, "BOUND"), (6, "DISCONNECT_ON_CLOSE"), (7, "HAS_BACKEND_FILE"))


def in_flight(dump: Any, tag_set: int) -> dict[str, int]:
    """Requests in flight on a block device: the driver tags held in each hardware queue of its struct
    blk_mq_tag_set (the sbitmap's set bits less those cleared but not yet folded back), against the depth."""
    held = depth = 0
    queues = dump.u32(tag_set + dump.off("blk_mq_tag_set", "nr_hw_queues"))
    tags = dump.u64(tag_set + dump.off("blk_mq_tag_set", "tags"))
    sb = dump.off("blk_mq_tags", "bitmap_tags")  # struct sbitmap_queue begins with its struct sbitmap
    word_size = dump.btf.sizeof("sbitmap_word")
    for q in range(min(queues, 64) if tags else 0):
        t = dump.u64(tags + 8 * q)
        if not t:
            continue
        total, shift = dump.u32(t + sb + dump.off("sbitmap", "depth")), dump.u32(t + sb + dump.off("sbitmap", "shift"))
        words, base = dump.u32(t + sb + dump.off("sbitmap", "map_nr")), dump.u64(t + sb + dump.off("sbitmap", "map"))
        depth += total
        for w in range(min(words, 4096)):
            bits = min(1 << shift, total - (w << shift))
            word = dump.u64(base + w * word_size + dump.off("sbitmap_word", "word"))
            cleared = dump.u64(base + w * word_size + dump.off("sbitmap_word", "cleared"))
            held += bin(word & ~cleared & ((1 << bits) - 1)).count("1")
    return {"in_flight": held, "tag_depth": depth}


@dataclass(frozen=True)
class NbdSpec:
    port: int = 10809  # nbd-server's port (the NAS probes and faults ask the protocol for it)
    export: str = "tb"  # the export's name
    timeout_s: int = 0  # nbd-client -timeout (0: the kernel's default, no timeout)

    def validate(self, source: str, path: str) -> None:
        if not 1 <= self.port <= 65535:
            raise ConfigError(source, f"{path}.port", "must be a TCP port (1..65535)")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", self.export):
            raise ConfigError(source, f"{path}.export", "must be a plain name (letters, digits, _ . -)")
        if self.timeout_s < 0:
            raise ConfigError(source, f"{path}.timeout_s", "must be >= 0")


def server_conf(export: str, port: int, listen: str, backing: str) -> str:
    return (f"[generic]\n    port = {port}\n    listenaddr = {listen}\n    allowlist = false\n\n"
            f"[{export}]\n    exportname = {backing}\n    flush = true\n    fua = true\n")


def parse_client_status(text: str) -> dict[str, Any]:
    """CLIENT_STATUS's lines -> {nbd_client_pids, nbd_client_vmlck_kb, nbd_client_oom_score_adj}: what
    protects the client's half of the path (several pids: the first, the resident one, counts)."""
    out: dict[str, Any] = {"nbd_client_pids": []}
    for line in text.splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[0] == "pid" and parts[1].isdigit():
            out["nbd_client_pids"].append(int(parts[1]))
        elif len(parts) >= 2 and parts[0] == "VmLck" and parts[1].isdigit():
            out.setdefault("nbd_client_vmlck_kb", int(parts[1]))
        elif len(parts) >= 2 and parts[0] == "VmRSS" and parts[1].isdigit():
            out.setdefault("nbd_client_vmrss_kb", int(parts[1]))
        elif len(parts) >= 2 and parts[0] == "oom_score_adj" and parts[1].lstrip("-").isdigit():
            out.setdefault("nbd_client_oom_score_adj", int(parts[1]))
    return out


def parse_server_pids(text: str) -> ServiceState:
    """`pgrep -x nbd-server` in the NAS."""
    return parse_pgrep(text, "nbd-server")


CONNECT_S = 90.0  # nbd-client's handshake and NBD_DO_IT, under TCG on a loaded host

class Nbd(Storage):
    name = "nbd"
    title = "NBD"
    spec = NbdSpec
    ports = (10809,)  # the default; a case's is storage.nbd.port (service_ports)
    client_processes = ("nbd-client",)
    nas_processes = ("nbd-server",)
    # nbd_queue_rq/nbd_handle_cmd/nbd_send_cmd submit, nbd_read_stat receives (drivers/block/nbd.c)
    frame_classes = (FrameClass("nbd", (r"nbd_\w+",), "inside the NBD client driver"),)

    def client_kernel_needs(self, sc: Scenario) -> tuple[Need, ...]:
        return (Need("CONFIG_BLK_DEV_NBD", "the NBD client device"),)

    def service_ports(self, sc: Scenario) -> tuple[int, ...]:
        return (sc.storage.nbd.port,)

    def check_backend(self, sc: Scenario, source: str) -> None:
        if not backend_traits(sc.nas.backend).detached_servers:
            able = ", ".join(n for n in backend_names() if backend_traits(n).detached_servers)
            raise ConfigError(source, "nas.backend", f"nbd needs nas.backend {able} (nbd-server forks per connection; "
                              f"its one foreground mode serves a single connection): not {sc.nas.backend}")

    def export(self, nas: Nas, sc: Scenario, ends: Ends) -> dict[str, Any]:
        n = sc.storage.nbd
        size = sc.backing_mb()
        backing = f"{nas.srv}/{BACKING}"
        nas.exec(["fallocate", "-l", f"{size}M", backing], 60, check=True)
        conf = server_conf(n.export, n.port, ends.nas_ip, backing)
        nas.sh('mkdir -p /etc/nbd-server && printf "%s" "$1" > "$2"', 10, args=[conf, CONF])
        self.start_service(nas, sc, ends)
        return {"export": n.export, "port": n.port, "backing_mb": size, "config": conf}

    def start_service(self, nas: Nas, sc: Scenario, ends: Ends) -> str:
        res = nas.exec(["nbd-server", "-C", CONF], 30)
        for _ in range(50):
            if nas.exec(["pgrep", "-x", "nbd-server"], 10).ok:
                return f"nbd-server -C {CONF}"
            time.sleep(0.1)
        raise GuestError(f"NAS: nbd-server -C {CONF} is not running: {(res.stderr or res.stdout).strip()[-300:]}")

    def stop_service(self, nas: Nas, sc: Scenario, ends: Ends) -> str:
        nas.exec(["pkill", "-x", "nbd-server"], 10)
        return "pkill -x nbd-server"

    def service_argv(self, nas: Nas, sc: Scenario, ends: Ends) -> list[str] | None:
        return nas.processes_argv("nbd-server")

    def parse_service(self, text: str) -> ServiceState:
        return parse_processes(text) if is_processes(text) else parse_server_pids(text)

    def read_state(self, dump: Any, sockets: list[dict[str, Any]]) -> dict[str, Any]:
        """Each configured NBD device (the nbd module's IDR of struct nbd_device): its runtime flags, its
        connections (the TCP socket each is, whether dead, a request half sent) and the requests in flight
        (tags held in its blk-mq tag set)."""
        nbd = dump.module_btf("nbd")
        by_sk = {s["sk"]: s for s in sockets if "sk" in s}
        o = {k: nbd.offsetof("nbd_config", k) for k in ("runtime_flags", "socks", "num_connections",
                                                        "live_connections", "recv_threads")}
        ns_off = {k: nbd.offsetof("nbd_sock", k) for k in ("sock", "pending", "sent", "dead", "cookie")}
        out = []
        idr = dump.module_object("nbd_index_idr", "nbd")
        for index, dev in dump.xarray(idr + nbd.offsetof("idr", "idr_rt")):
            config = dump.u64(dev + nbd.offsetof("nbd_device", "config"))
            if not config:  # a device no client configured
                continue
            flags = dump.u64(config + o["runtime_flags"])
            n: dict[str, Any] = {"device": f"nbd{index}", "runtime_flags": [f for b, f in NBD_RT_FLAGS if flags >> b & 1],
                                 **{k: dump.u32(config + o[k]) for k in ("num_connections", "live_connections",
                                                                         "recv_threads")}}
            socks, conns = dump.u64(config + o["socks"]), []
            for i in range(min(n["num_connections"], 64) if socks else 0):
                ns = dump.u64(socks + 8 * i)
                sk = dump.u64(dump.u64(ns + ns_off["sock"]) + dump.off("socket", "sk"))
                s = by_sk.get(sk)
                conns.append({"socket": f"{s['local']}>{s['remote']}" if s else "not among the connected TCP sockets",
                              "dead": bool(dump.prog.read_u8(ns + ns_off["dead"])),
                              "half_sent": bool(dump.u64(ns + ns_off["pending"])), "sent_bytes": dump.u32(ns + ns_off["sent"]),
                              "cookie": dump.u32(ns + ns_off["cookie"])})
            n["connections"] = conns
            n.update(in_flight(dump, dev + nbd.offsetof("nbd_device", "tag_set")))
            out.append(n)
        return {"nbd_devices": out}

    def attach(self, client: VM, sc: Scenario, ends: Ends) -> dict[str, Any]:
        n = sc.storage.nbd
        client.exec(["modprobe", "nbd", "nbds_max=2"], 30, check=True)
        # -nofork, as an agent job for the whole case: a forked nbd-client loses the mlockall() of -swap
        # (memory locks are not inherited across fork: measured VmLck 0 kB on the daemonised client).
        argv = ["nbd-client", ends.nas_ip, str(n.port), DEVICE, "-name", n.export, "-nonetlink", "-swap", "-nofork"]
        if n.timeout_s:
            argv += ["-timeout", str(n.timeout_s)]
        lines: list[str] = []
        job = client.agent.start(argv, on_line=lines.append)
        # The resident client holds the device once NBD_DO_IT runs. Waited for by the clock, not by a count
        # of tries: on a loaded host under TCG the handshake with the NAS VM took more than 100 tries (18 s).
        deadline = time.monotonic() + CONNECT_S
        while True:
            size = client.exec(["cat", "/sys/block/nbd0/size"], 10).stdout.strip()
            if size.isdigit() and int(size) > 0:
                break
            if job.done():
                raise GuestError(f"client: {' '.join(argv)} exited: {' | '.join(lines[-3:])}")
            if time.monotonic() > deadline:
                raise GuestError(f"client: {DEVICE} has no size {CONNECT_S:.0f} s after nbd-client started: "
                                 f"{' | '.join(lines[-3:])}")
            time.sleep(0.2)
        status = parse_client_status(client.sh(CLIENT_STATUS, 10).stdout)
        if not status["nbd_client_pids"]:
            raise GuestError("client: no resident nbd-client after -nonetlink (nothing holds the device)")
        facts = use_block_device(client, DEVICE, sc)
        lock = HelperLock("nbd-client", status.get("nbd_client_vmlck_kb"), status.get("nbd_client_oom_score_adj"))
        facts.update(nbd_client=" ".join(argv), **status, helper_locks=[lock.to_dict()])
        return facts

    def counters(self, client: VM) -> dict[str, Any]:
        """After the pressure: the resident client's lock and OOM protection still in place?"""
        return parse_client_status(client.sh(CLIENT_STATUS, 10, check=False).stdout)
