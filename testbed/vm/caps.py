"""What the host's QEMU supports, read from `-help` and `-device help` (saved copies drive the unit tests)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from testbed.host import proc

QEMU = "qemu-system-x86_64"


@dataclass(frozen=True)
class QemuCaps:
    version: str
    options: frozenset[str]
    devices: frozenset[str]

    def require_option(self, opt: str) -> None:
        if opt not in self.options:
            raise ValueError(f"{QEMU} {self.version} has no option {opt}")

    def require_device(self, dev: str) -> None:
        if dev not in self.devices:
            raise ValueError(f"{QEMU} {self.version} has no device {dev}")


def parse(help_text: str, device_text: str) -> QemuCaps:
    m = re.search(r"version (\d+\.\d+(?:\.\d+)?)", help_text)
    options = frozenset(re.findall(r"^(-[a-z][\w-]*)", help_text, re.M))
    devices = frozenset(re.findall(r'^name "([^"]+)"', device_text, re.M))
    return QemuCaps(m.group(1) if m else "unknown", options, devices)


@functools.cache
def host_caps() -> QemuCaps:
    help_text = proc.run([QEMU, "-help"], timeout=30).stdout
    device_text = proc.run([QEMU, "-device", "help"], timeout=30).stdout
    return parse(help_text, device_text)
