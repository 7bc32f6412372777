"""A tiny initramfs: busybox, the modules needed to reach the root disk, and an /init that hands over.

Written as a newc cpio by Python so the build needs no cpio tool and no loop mounts.
"""

from __future__ import annotations

import io
import stat
from pathlib import Path

from testbed.images.kmods import plain_name, read_module

INIT = """#!/bin/busybox sh
# testbed initramfs: load the root disk's modules, mount it, hand PID 1 to tb-init.
/bin/busybox --install -s /bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
for m in $(cat /load-order); do insmod /lib/modules/$m || echo "initramfs: insmod $m failed"; done
# The root disk is the virtio disk whose serial is "tbroot": other disks (NAS data, local swap)
# may come first in PCI order.
mount -t sysfs sys /sys
i=0
root=
while [ -z "$root" ] && [ $i -lt 200 ]; do
  for d in /sys/block/vd*; do
    [ "$(cat $d/serial 2>/dev/null)" = tbroot ] && root=/dev/${d##*/}
  done
  [ -z "$root" ] && sleep 0.05
  i=$((i+1))
done
umount /sys
mount -t ext4 -o rw "$root" /newroot || { echo "initramfs: no root disk with serial tbroot"; poweroff -f; }
umount /proc
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/tb-init
"""


class Cpio:
    """Minimal newc writer."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.ino += 1
        self.buf.write(header + name.encode() + b"\0")
        self._pad()
        self.buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def build(busybox: Path, moddir: Path, load_order: list[str]) -> bytes:
    """Initramfs bytes holding busybox, the modules in load order, and /init."""
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"):
        c.dir(d)
    c.file("bin/busybox", busybox.read_bytes(), 0o755)
    names = []
    for rel in load_order:
        name = plain_name(rel).rsplit("/", 1)[-1]
        c.file(f"lib/modules/{name}", read_module(moddir / rel))
        names.append(name)
    c.file("load-order", ("\n".join(names) + "\n").encode())
    c.file("init", INIT.encode(), 0o755)
    return c.finish()
