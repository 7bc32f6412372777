"""NFS: kernel nfsd on the NAS VM exports /srv/nfs, or nfs-ganesha (with a private rpcbind) on a
netns NAS exports the run's folder under the same path (its pseudo path, which NFSv3 mounts too).
For swap, the swap file is made there (a 96 MB client could not `dd` one itself); the client mounts
with the scenario's version and swaps on it. For the file workloads the mount itself is the filesystem."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from testbed.check.frames import FrameClass
from testbed.errors import ConfigError, GuestError, TestbedError
from testbed.kernels.kconfig import Need
from testbed.nas.base import Nas
from testbed.storage.base import MOUNT, Ends, ServiceState, Storage, is_processes, mounted, parse_processes
from testbed.vm.machine import VM

if TYPE_CHECKING:  # type only: see testbed/storage/base.py
    from testbed.config.scenario import Scenario

EXPORT = "/srv/nfs"  # what the client mounts (ganesha: the pseudo path of the run's folder)
SWAPFILE = "swapfile"
# A short grace period: nfsd otherwise refuses NFSv4 opens for 90 s after it starts.
START_NFSD = ("modprobe nfsd && mount -t nfsd nfsd /proc/fs/nfsd"
              " && echo 10 > /proc/fs/nfsd/nfsv4gracetime && echo 10 > /proc/fs/nfsd/nfsv4leasetime"
              " && mkdir -p /run/rpcbind /var/lib/nfs/v4recovery && rpcbind -w"
              " && exportfs -ra && rpc.mountd && rpc.nfsd 8")
# Is nfsd serving: its thread count (0 after `rpc.nfsd 0`; empty when the nfsd filesystem is not
# mounted) and rpc.mountd's pids (nfsd asks mountd about exports whenever its cache entries expire).
SERVICE = "echo threads $(cat /proc/fs/nfsd/threads 2>/dev/null); echo mountd $(pgrep -x rpc.mountd)"
# ganesha and its rpcbind share one mount namespace with a private /run (rpcbind's socket, ganesha's
# registrations), so neither meets the host's nor another run's; both are one process group, ended together.
# The run's folder ($4, under the host's /run on most hosts) is kept visible by binding it back from an
# fd opened before the tmpfs hid it. The shell stays as their parent and reaps both when the group gets
# SIGTERM (its trap only interrupts the first wait), so neither is left a zombie for init; when ganesha
# exits by itself, its rpcbind goes too and the shell exits with ganesha's status.
GANESHA = ('exec 3<"$4" && mount -t tmpfs tmpfs /run && mkdir -p "$4" /run/rpcbind && '
           'mount -c --bind /proc/self/fd/3 "$4" && exec 3<&- && trap : TERM && { rpcbind -f -w & } && r=$! && '
           'for i in $(seq 100); do [ -S /run/rpcbind.sock ] && break; sleep 0.05; done && '
           '{ ganesha.nfsd -F -f "$1" -L "$2" -p "$3" & } && wait $!; s=$?; kill $r 2>/dev/null; wait; exit $s')
# In a container /run is its own already: the same without the private mount.
GANESHA_CONTAINED = ('mkdir -p /run/rpcbind && trap : TERM && { rpcbind -f -w & } && r=$! && '
                     'for i in $(seq 100); do [ -S /run/rpcbind.sock ] && break; sleep 0.05; done && '
                     '{ ganesha.nfsd -F -f "$1" -L "$2" -p "$3" & } && wait $!; s=$?; kill $r 2>/dev/null; wait; exit $s')
# include/linux/sunrpc/xprt.h: rpc_xprt.state bits
XPRT_STATE = ((0, "LOCKED"), (1, "CONNECTED"), (2, "CONNECTING"), (3, "CLOSE_WAIT"), (4, "BOUND"), (5, "BINDING"),
              (6, "CLOSING"), (7, "OFFLINE"), (8, "REMOVE"), (9, "CONGESTED"), (10, "CWND_WAIT"), (11, "WRITE_SPACE"),
              (12, "SND_IS_COOKIE"))
KERNEL_SERVER, USERSPACE_SERVER = "kernel", "ganesha"
RPC_QUEUE_BOUND = 10_000  # tasks read off one wait queue at most


def queued_procedures(dump: Any, rpc: Any, queue: int) -> dict[str, int]:
    """The RPC procedures (WRITE, READ, GETATTR...) of the tasks on a struct rpc_wait_queue, counted: each
    priority's list of tasks (u.tk_wait.list), and on a priority queue the tasks of the same owner behind
    each (u.tk_wait.links: net/sunrpc/sched.c __rpc_add_wait_queue_priority)."""
    o = {k: rpc.offsetof("rpc_task", k) for k in ("u.tk_wait.list", "u.tk_wait.links", "tk_msg.rpc_proc")}
    name_off, tasks_off = rpc.offsetof("rpc_procinfo", "p_name"), rpc.offsetof("rpc_wait_queue", "tasks")
    list_size = dump.btf.sizeof("list_head")
    maxprio = dump.u8(queue + rpc.offsetof("rpc_wait_queue", "maxpriority"))
    counts: dict[str, int] = {}
    seen = 0
    for prio in range(maxprio + 1):
        head = queue + tasks_off + list_size * prio
        node = dump.u64(head)
        while node != head and seen < RPC_QUEUE_BOUND:
            task = node - o["u.tk_wait.list"]
            members = [task]
            if maxprio:  # a priority queue: the owner's other tasks ring on the first one's links
                ring = task + o["u.tk_wait.links"]
                link = dump.u64(ring)
                while link != ring and len(members) < RPC_QUEUE_BOUND:
                    members.append(link - o["u.tk_wait.links"])
                    link = dump.u64(link)
            for m in members:
                proc = dump.u64(m + o["tk_msg.rpc_proc"])
                name = dump.cstr(dump.u64(proc + name_off), 32) if proc else "(none)"
                counts[name] = counts.get(name, 0) + 1
            seen += len(members)
            node = dump.u64(node)
    return counts  # what a NAS with a kernel of its own runs, and one without


def ganesha_root(nas: Nas) -> Path:
    """Where ganesha's configuration, log and recovery state go: a host folder the NAS sees at the same path."""
    root = nas.host_dir()
    if root is None:
        raise TestbedError(f"{nas.name}: ganesha needs a NAS that shares a folder with the host (nas.backend "
                           f"{nas.traits.name} has none; the scenario check chooses kernel nfsd there)")
    return root


def ganesha_conf(export_dir: str, recovery: str, nas_ip: str, client_ip: str, versions: str) -> str:
    """One export of export_dir at the pseudo path EXPORT, for the client only; short grace and lease
    as the kernel server gets them (START_NFSD)."""
    return f"""NFS_CORE_PARAM {{
  Bind_addr = {nas_ip};
  Protocols = {versions};
  Mount_Path_Pseudo = true;
  Enable_NLM = false;
  Enable_RQUOTA = false;
}}
NFSV4 {{
  RecoveryBackend = fs;
  RecoveryRoot = {recovery};
  Grace_Period = 10;
  Lease_Lifetime = 10;
}}
EXPORT {{
  Export_Id = 1;
  Path = {export_dir};
  Pseudo = {EXPORT};
  Access_Type = RW;
  Squash = No_Root_Squash;
  Protocols = {versions};
  Transports = TCP;
  SecType = sys;
  FSAL {{ Name = VFS; }}
  CLIENT {{ Clients = {client_ip}; Access_Type = RW; }}
}}
"""


@dataclass(frozen=True)
class NfsSpec:
    version: Literal["3", "4.0", "4.1", "4.2"] = "3"  # the mount's vers=
    transport: Literal["tcp", "udp"] = "tcp"  # the mount's proto= (udp: not in Debian 6.1's client)
    rsize: int | None = None  # the mount's rsize= (default: the server's choice)
    wsize: int | None = None  # the mount's wsize= (default: the server's choice)
    timeo: int = 100  # tenths of a second before an RPC retransmission
    hard: bool = True  # hard (retry for ever) or soft (give up: an I/O error) mount
    server: Literal["kernel", "ganesha"] | None = None  # default: what the NAS backend runs (kernel nfsd in a NAS VM, else ganesha)

    def validate(self, source: str, path: str) -> None:
        if self.transport == "udp":
            raise ConfigError(source, f"{path}.transport", "udp: unsupported by this guest kernel (Debian 6.1 builds NFS without UDP transport); use tcp")
        for name in ("rsize", "wsize"):
            v = getattr(self, name)
            if v is not None and not (1024 <= v <= 1048576 and v & (v - 1) == 0):
                raise ConfigError(source, f"{path}.{name}", "must be a power of two between 1024 and 1048576")


def mount_options(spec: NfsSpec) -> str:
    opts = [f"vers={spec.version}", f"proto={spec.transport}", "hard" if spec.hard else "soft", f"timeo={spec.timeo}"]
    if spec.version == "3":
        opts.append("nolock")  # no statd in the guests; swap needs no locks
    if spec.rsize:
        opts.append(f"rsize={spec.rsize}")
    if spec.wsize:
        opts.append(f"wsize={spec.wsize}")
    return ",".join(opts)


def parse_mountstats(text: str) -> dict[str, Any]:
    """Retransmissions and major timeouts summed over operations, plus the transport's line."""
    retrans = timeouts = ops = 0
    xprt = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("xprt:"):
            xprt = line
        m = re.match(r"^[A-Z_]+: (\d+) (\d+) (\d+) ", line)
        if m:
            o, trans, major = map(int, m.groups())
            ops += o
            retrans += max(0, trans - o)
            timeouts += major
    return {"nfs_ops": ops, "nfs_retrans": retrans, "nfs_major_timeouts": timeouts, "xprt": xprt}


def parse_service(text: str) -> ServiceState:
    """SERVICE's output, e.g. 'threads 8\\nmountd 412\\n' -> alive; 'threads 0' or no mountd -> not."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, rest = line.strip().partition(" ")
        if key in ("threads", "mountd"):
            fields[key] = rest.split()
    if "threads" not in fields:
        return ServiceState(None, f"unexpected output: {text.strip()[:100]!r}")
    threads = fields["threads"]
    mountd = [p for p in fields.get("mountd", []) if p.isdigit()]
    mountd_text = f"rpc.mountd pid {','.join(mountd)}" if mountd else "rpc.mountd not running"
    if not (threads and threads[0].isdigit()):
        return ServiceState(False, f"no nfsd (/proc/fs/nfsd/threads unreadable), {mountd_text}")
    n = int(threads[0])
    return ServiceState(n > 0 and bool(mountd), f"nfsd threads {n}, {mountd_text}")


class Nfs(Storage):
    name = "nfs"
    title = "NFS"
    spec = NfsSpec
    ports = (2049, 111)
    # The client's NFS is in the kernel (sunrpc); mount.nfs and rpc.* helpers are what userspace adds.
    client_processes = ("rpc.", "mount.nfs")
    nas_processes = ("nfsd", "rpc.mountd", "rpcbind")
    storage_kind = "NFS/RPC"
    host_tools = (("ganesha.nfsd", "nfs-ganesha nfs-ganesha-vfs", "nas.backend netns/docker with NFS"),
                  ("rpcbind", "rpcbind", "nas.backend netns with NFS"))
    frame_classes = (FrameClass("nfs-rpc", (r"nfs\w*", r"_*rpc_\w+", r"xprt_\w+", r"xs_\w+"),
                                "inside the NFS client or its RPC transport"),)
    stall_helpers = ("rpc.statd", "rpcbind")

    def variant(self, value: Callable[[str], Any]) -> str:
        return f"nfs{value('storage.nfs.version') or '3'}"

    def server(self, sc: Scenario) -> str:
        return sc.storage.nfs.server or self.default_server(sc, KERNEL_SERVER, USERSPACE_SERVER)

    def client_kernel_needs(self, sc: Scenario) -> tuple[Need, ...]:
        version = sc.storage.nfs.version
        needs = [Need("CONFIG_NFS_FS", "the NFS client")]
        if version == "3":
            needs.append(Need("CONFIG_NFS_V3", "storage.nfs.version 3"))
        else:
            needs.append(Need("CONFIG_NFS_V4", f"storage.nfs.version {version}"))
            minor = {"4.1": "CONFIG_NFS_V4_1", "4.2": "CONFIG_NFS_V4_2"}.get(version)
            if minor:
                needs.append(Need(minor, f"storage.nfs.version {version}"))
        if sc.workload.uses_swap:
            needs.append(Need("CONFIG_NFS_SWAP", "swap on a file over NFS (swapon refuses it otherwise)"))
        return tuple(needs)

    def nas_kernel_needs(self, sc: Scenario) -> tuple[Need, ...]:
        needs = [Need("CONFIG_NFSD", "the NAS VM's kernel NFS server")]
        if sc.storage.nfs.version != "3":
            needs.append(Need("CONFIG_NFSD_V4", f"nfsd serving storage.nfs.version {sc.storage.nfs.version}"))
        return tuple(needs)

    def check_backend(self, sc: Scenario, source: str) -> None:
        self.check_server(sc, source, "storage.nfs.server", self.server(sc), KERNEL_SERVER, USERSPACE_SERVER)

    def export(self, nas: Nas, sc: Scenario, ends: Ends) -> dict[str, Any]:
        facts: dict[str, Any] = {"server": self.server(sc)}
        export_dir = f"{nas.srv}/nfs"
        nas.exec(["mkdir", "-p", export_dir], 10, check=True)
        if sc.workload.uses_swap:
            swap = f"{export_dir}/{SWAPFILE}"
            nas.run_all(["fallocate", "-l", f"{sc.storage.swap_mb}M", swap], ["chmod", "600", swap], ["mkswap", swap], timeout=120)
            facts.update(swapfile=swap, swap_mb=sc.storage.swap_mb)
        if self.server(sc) == "ganesha":
            return {**facts, **self._ganesha(nas, sc, ends, export_dir)}
        line = f"{export_dir} {ends.client_ip}(rw,sync,no_root_squash,no_subtree_check,insecure)"
        nas.sh('printf "%s\\n" "$1" > /etc/exports', 10, args=[line])
        nas.sh(START_NFSD, 60)
        versions = nas.exec(["cat", "/proc/fs/nfsd/versions"], 10, check=True).stdout.strip()
        want = sc.storage.nfs.version
        tokens = versions.split()
        if not any(t in (f"+{want}", f"+{want}.0") for t in tokens) and not (want == "4.0" and "+4" in tokens):
            raise GuestError(f"NAS nfsd does not serve NFS version {want} (serves: {versions})")
        return {"export": line, "nfsd_versions": versions, **facts}

    def _ganesha(self, nas: Nas, sc: Scenario, ends: Ends, export_dir: str) -> dict[str, Any]:
        root = ganesha_root(nas)
        (root / "ganesha-recovery").mkdir(exist_ok=True)
        versions = "3, 4" if sc.storage.nfs.version == "3" else "4"
        conf = root / "ganesha.conf"
        conf.write_text(ganesha_conf(export_dir, str(root / "ganesha-recovery"), ends.nas_ip, ends.client_ip, versions))
        self._start_ganesha(nas)
        return {"export": f"{export_dir} as {EXPORT} for {ends.client_ip}", "ganesha_conf": str(conf),
                "ganesha_protocols": versions, "rpcbind": "private (own /run in ganesha's mount namespace)"}

    def _start_ganesha(self, nas: Nas) -> str:
        root = ganesha_root(nas)
        log = root / "ganesha.log"
        script = GANESHA if nas.traits.shares_host_run else GANESHA_CONTAINED
        argv = ["/bin/sh", "-c", script, "sh", str(root / "ganesha.conf"), str(log), str(root / "ganesha.pid"),
                str(root)]
        started = log.stat().st_size if log.exists() else 0

        def ready() -> bool:
            with open(log, "rb") as f:
                f.seek(started)
                return b"NFS SERVER INITIALIZED" in f.read()

        nas.serve("ganesha", argv, ready=ready, timeout=30, log=log)
        return "ganesha.nfsd (and its rpcbind) started"

    def read_state(self, dump: Any, sockets: list[dict[str, Any]]) -> dict[str, Any]:
        """Each RPC transport of an NFS socket (sk_user_data is sunrpc's struct sock_xprt): its state bits,
        congestion window, requests in use, and how many tasks wait to send, for a reply, or for a slot."""
        rpc = dump.module_btf("sunrpc")
        out = []
        for s in sockets:
            if not s["remote"].endswith(":2049") or "sk" not in s:
                continue
            xprt = dump.u64(s["sk"] + dump.off("sock", "sk_user_data"))  # struct sock_xprt begins with its rpc_xprt
            if not xprt:
                continue
            state = dump.u64(xprt + rpc.offsetof("rpc_xprt", "state"))
            queues = {q: int(dump.prog.read_u16(xprt + rpc.offsetof("rpc_xprt", f"{q}.qlen")))
                      for q in ("sending", "pending", "backlog")}
            procs = {f"{q}_procedures": queued_procedures(dump, rpc, xprt + rpc.offsetof("rpc_xprt", q))
                     for q in ("sending", "pending")}
            out.append({"socket": f"{s['local']}>{s['remote']}", "state": [n for b, n in XPRT_STATE if state >> b & 1],
                        "cwnd": dump.u64(xprt + rpc.offsetof("rpc_xprt", "cwnd")),
                        "cong": dump.u64(xprt + rpc.offsetof("rpc_xprt", "cong")),
                        "num_reqs": dump.u32(xprt + rpc.offsetof("rpc_xprt", "num_reqs")),
                        "max_reqs": dump.u32(xprt + rpc.offsetof("rpc_xprt", "max_reqs")),
                        "swapper": dump.u32(xprt + rpc.offsetof("rpc_xprt", "swapper")), **{f"{q}_queue": n for q, n in queues.items()},
                        **procs})
        return {"rpc_transports": out}

    def attach(self, client: VM, sc: Scenario, ends: Ends) -> dict[str, Any]:
        opts = mount_options(sc.storage.nfs)
        client.exec(["mkdir", "-p", MOUNT], 10, check=True)
        res = client.exec(["mount", "-t", "nfs", "-o", opts, f"{ends.nas_ip}:{EXPORT}", MOUNT], 60)
        if not res.ok:
            raise GuestError(f"client: mount -t nfs -o {opts} failed: {(res.stderr or res.stdout).strip()}")
        facts: dict[str, Any] = {"mount_options_requested": opts, "mount": mounted(client)}
        if sc.workload.uses_swap:
            client.exec(["swapon", f"{MOUNT}/{SWAPFILE}"], 60, check=True)
            facts["proc_swaps"] = client.exec(["cat", "/proc/swaps"], 10, check=True).stdout.strip()
        return facts

    def counters(self, client: VM) -> dict[str, Any]:
        return parse_mountstats(client.exec(["cat", "/proc/self/mountstats"], 10, check=True).stdout)

    def stop_service(self, nas: Nas, sc: Scenario, ends: Ends) -> str:
        if self.server(sc) == "ganesha":
            return f"{nas.stop_server('ganesha')}: ganesha.nfsd and its rpcbind"
        nas.exec(["rpc.nfsd", "0"], 30, check=True)
        return "rpc.nfsd 0 (all nfsd threads stopped)"

    def start_service(self, nas: Nas, sc: Scenario, ends: Ends) -> str:
        if self.server(sc) == "ganesha":
            return self._start_ganesha(nas)
        nas.exec(["rpc.nfsd", "8"], 30, check=True)
        return "rpc.nfsd 8"

    def service_argv(self, nas: Nas, sc: Scenario, ends: Ends) -> list[str] | None:
        if self.server(sc) == "ganesha":
            return nas.processes_argv("ganesha.nfsd")
        return ["/bin/sh", "-c", SERVICE]

    def parse_service(self, text: str) -> ServiceState:
        if is_processes(text):
            return parse_processes(text)
        return parse_service(text)
