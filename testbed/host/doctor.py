"""`testbed doctor`: is this host ready to run cases? Each check says what it found and, when something
is missing, the command that fixes it. Network checks run inside a namespace of their own (made and
removed here): the host's main namespace is never touched."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from testbed import faults
from testbed.forensics import symbols
from testbed.errors import TestbedError
from testbed.images import cache
from testbed.images.recipe import load_recipe, recipe_hash, recipe_names
from testbed.nas import container
from testbed.storage import PROTOCOLS
from testbed.net.caps import netem_available
from testbed.host.paths import cache_dir
from testbed.host.tags import new_tag
from testbed.vm import accel
from testbed.vm.caps import host_caps

Status = Literal["ok", "warn", "missing"]

# Host tools and the Debian packages that give them: (tool, package, needed for)
TOOLS = (
    ("qemu-system-x86_64", "qemu-system-x86", "every guest"),
    ("ip", "iproute2", "namespaces, bridges, taps"),
    ("tc", "iproute2", "link shaping"),
    ("nft", "nftables", "loss and port faults"),
    ("mmdebstrap", "mmdebstrap", "image builds"),
    ("mkfs.ext4", "e2fsprogs", "image builds"),
    ("dpkg-deb", "dpkg", "image builds, Debian kernels"),
    ("depmod", "kmod", "image builds"),
    ("apt-get", "apt", "Debian kernels (client.kernel: debian:...)"),
    ("zstd", "zstd", "ready snapshots"),
    ("qemu-img", "qemu-utils", "ready snapshots"),
)
def optional_tools() -> tuple[tuple[str, str, str], ...]:
    """Optional: what the protocols' userspace servers and the fault kinds need, as each declares it."""
    return (("musl-gcc", "musl-tools", "static guest programs (gcc -static is the fallback)"),
            *dict.fromkeys(t for s in PROTOCOLS.values() for t in s.host_tools),
            *dict.fromkeys(t for k in faults.KINDS.values() for t in k.host_tools))


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    found: str
    fix: str = ""  # the command that fixes it (missing and warn)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _run(argv: list[str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def check_root() -> Check:
    if os.geteuid() == 0:
        return Check("root", "ok", "running as root")
    return Check("root", "missing", f"running as uid {os.geteuid()}: namespaces, taps and QEMU's networking need root",
                 "sudo testbed ...")


def check_tools() -> list[Check]:
    out = []
    for tools, required in ((TOOLS, True), (optional_tools(), False)):
        for tool, package, why in tools:
            path = shutil.which(tool)
            if path:
                out.append(Check(f"tool {tool}", "ok", path))
            else:
                out.append(Check(f"tool {tool}", "missing" if required else "warn", f"not on PATH (needed for {why})",
                                 f"apt-get install {package}"))
    return out


def check_qemu() -> list[Check]:
    if not shutil.which("qemu-system-x86_64"):
        return []
    try:
        caps = host_caps()
    except TestbedError as e:
        return [Check("qemu capabilities", "missing", str(e), "apt-get install --reinstall qemu-system-x86")]
    wanted = ("virtio-net-pci", "virtio-blk-pci", "virtio-serial-pci", "virtserialport", "virtio-rng-pci", "vmgenid")
    lacking = [d for d in wanted if d not in caps.devices]
    if lacking:
        return [Check("qemu devices", "missing", f"QEMU {caps.version} lacks {', '.join(lacking)}",
                      "apt-get install qemu-system-x86 (QEMU 7.2 or newer)")]
    return [Check("qemu", "ok", f"QEMU {caps.version} with virtio net/blk/serial/rng and vmgenid")]


def check_accel() -> Check:
    if not os.path.exists("/dev/kvm"):
        return Check("accelerator", "warn", "no /dev/kvm: guests run under TCG (about 5-10x slower)",
                     "enable virtualisation (nested KVM on a VM host), then: modprobe kvm_intel or kvm_amd")
    answers = accel._load()  # noqa: SLF001 - the probe's own cache, read only
    if not answers:
        return Check("accelerator", "warn", "/dev/kvm exists; not probed yet (the first case boots the guest "
                     "kernel under KVM once and falls back to TCG if it hangs)", "testbed vm exec client -- true")
    key, latest = max(answers.items(), key=lambda kv: str(kv[1].get("probed_at", "")))
    found = f"{latest.get('accel')} ({latest.get('reason')}; probed {latest.get('probed_at')} for {key})"
    return Check("accelerator", "ok" if latest.get("accel") == "kvm" else "warn", found,
                 "" if latest.get("accel") == "kvm" else "none needed: cases run under TCG, slower")


def check_network() -> list[Check]:
    """netns, veth, bridge, tap, nftables and tbf, tried inside a namespace of our own."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        return [Check("network", "missing", "not checked (needs root and ip)", "run testbed doctor as root")]
    ns = f"{new_tag()}-doctor"
    out: list[Check] = []
    made = _run(["ip", "netns", "add", ns])
    if made.returncode != 0:
        return [Check("netns", "missing", f"ip netns add: {made.stderr.strip()}", "a kernel with CONFIG_NET_NS")]
    try:
        out.append(Check("netns", "ok", "network namespaces work"))
        tries = [
            ("veth", ["ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1"], "a kernel with CONFIG_VETH"),
            ("bridge", ["ip", "link", "add", "dbr", "type", "bridge"], "a kernel with CONFIG_BRIDGE"),
            ("tap", ["ip", "tuntap", "add", "dtap", "mode", "tap"], "a kernel with CONFIG_TUN"),
            ("tbf", ["tc", "qdisc", "add", "dev", "d0", "root", "tbf", "rate", "10mbit", "burst", "32k", "latency", "50ms"],
             "a kernel with CONFIG_NET_SCH_TBF"),
            ("nftables", ["nft", "add", "table", "inet", "doctor"], "apt-get install nftables; a kernel with nf_tables"),
        ]
        for name, argv, fix in tries:
            if not shutil.which(argv[0]):
                continue
            r = _run(["ip", "netns", "exec", ns, *argv])
            out.append(Check(name, "ok", "works") if r.returncode == 0 else
                       Check(name, "missing", f"{' '.join(argv)}: {(r.stderr or r.stdout).strip()[:200]}", fix))
    finally:
        _run(["ip", "netns", "delete", ns])
    out.append(Check("netem", "ok", "sch_netem available") if netem_available() else
               Check("netem", "warn", "no sch_netem in this host's kernel: link delay/loss conditions are refused "
                     "(faults still shape inside a NAS VM)", "apt-get install linux-modules-extra-$(uname -r) or a kernel with CONFIG_NET_SCH_NETEM"))
    return out


def check_docker() -> Check:
    try:
        c = container.client()
        return Check("docker", "ok", f"engine {c.version().get('Version', '?')} answers (nas.backend docker)")
    except TestbedError as e:
        return Check("docker", "warn", f"{e} (only nas.backend docker needs it)",
                     "apt-get install docker.io && dockerd --iptables=false --ip6tables=false --bridge=none &")


def check_resources() -> list[Check]:
    cores = os.cpu_count() or 1
    mem_kb: int | None = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    mem_kb = int(line.split()[1])
    except (OSError, ValueError, IndexError) as e:
        why = f"/proc/meminfo unreadable: {e}"
    else:
        why = "/proc/meminfo has no MemAvailable line"
    out = [Check("cores", "ok" if cores >= 2 else "warn", f"{cores} (a case is two 1-vCPU guests)",
                 "" if cores >= 2 else "cases on one core starve their guests: expect unknown verdicts")]
    free = shutil.disk_usage(cache_dir() if cache_dir().exists() else cache_dir().parent if cache_dir().parent.exists() else "/")
    if mem_kb is None:  # not read: said, never shown as 0 MB
        out.append(Check("memory", "warn", f"unknown ({why})", "a case needs about 1 GB (guests, page cache for images)"))
    else:
        out.append(Check("memory", "ok" if mem_kb >= 2 << 20 else "warn", f"{mem_kb >> 10} MB available",
                         "" if mem_kb >= 2 << 20 else "a case needs about 1 GB (guests, page cache for images)"))
    out.append(Check("disk", "ok" if free.free >= 5 << 30 else "warn", f"{free.free >> 30} GB free for the cache",
                     "" if free.free >= 5 << 30 else "images, kernels and snapshots need about 5 GB"))
    return out


def check_images() -> Check:
    current = {n: recipe_hash(load_recipe(n)) for n in recipe_names()}
    built = {i.name for i in cache.all_entries() if current.get(i.name) == i.recipe_hash}
    lacking = sorted(set(current) - built)
    if lacking:
        return Check("images", "warn", f"not built for the current recipes: {', '.join(lacking)} (a case builds "
                     "them first, about 40 s each)", "testbed image build all")
    return Check("images", "ok", f"built for the current recipes ({', '.join(sorted(built))}) in {cache.images_dir()}")


def check_symbols() -> Check:
    """The kernels' DWARF kept for reading memory dumps (testbed/forensics/symbols.py): an aid, never a need."""
    kept = symbols.listing()
    if not kept:
        return Check("symbols", "ok", "no kernel DWARF cached: the first memory dump of a Debian kernel fetches its "
                     "-dbg package (about 0.9 GB; TESTBED_SYMBOLS=0: never, dumps are then read with kallsyms and BTF)")
    return Check("symbols", "ok", "kernel DWARF cached for " + ", ".join(f"{k['release']} ({k['mb']} MB)" for k in kept))


def run_checks(say: Callable[[Check], None] | None = None) -> list[Check]:
    checks: list[Check] = []

    def add(cs: Check | list[Check]) -> None:
        for c in cs if isinstance(cs, list) else [cs]:
            checks.append(c)
            if say:
                say(c)

    add(Check("host", "ok", f"{platform.system()} {platform.release()}, {platform.machine()}"))
    add(check_root())
    add(check_tools())
    add(check_qemu())
    add(check_accel())
    add(check_network())
    add(check_docker())
    add(check_resources())
    add(check_images())
    add(check_symbols())
    return checks
