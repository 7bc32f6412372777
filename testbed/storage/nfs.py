"""NFS: kernel nfsd on the NAS exports /srv/nfs with a swap file made there (a 96 MB client could
not `dd` one itself); the client mounts it with the scenario's version and swaps on the file."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from testbed.cleanup import Cleanup
from testbed.config.scenario import NfsSpec, Scenario
from testbed.errors import GuestError
from testbed.vm.argv import Disk
from testbed.vm.machine import VM

EXPORT = "/srv/nfs"
MOUNT = "/mnt/nas"
SWAPFILE = "swapfile"


def mount_options(spec: NfsSpec) -> str:
    opts = [f"vers={spec.version}", f"proto={spec.transport}", "hard" if spec.hard else "soft", f"timeo={spec.timeo}"]
    if spec.version == "3":
        opts.append("nolock")  # no statd in the guests; swap needs no locks
    if spec.rsize:
        opts.append(f"rsize={spec.rsize}")
    if spec.wsize:
        opts.append(f"wsize={spec.wsize}")
    return ",".join(opts)


class Nfs:
    name = "nfs"
    needs_nas = True

    def client_disks(self, sc: Scenario, rundir: Path, undo: Cleanup) -> tuple[Disk, ...]:
        return ()

    def export(self, nas: VM, sc: Scenario, client_ip: str) -> dict[str, Any]:
        swap = f"{EXPORT}/{SWAPFILE}"
        nas.sh(
            f"mkdir -p {EXPORT} && fallocate -l {sc.storage.swap_mb}M {swap} && chmod 600 {swap} && mkswap {swap} >/dev/null",
            120,
        )
        line = f"{EXPORT} {client_ip}(rw,sync,no_root_squash,no_subtree_check,insecure)"
        nas.exec(["sh", "-c", 'printf "%s\\n" "$1" > /etc/exports', "sh", line], 10, check=True)
        # A short grace period: nfsd otherwise refuses NFSv4 opens for 90 s after it starts.
        nas.sh(
            "modprobe nfsd && mount -t nfsd nfsd /proc/fs/nfsd"
            " && echo 10 > /proc/fs/nfsd/nfsv4gracetime && echo 10 > /proc/fs/nfsd/nfsv4leasetime"
            " && mkdir -p /run/rpcbind /var/lib/nfs/v4recovery && rpcbind -w"
            " && exportfs -ra && rpc.mountd && rpc.nfsd 8",
            60,
        )
        versions = nas.sh("cat /proc/fs/nfsd/versions", 10).stdout.strip()
        want = sc.storage.nfs.version
        tokens = versions.split()
        if not any(t in (f"+{want}", f"+{want}.0") for t in tokens) and not (want == "4.0" and "+4" in tokens):
            raise GuestError(f"NAS nfsd does not serve NFS version {want} (serves: {versions})")
        return {"export": line, "nfsd_versions": versions, "swapfile": swap, "swap_mb": sc.storage.swap_mb}

    def attach(self, client: VM, sc: Scenario, nas_ip: str) -> dict[str, Any]:
        opts = mount_options(sc.storage.nfs)
        client.sh(f"mkdir -p {MOUNT}", 10)
        res = client.exec(["mount", "-t", "nfs", "-o", opts, f"{nas_ip}:{EXPORT}", MOUNT], 60)
        if not res.ok:
            raise GuestError(f"client: mount -t nfs -o {opts} failed: {(res.stderr or res.stdout).strip()}")
        client.exec(["swapon", f"{MOUNT}/{SWAPFILE}"], 60, check=True)
        mounts = client.sh(f"grep {shlex.quote(' ' + MOUNT + ' ')} /proc/mounts", 10).stdout.strip()
        swaps = client.sh("cat /proc/swaps", 10).stdout.strip()
        return {"mount_options_requested": opts, "mount": mounts, "proc_swaps": swaps}
