"""A kernel's .config against what a scenario needs of it, checked before any VM boots: a missing option
is a ConfigError naming the option and why the scenario needs it (rather than a guest that fails later,
which the verdict could only call unknown)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import KernelError

_LINE = re.compile(r"(CONFIG_[A-Za-z0-9_]+)=(.*)")
_UNSET = re.compile(r"# (CONFIG_[A-Za-z0-9_]+) is not set")


def parse_config(text: str) -> dict[str, str]:
    """`CONFIG_X=y|m|"string"|number` lines -> {CONFIG_X: value}; `# CONFIG_X is not set` -> absent."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _LINE.fullmatch(line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


@dataclass(frozen=True)
class Need:
    """One option a scenario needs (built in or as a module), with any of `alternatives` as good."""

    option: str
    why: str
    alternatives: tuple[str, ...] = ()

    def met(self, config: dict[str, str]) -> bool:
        return any(config.get(o) in ("y", "m") for o in (self.option, *self.alternatives))


# Every guest of ours: the initramfs and tb-init, the agent's virtio console, the sysrq evidence.
BASE_NEEDS = (
    Need("CONFIG_BLK_DEV_INITRD", "the guests boot from our initramfs"),
    Need("CONFIG_DEVTMPFS", "the initramfs mounts devtmpfs"),
    Need("CONFIG_VIRTIO_PCI", "the guests' disks and NICs are virtio-pci devices"),
    Need("CONFIG_VIRTIO_BLK", "the root disk is virtio-blk"),
    Need("CONFIG_VIRTIO_NET", "the guests' NICs are virtio-net"),
    Need("CONFIG_VIRTIO_CONSOLE", "the testbed's agent talks over a virtio console port"),
    Need("CONFIG_EXT4_FS", "the root filesystem is ext4"),
    Need("CONFIG_TMPFS", "tb-init mounts /run and /tmp as tmpfs"),
    Need("CONFIG_UNIX", "the agent and the storage daemons use unix sockets"),
    Need("CONFIG_INET", "every protocol but local runs over IP or Ethernet next to it"),
    Need("CONFIG_MAGIC_SYSRQ", "a stuck client's evidence is sysrq task and memory dumps"),
    Need("CONFIG_PRINTK", "the console log is the evidence"),
    Need("CONFIG_SERIAL_8250_CONSOLE", "the evidence comes from console=ttyS0"),
)

CLIENT_NEEDS = (
    Need("CONFIG_SWAP", "the client swaps"),
)


@functools.lru_cache(maxsize=32)
def read_config(path: Path) -> dict[str, str]:
    return parse_config(path.read_text(errors="replace"))


def missing(config: dict[str, str], needs: tuple[Need, ...]) -> list[Need]:
    return [n for n in needs if not n.met(config)]


def check(config: dict[str, str], needs: tuple[Need, ...], source: str, field: str, what: str) -> None:
    """ConfigError naming the first missing option (and how many more), or nothing."""
    lacking = missing(config, needs)
    if not lacking:
        return
    first = lacking[0]
    alt = f" (or {', '.join(first.alternatives)})" if first.alternatives else ""
    more = f"; {len(lacking) - 1} more missing: {', '.join(n.option for n in lacking[1:])}" if len(lacking) > 1 else ""
    raise KernelError(source, field, f"{what} lacks {first.option}{alt} (needed: {first.why}){more}")
