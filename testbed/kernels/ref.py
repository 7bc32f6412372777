"""Kernel references as scenarios write them (`client.kernel`, `nas.kernel`), parsed without touching the
network or the disk: what they name is fetched and checked later (testbed/kernels/source.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from testbed.errors import ConfigError, KernelError

# Debian suites whose newest linux-image-amd64 `debian:<suite>` names, with the archive suites searched
# for it (a stable release's kernel moves on in -updates and -security, not in the release itself).
SUITES: dict[str, tuple[tuple[str, str], ...]] = {
    "bullseye": (("debian", "bullseye"), ("debian", "bullseye-updates"), ("debian-security", "bullseye-security")),
    "bookworm": (("debian", "bookworm"), ("debian", "bookworm-updates"), ("debian-security", "bookworm-security")),
    "trixie": (("debian", "trixie"), ("debian", "trixie-updates"), ("debian-security", "trixie-security")),
    "sid": (("debian", "sid"),),
    "bookworm-backports": (("debian", "bookworm-backports"),),
}

_PACKAGE = re.compile(r"linux-image-[a-z0-9][a-z0-9.+~-]*")
_VERSION = re.compile(r"[0-9][A-Za-z0-9.+~:-]*")


@dataclass(frozen=True)
class KernelRef:
    """One kernel reference. kind `default`: the recipe's pinned package; `suite`: the newest
    linux-image-amd64 of a Debian suite; `package`: an exact Debian build; `path`: a user's build."""

    kind: Literal["default", "suite", "package", "path"]
    suite: str = ""
    package: str = ""
    version: str = ""
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "default":
            return "default"
        if self.kind == "suite":
            return f"debian:{self.suite}"
        if self.kind == "package":
            return f"debian:{self.package}={self.version}"
        return f"path:{self.path}"


def parse(text: str, source: str, field: str, check_folder: bool = True) -> KernelRef:
    """`default`, `debian:<suite>`, `debian:<package>=<version>` or `path:<dir>`; anything else is a
    ConfigError naming the field. A path must be a folder with a kernel image, a .config and modules
    (KernelError), unless `check_folder` is off: scenario validation checks the text only, so that a case
    folder read back after its kernel tree is gone still parses; the kernel checks run before any boot."""
    text = str(text).strip()
    if text == "default":
        return KernelRef("default")
    if text.startswith("debian:"):
        rest = text[len("debian:"):]
        if "=" in rest:
            package, version = rest.split("=", 1)
            if not _PACKAGE.fullmatch(package):
                raise ConfigError(source, field, f"{package!r} is not a Debian linux-image-* package name")
            if not _VERSION.fullmatch(version):
                raise ConfigError(source, field, f"{version!r} is not a Debian package version")
            return KernelRef("package", package=package, version=version)
        if rest not in SUITES:
            raise ConfigError(source, field, f"unknown Debian suite {rest!r} (known: {', '.join(SUITES)}; "
                              "or debian:<package>=<version>)")
        return KernelRef("suite", suite=rest)
    if text.startswith("path:"):
        raw = text[len("path:"):]
        if not raw:
            raise ConfigError(source, field, "path: needs a folder, e.g. path:/src/linux/out")
        folder = Path(raw).expanduser().resolve()  # relative to the working directory
        if not check_folder:
            return KernelRef("path", path=str(folder))
        if not folder.is_dir():
            raise KernelError(source, field, f"{folder} is not a folder (path: wants bzImage or vmlinuz, "
                              "modules/ from `make modules_install INSTALL_MOD_PATH=...` and .config)")
        layout_problem = path_layout_problem(folder)
        if layout_problem:
            raise KernelError(source, field, f"{folder}: {layout_problem}")
        return KernelRef("path", path=str(folder))
    raise ConfigError(source, field, f"{text!r}: want default, debian:<suite>, debian:<package>=<version> or path:<dir>")


def slug(text: str) -> str:
    """A kernel reference as a case-id part: `debian:bullseye` -> `bullseye`, `path:/k/v6.2` -> `path-v6.2`,
    `debian:linux-image-6.1.0-9-amd64=6.1.27-1` -> `6.1.27-1`."""
    if text.startswith("debian:"):
        text = text[len("debian:"):]
        text = text.split("=", 1)[1] if "=" in text else text
    elif text.startswith("path:"):
        text = "path-" + Path(text[len("path:"):]).name
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "kernel"


def kernel_image(folder: Path) -> Path | None:
    for name in ("bzImage", "vmlinuz"):
        if (folder / name).is_file():
            return folder / name
    return None


def module_dirs(folder: Path) -> list[Path]:
    """The lib/modules/<release> folders under a path kernel's modules/ (modules_install's layout, with or
    without the lib/modules part)."""
    mods = folder / "modules"
    for base in (mods / "lib/modules", mods / "usr/lib/modules", mods):
        if base.is_dir():
            found = [p for p in sorted(base.iterdir()) if p.is_dir() and (p / "kernel").is_dir()]
            if found:
                return found
    return []


def image_release(image: Path) -> str | None:
    """The release (`uname -r`) an x86 bzImage carries in its setup header (the kernel_version string the
    boot protocol points to), or None when it has none."""
    try:
        with open(image, "rb") as f:
            head = f.read(0x8000)
    except OSError:
        return None
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        return None
    offset = int.from_bytes(head[0x20E:0x210], "little")
    if not offset:
        return None
    start = offset + 0x200
    text = head[start:start + 256].split(b"\0", 1)[0].decode(errors="replace").split()
    return text[0] if text else None


def release_moddir(folder: Path) -> Path | None:
    """The one modules/lib/modules/<release> folder of a path kernel: the only one, or the one whose name is
    the release its kernel image carries (a reused INSTALL_MOD_PATH collects one per build)."""
    found = module_dirs(folder)
    if len(found) == 1:
        return found[0]
    image = kernel_image(folder)
    release = image_release(image) if image else None
    match = [p for p in found if p.name == release]
    return match[0] if match else None


def path_layout_problem(folder: Path) -> str:
    """What a path kernel's folder lacks, or "" when it has what the image build needs."""
    if kernel_image(folder) is None:
        return "no bzImage or vmlinuz"
    if not (folder / ".config").is_file():
        return "no .config (the config check needs the kernel's own)"
    found = module_dirs(folder)
    if not found:
        return "no modules/lib/modules/<release>/kernel (run `make modules_install INSTALL_MOD_PATH=<dir>/modules`)"
    if release_moddir(folder) is None:
        image = kernel_image(folder)
        return (f"several module releases under modules/ ({', '.join(p.name for p in found)}) and none is the "
                f"release {image.name if image else 'the image'} carries ({image_release(image) if image else None}): keep one")
    return ""
