"""Choosing the accelerator by a real probe boot, never by the presence of /dev/kvm.

On some hosts /dev/kvm is a PVM hypervisor on which a standard kernel hangs: the probe boots the
real guest kernel under KVM with a short timeout and falls back to TCG if the agent never says
`ready`. The answer is cached per (QEMU version, host kernel, guest kernel).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from testbed.host.cleanup import Cleanup
from testbed.host.rundir import make_rundir
from testbed.errors import AccelError, GuestError
from testbed.images.cache import Image
from testbed.host.paths import cache_dir
from testbed.host.tags import new_tag, vm_name
from testbed.vm.argv import VMSpec
from testbed.vm.caps import host_caps
from testbed.vm.machine import VM

PROBE_TIMEOUT = 20.0  # real KVM reaches ready in ~1.5 s; a hung PVM never does


@dataclass(frozen=True)
class AccelChoice:
    accel: str
    reason: str
    probed_at: str = ""
    probe_seconds: float = 0.0


def _key(image: Image) -> str:
    return f"qemu {host_caps().version} | host {platform.release()} | guest {image.kernel_version}"


def _cache_file() -> Path:
    return cache_dir() / "accel-probe.json"


def _load() -> dict[str, dict[str, object]]:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _save(key: str, choice: AccelChoice) -> None:
    data = _load()
    data[key] = asdict(choice)
    _cache_file().parent.mkdir(parents=True, exist_ok=True)
    tmp = _cache_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, _cache_file())


def kvm_usable_device() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def probe_kvm(image: Image, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str, float]:
    """Boot `image` under KVM; (reached ready, why not, seconds)."""
    tag = new_tag()
    with Cleanup() as undo:
        rundir = make_rundir(tag, undo)
        spec = VMSpec(
            name=vm_name(tag, "probe"),
            kernel=image.kernel,
            initrd=image.initrd,
            root=image.root,
            rundir=rundir,
            mem_mb=256,
            accel="kvm",
        )
        vm = VM(spec, undo)
        t = time.monotonic()
        try:
            vm.start()
            secs = vm.wait_ready(timeout)
            return True, "", secs
        except GuestError as e:
            return False, str(e), time.monotonic() - t


def choose(requested: str, image: Image, say: Callable[[str], None] = print) -> AccelChoice:
    """The accelerator to use for `requested` in {auto, kvm, tcg}, with the reason."""
    if requested == "tcg":
        return AccelChoice("tcg", "requested with --accel tcg")
    if not os.path.exists("/dev/kvm"):
        if requested == "kvm":
            raise AccelError("--accel kvm: this host has no /dev/kvm; use --accel tcg (or auto)")
        return AccelChoice("tcg", "no /dev/kvm on this host")
    if not kvm_usable_device():
        if requested == "kvm":
            raise AccelError("--accel kvm: /dev/kvm is not readable and writable by this user; use --accel tcg")
        return AccelChoice("tcg", "/dev/kvm is not accessible to this user")
    key = _key(image)
    cached = _load().get(key)
    if cached is None:
        say(f"probing KVM: booting the guest kernel once under KVM (up to {PROBE_TIMEOUT:.0f} s)")
        ok, why, secs = probe_kvm(image)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if ok:
            choice = AccelChoice("kvm", f"KVM probe boot reached ready in {secs:.1f} s", now, round(secs, 1))
        else:
            choice = AccelChoice(
                "tcg",
                f"/dev/kvm exists but a probe boot of {image.kernel_version} under KVM did not reach ready "
                f"in {PROBE_TIMEOUT:.0f} s (a paravirtual hypervisor such as PVM hangs standard kernels)",
                now,
                round(secs, 1),
            )
        _save(key, choice)
    else:
        choice = AccelChoice(**cached)  # type: ignore[arg-type]
    if requested == "kvm" and choice.accel != "kvm":
        raise AccelError(
            f"--accel kvm: KVM cannot run this guest here: {choice.reason} (probed {choice.probed_at}); "
            "use --accel tcg or auto"
        )
    if requested == "kvm":
        return AccelChoice("kvm", "requested with --accel kvm; " + choice.reason, choice.probed_at)
    return choice
