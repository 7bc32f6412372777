"""`testbed vm exec`: boot one guest, wait for ready, run one command, tear down."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from testbed.host.cleanup import Cleanup
from testbed.host.rundir import make_rundir
from testbed.images.build import ensure
from testbed.host.paths import runtime_dir
from testbed.host.tags import new_tag, vm_name
from testbed.vm import accel as accel_mod
from testbed.vm.agent import ExecResult
from testbed.vm.argv import VMSpec, build
from testbed.vm.machine import VM

BOOT_TIMEOUT = 90.0


@dataclass(frozen=True)
class OneShot:
    role: str
    mem_mb: int
    vcpus: int
    accel: str
    argv: tuple[str, ...]
    timeout: float = 120.0


def spec_for(req: OneShot, tag: str, accel: str, image_say: Callable[[str], None]) -> VMSpec:
    image = ensure(req.role, say=image_say)
    return VMSpec(
        name=vm_name(tag, req.role),
        kernel=image.kernel,
        initrd=image.initrd,
        root=image.root,
        rundir=runtime_dir() / tag,
        mem_mb=req.mem_mb,
        vcpus=req.vcpus,
        accel=accel,
    )


def show_command(req: OneShot, say: Callable[[str], None]) -> list[str]:
    """The QEMU argv that `run` would use (the accelerator as requested; 'auto' shown as tcg)."""
    accel = "kvm" if req.accel == "kvm" else "tcg"
    return build(spec_for(req, "tb000000", accel, say))


def run(req: OneShot, say: Callable[[str], None]) -> tuple[ExecResult, float]:
    """(the command's result, boot-to-ready seconds)."""
    image = ensure(req.role, say=say)
    choice = accel_mod.choose(req.accel, image, say)
    say(f"accelerator: {choice.accel} ({choice.reason})")
    tag = new_tag()
    with Cleanup() as undo:
        make_rundir(tag, undo)
        spec = spec_for(req, tag, choice.accel, say)
        vm = VM(spec, undo)
        say(f"booting {spec.name} ({req.mem_mb} MB, {choice.accel})")
        vm.start()
        boot = vm.wait_ready(BOOT_TIMEOUT)
        say(f"{spec.name} ready in {boot:.1f} s; running {' '.join(req.argv)}")
        return vm.exec(list(req.argv), req.timeout), boot
