"""Finding and removing leftovers of earlier runs for `testbed clean`: our QEMUs, namespaces (with
the helper processes inside them), runtime and NAS data folders and docker NAS containers,
recognised by our tag only; tgtd control sockets no tgtd holds; and ready snapshots that no cached
image can use any more, or that a killed run left half saved."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from testbed.errors import TestbedError
from testbed.net.netns import delete_netns
from testbed.host.paths import data_dir, runtime_dir
from testbed.host.rundir import live_owner
from testbed.host.tags import NETNS_RE, QEMU_NAME_RE, TAG_RE
from testbed.kernels import source as kernel_source
from testbed.vm import snapshot


def _cmdlines() -> list[tuple[int, list[bytes]]]:
    """(pid, argv) of every process we may read."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            out.append((int(p.name), (p / "cmdline").read_bytes().split(b"\0")))
        except OSError:
            continue
    return out


def find_our_qemus() -> list[tuple[int, str]]:
    """(pid, name) of QEMU processes whose `-name` is one of our tags."""
    found = []
    for pid, argv in _cmdlines():
        if not argv or not argv[0].endswith(b"qemu-system-x86_64"):
            continue
        for i, a in enumerate(argv[:-1]):
            if a == b"-name":
                name = argv[i + 1].decode(errors="replace").split(",")[0]
                if QEMU_NAME_RE.match(name):
                    found.append((pid, name))
    return found


def find_our_netns() -> list[str]:
    try:
        names = os.listdir("/run/netns")
    except OSError:
        return []
    return sorted(n for n in names if NETNS_RE.match(n))


def find_our_rundirs() -> list[str]:
    """Runtime folders, and netns NAS data folders, of runs (by tag)."""
    out = []
    for root in (runtime_dir(), data_dir()):
        if root.is_dir():
            out += [str(p) for p in root.iterdir() if TAG_RE.match(p.name)]
    return sorted(out)


HELPERS = ("dnsmasq", "iperf3", "tcpdump", "ganesha.nfsd", "rpcbind", "tgtd", "vblade")  # host processes of ours: faults' helpers, a netns NAS's servers


def helper_processes() -> list[str]:
    """Helper processes alive on the host. A zombie is dead and holds nothing but its pid entry: one whose
    parent we killed is reparented to the host's init, which reaps it (or, in a container whose PID 1
    does not reap, never does): it is not a leftover of ours."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if comm in HELPERS and state != "Z":
            out.append(f"{comm} {pid}")
    return out


def our_containers() -> list[str]:
    """Containers labelled by a run (the docker NAS); none where no engine answers."""
    from testbed.nas import container  # the Docker SDK: only asked here and by the docker NAS

    try:
        dk = container.client()
    except TestbedError:
        return []
    return [f"container {c.name}" for c in dk.containers.list(all=True, filters={"label": container.LABEL})]


def our_mounts() -> list[str]:
    """Mounts under our runtime or data folders, or naming a run tag (a NAS's exports, its private /run)."""
    roots = (str(runtime_dir()), str(data_dir()))
    out = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.split()
        point = parts[4] if len(parts) > 4 else ""
        if point.startswith(roots) or any(TAG_RE.match(p) for p in Path(point).parts):
            out.append(f"mount {point}")
    return out


def our_nft_tables() -> list[str]:
    """nftables tables named by a run tag in the host's namespace (ours live in the run's; none should be here)."""
    try:
        out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [f"nft {line.strip()}" for line in out.splitlines() if any(TAG_RE.match(w) for w in line.split())]


def remaining() -> list[str]:
    """Everything of ours still on the host: QEMUs, namespaces (with their taps, bridges and tables),
    runtime and data folders, helper processes, containers, mounts, host-namespace nftables tables."""
    return [*(f"qemu {n}" for _, n in find_our_qemus()), *find_our_netns(), *find_our_rundirs(), *helper_processes(),
            *our_containers(), *our_mounts(), *our_nft_tables()]


def stale_tgt_sockets() -> list[Path]:
    """/var/run/tgtd/socket.N (and .lock) of ours (N in the range testbed/storage/iscsi.py gives runs) with no
    tgtd running `-C N`: left by a run that was SIGKILLed."""
    root = Path("/var/run/tgtd")
    if not root.is_dir():
        return []
    live = set()
    for _, argv in _cmdlines():
        if argv and argv[0].endswith(b"tgtd") and b"-C" in argv:
            live.add(argv[argv.index(b"-C") + 1].decode(errors="replace"))
    out = []
    for sock in sorted(root.glob("socket.*")):
        port = sock.name.split(".")[1]
        if port.isdigit() and 1000 <= int(port) < 31000 and port not in live:
            out.append(sock)
    return out


def _is_our_qemu(pid: int, name: str) -> bool:
    return any(p == pid and n == name for p, n in find_our_qemus())


def clean_leftovers(dry_run: bool = False) -> list[str]:
    """Remove our QEMUs, namespaces and runtime folders of runs whose owner is gone; returns what
    was (or would be) removed. A run whose testbed process still lives is left alone."""
    done = []
    live: dict[str, int] = {}

    def spared(tag: str) -> bool:
        pid = live_owner(tag)
        if pid and tag not in live:
            live[tag] = pid
            done.append(f"skipped live run {tag} (testbed pid {pid})")
        return pid is not None

    qemus = [(pid, name) for pid, name in find_our_qemus() if not spared(name.split("-")[0])]
    for pid, name in qemus:
        done.append(f"QEMU {name} (pid {pid})")
        if not dry_run:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    if qemus and not dry_run:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_is_our_qemu(pid, name) for pid, name in qemus):
            time.sleep(0.1)
        for pid, name in qemus:
            if _is_our_qemu(pid, name):  # still the same process: a reused pid is never killed
                os.kill(pid, signal.SIGKILL)
    for ns in find_our_netns():
        if spared(ns[:8]):
            continue
        done.append(f"network namespace {ns}")
        if not dry_run:
            res = delete_netns(ns)  # its helper processes (dnsmasq, iperf3, tcpdump) go with it
            if res.returncode != 0:
                done[-1] += f" (failed: {res.stderr.strip()})"
    for d in find_our_rundirs():
        if spared(os.path.basename(d)):
            continue
        done.append(f"runtime folder {d}")
        if not dry_run:
            shutil.rmtree(d, ignore_errors=True)
    from testbed.nas.container import remove_by_label  # the Docker SDK: only asked here and by the docker NAS

    done += remove_by_label(lambda tag: not spared(tag), dry_run)  # containers of ours whose run is gone
    for sock in stale_tgt_sockets():  # a netns NAS's tgtd control socket whose tgtd is gone
        done.append(f"tgtd control socket {sock}")
        if not dry_run:
            sock.unlink(missing_ok=True)
    for p in snapshot.stale():  # snapshots no cached image can use, and temporaries of dead savers
        done.append(f"stale snapshot {p}")
        if not dry_run:
            shutil.rmtree(p, ignore_errors=True)
    for p in kernel_source.stale():  # dead kernel makers' temporaries; path kernels' copies no run holds
        done.append(f"prepared kernel {p}")
        if not dry_run:
            kernel_source.remove(p)
    return done
