"""The kernel's DWARF for reading a dump: for a Debian kernel, its `linux-image-<release>-dbg` package
(855 MB for 6.1, 5.6 GB unpacked), fetched on first need, of which only vmlinux and the debug objects of
the modules on the storage and network paths are kept, cached by release (~700 MB for 6.1). With them,
drgn unwinds through module code (nfs, sunrpc, virtio_net are modules in Debian) and reads the arguments
of the frames (the gfp_mask and order of an allocation). A `path:` kernel brings its own `vmlinux` in its
folder. Without them the dump is still read (kallsyms + BTF) and forensics.json says what was not."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any, Callable

from testbed.host.paths import cache_dir

Say = Callable[[str], None]
DEBUG_ROOT = "./usr/lib/debug"
# The debug objects kept besides vmlinux: the modules of the storage and network paths (the package has
# every module's: 5.6 GB). Paths under lib/modules/<release>/kernel/.
KEEP_MODULES = ("fs/nfs/*", "fs/nfs_common/*", "fs/lockd/*", "net/sunrpc/*", "drivers/net/virtio_net.ko",
                "drivers/net/net_failover.ko", "net/core/failover.ko", "drivers/virtio/*", "drivers/block/nbd.ko",
                "drivers/block/aoe/*", "drivers/block/virtio_blk.ko", "drivers/scsi/*iscsi*", "drivers/scsi/sd_mod.ko",
                "drivers/nvme/*", "drivers/char/virtio_console.ko", "drivers/firmware/qemu_fw_cfg.ko",
                "net/ipv4/*", "net/ipv6/*", "net/xfrm/*", "net/key/*", "net/packet/*")
MANIFEST = "symbols.json"
ENV_OFF = "TESTBED_SYMBOLS"  # =0: never fetch (the dumps are read with kallsyms and BTF only)


def symbols_dir(release: str) -> Path:
    return cache_dir() / "symbols" / release


def cached(release: str) -> Path | None:
    """The release's kept DWARF (a folder with vmlinux and modules/), if fetched."""
    d = symbols_dir(release)
    return d if (d / MANIFEST).exists() and (d / "vmlinux").exists() else None


def files(folder: Path) -> list[Path]:
    """vmlinux first, then the kept modules' debug objects."""
    return [folder / "vmlinux", *sorted((folder / "modules").glob("*.ko"))]


def listing() -> list[dict[str, Any]]:
    """Every release with symbols cached: what `doctor` and `testbed clean` say."""
    root = cache_dir() / "symbols"
    out = []
    for d in sorted(root.iterdir()) if root.exists() else []:
        if (d / MANIFEST).exists():
            m = json.loads((d / MANIFEST).read_text())
            out.append({"release": d.name, "package": m.get("package"), "mb": m.get("kept_mb"), "path": str(d)})
    return out


def wanted(name: str, release: str) -> str | None:
    """Where a member of the -dbg package's data goes in the cache (vmlinux, modules/X.ko), or None."""
    if name == f"{DEBUG_ROOT}/boot/vmlinux-{release}":
        return "vmlinux"
    prefix = f"{DEBUG_ROOT}/lib/modules/{release}/kernel/"
    if name.startswith(prefix) and name.endswith(".ko"):
        rest = name[len(prefix):]
        if any(fnmatch.fnmatch(rest, p) for p in KEEP_MODULES):
            return f"modules/{Path(rest).name}"
    return None


def unpack(deb: Path, release: str, dest: Path, say: Say) -> float:
    """The kept files of a -dbg package into `dest` (streamed: the 5.6 GB are never on disk); MB kept."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "modules").mkdir(parents=True)
    kept, seen, last = 0, 0, time.monotonic()
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as p:
        assert p.stdout is not None
        with tarfile.open(fileobj=p.stdout, mode="r|") as tf:
            for m in tf:
                seen += 1
                where = wanted(m.name, release) if m.isfile() else None
                if where:
                    src = tf.extractfile(m)
                    assert src is not None
                    with open(tmp / where, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                    kept += m.size
                if time.monotonic() - last > 10:
                    say(f"symbols: {release}: unpacking ({seen} files read, {kept / 2**20:.0f} MB kept)")
                    last = time.monotonic()
    if p.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(f"dpkg-deb --fsys-tarfile {deb.name} exited {p.returncode}")
    if not (tmp / "vmlinux").exists():
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(f"{deb.name} holds no {DEBUG_ROOT}/boot/vmlinux-{release}")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return kept / 2**20


def of_image(image: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The kernel source and release of an image as a case records it (verdict.json's `images`: its
    `package` as package=version, its `kernel`): what `ensure` wants for a VM other than the client."""
    package, _, version = str(image.get("package") or "").partition("=")
    source = {"kind": "debian", "package": package, "version": version} if version else {}
    return source, str(image.get("kernel") or "")


def ensure(source: dict[str, Any], release: str, say: Say) -> tuple[list[Path], str]:
    """The DWARF files for the kernel a case ran (its `kernel` fact's source), fetched on first need; and
    how they were found, or why there are none (then the dump is read without them)."""
    if source.get("kind") == "path":
        vmlinux = Path(str(source.get("path"))) / "vmlinux"
        return ([vmlinux], f"{vmlinux} (the kernel's own folder)") if vmlinux.exists() else \
            ([], f"the path: kernel's folder has no vmlinux ({vmlinux})")
    if source.get("kind") != "debian":
        return [], f"no symbols for a kernel of kind {source.get('kind')!r}"
    got = cached(release)
    if got:
        return files(got), f"{got} (cached)"
    if os.environ.get(ENV_OFF) == "0":
        return [], f"{ENV_OFF}=0: the -dbg package is not fetched"
    from testbed.kernels import debian  # apt's machinery: only where a package is fetched

    package, version = f"linux-image-{release}-dbg", str(source.get("version"))
    dest = symbols_dir(release)
    start = time.monotonic()
    try:
        say(f"symbols: {release}: fetching {package} {version} (about 0.9 GB, once per release)")
        deb = debian.download(package, version, dest.with_name(dest.name + ".deb"), say)
        kept = unpack(deb, release, dest, say)
    except Exception as e:  # noqa: BLE001 - symbols are an aid to the reading, never a failure of the case
        return [], f"{package}={version} not fetched: {type(e).__name__}: {e}"
    finally:
        shutil.rmtree(dest.with_name(dest.name + ".deb"), ignore_errors=True)
    (dest / MANIFEST).write_text(json.dumps({"package": f"{package}={version}", "kept_mb": round(kept),
                                             "seconds": round(time.monotonic() - start, 1)}) + "\n")
    say(f"symbols: {release}: {kept:.0f} MB kept in {dest} ({time.monotonic() - start:.0f} s)")
    return files(dest), f"{dest} (fetched now)"
