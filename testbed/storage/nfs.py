"""NFS: kernel nfsd on the NAS exports /srv/nfs. For swap, the swap file is made there (a 96 MB
client could not `dd` one itself); the client mounts with the scenario's version and swaps on it.
For the file workloads the mount itself is the filesystem."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from testbed.errors import ConfigError, GuestError
from testbed.storage.base import MOUNT, Ends, ServiceState, Storage, mounted
from testbed.vm.machine import VM

if TYPE_CHECKING:  # type only: see testbed/storage/base.py
    from testbed.config.scenario import Scenario

EXPORT = "/srv/nfs"
SWAPFILE = "swapfile"
# A short grace period: nfsd otherwise refuses NFSv4 opens for 90 s after it starts.
START_NFSD = ("modprobe nfsd && mount -t nfsd nfsd /proc/fs/nfsd"
              " && echo 10 > /proc/fs/nfsd/nfsv4gracetime && echo 10 > /proc/fs/nfsd/nfsv4leasetime"
              " && mkdir -p /run/rpcbind /var/lib/nfs/v4recovery && rpcbind -w"
              " && exportfs -ra && rpc.mountd && rpc.nfsd 8")
# Is nfsd serving: its thread count (0 after `rpc.nfsd 0`; empty when the nfsd filesystem is not
# mounted) and rpc.mountd's pids (nfsd asks mountd about exports whenever its cache entries expire).
SERVICE = "echo threads $(cat /proc/fs/nfsd/threads 2>/dev/null); echo mountd $(pgrep -x rpc.mountd)"


@dataclass(frozen=True)
class NfsSpec:
    version: Literal["3", "4.0", "4.1", "4.2"] = "3"
    transport: Literal["tcp", "udp"] = "tcp"
    rsize: int | None = None
    wsize: int | None = None
    timeo: int = 100  # tenths of a second before an RPC retransmission
    hard: bool = True

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

    def export(self, nas: VM, sc: Scenario, ends: Ends) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        nas.exec(["mkdir", "-p", EXPORT], 10, check=True)
        if sc.workload.uses_swap:
            swap = f"{EXPORT}/{SWAPFILE}"
            nas.run_all(["fallocate", "-l", f"{sc.storage.swap_mb}M", swap], ["chmod", "600", swap], ["mkswap", swap], timeout=120)
            facts.update(swapfile=swap, swap_mb=sc.storage.swap_mb)
        line = f"{EXPORT} {ends.client_ip}(rw,sync,no_root_squash,no_subtree_check,insecure)"
        nas.sh('printf "%s\\n" "$1" > /etc/exports', 10, args=[line])
        nas.sh(START_NFSD, 60)
        versions = nas.exec(["cat", "/proc/fs/nfsd/versions"], 10, check=True).stdout.strip()
        want = sc.storage.nfs.version
        tokens = versions.split()
        if not any(t in (f"+{want}", f"+{want}.0") for t in tokens) and not (want == "4.0" and "+4" in tokens):
            raise GuestError(f"NAS nfsd does not serve NFS version {want} (serves: {versions})")
        return {"export": line, "nfsd_versions": versions, **facts}

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

    def stop_service(self, nas: VM, sc: Scenario, ends: Ends) -> str:
        nas.exec(["rpc.nfsd", "0"], 30, check=True)
        return "rpc.nfsd 0 (all nfsd threads stopped)"

    def start_service(self, nas: VM, sc: Scenario, ends: Ends) -> str:
        nas.exec(["rpc.nfsd", "8"], 30, check=True)
        return "rpc.nfsd 8"

    def service_argv(self, sc: Scenario, ends: Ends) -> list[str] | None:
        return ["/bin/sh", "-c", SERVICE]

    def parse_service(self, text: str) -> ServiceState:
        return parse_service(text)
