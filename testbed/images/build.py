"""Building a guest image from its recipe and a kernel: mmdebstrap root, the kernel's pruned modules
(the recipe's pinned Debian kernel, or another one: testbed/kernels), our guest programs and overlay, a
tiny initramfs, and a raw ext4 root made with `mkfs.ext4 -d`. One cache entry per recipe and kernel.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from testbed.host import proc
from testbed.host.cleanup import Cleanup
from testbed.errors import CommandError, KernelError, TestbedError
from testbed.images import cache, initramfs, kmods
from testbed.images.recipe import Recipe, load_recipe, recipe_hash
from testbed.kernels import source as ksource
from testbed.kernels.ref import KernelRef
from testbed.kernels.source import KernelTree

Say = Callable[[str], None]

DEFAULT_EXCLUDES = (
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
    "/usr/share/lintian/*",
)


DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")  # package debian-archive-keyring


def mmdebstrap_argv(recipe: Recipe, target: Path) -> list[str]:
    argv = [
        "mmdebstrap",
        "--mode=root",
        f"--variant={recipe.variant}",
        "--include=" + ",".join(recipe.packages),
    ]
    for pattern in DEFAULT_EXCLUDES + recipe.exclude_paths:
        argv.append(f"--dpkgopt=path-exclude={pattern}")
    if DEBIAN_KEYRING.is_file():  # a host that is not Debian (Ubuntu) trusts Debian's archive only through it
        argv.append(f"--keyring={DEBIAN_KEYRING}")
    # No kernel package is installed (it would pull initramfs-tools and udev into the guest): the kernel
    # comes prepared from testbed/kernels and only its modules go in.
    argv += [recipe.suite, str(target), *recipe.sources]
    return argv


def compile_program(src: Path, dest: Path) -> None:
    cc = shutil.which("musl-gcc")
    argv = [cc, "-static", "-Os", "-o", str(dest), str(src)] if cc else ["gcc", "-static", "-Os", "-o", str(dest), str(src)]
    dest.parent.mkdir(parents=True, exist_ok=True)
    proc.run(argv, hint="the guest programs are built with musl-gcc (apt-get install musl-tools) or gcc -static")


def copy_overlay(src: Path, root: Path) -> None:
    for p in sorted(src.rglob("*")):
        dst = root / p.relative_to(src)
        if p.is_dir() and not p.is_symlink():
            dst.mkdir(parents=True, exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.exists() or dst.is_symlink():
                dst.unlink()
            shutil.copy2(p, dst, follow_symlinks=False)


def installed_packages(root: Path) -> dict[str, str]:
    """The guest root's packages and versions (`dpkg-query -W` on its dpkg database): what makes two
    images of one recipe the same guest, since the mirror moves on between builds."""
    out = proc.run(["dpkg-query", f"--admindir={root / 'var/lib/dpkg'}", "-W", "-f", "${Package}\t${Version}\n"]).stdout
    return dict(sorted(line.split("\t", 1) for line in out.splitlines() if "\t" in line))


def packages_hash(packages: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{p}={v}\n" for p, v in sorted(packages.items())).encode()).hexdigest()[:16]


def dir_size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def image_hash(recipe: Recipe, kernel: KernelTree) -> str:
    """The cache key of an image: its recipe's hash and the prepared kernel's key (a Debian package and
    version, or the hash of a path kernel's whole tree)."""
    return hashlib.sha256(f"{recipe_hash(recipe)} {kernel.key}".encode()).hexdigest()[:16]


def kernel_for(recipe: Recipe, ref: KernelRef, say: Say) -> KernelTree:
    return ksource.prepare(ref, (recipe.kernel.package, recipe.kernel.version), say, recipe.suite)


def build(name: str, kernel: KernelRef = KernelRef("default"), *, rebuild: bool = False,
          say: Say = print) -> tuple[cache.Image, bool]:
    """Return (image, was_cached). Builds only when the recipe and kernel have no complete cache entry."""
    recipe = load_recipe(name)
    tree = kernel_for(recipe, kernel, say)
    digest = image_hash(recipe, tree)
    found = cache.lookup(name, digest)
    if found and not rebuild:
        return found, True
    cache.images_dir().mkdir(parents=True, exist_ok=True)
    # One builder per image at a time (matrix jobs, two terminals); the others then find it cached.
    with open(cache.images_dir() / f"{name}-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = cache.lookup(name, digest)
        if found and not rebuild:
            return found, True
        with ksource.holding(tree):  # `testbed clean` leaves the kernel alone while its image is built
            return _build(name, recipe, tree, digest, say), False


def _build(name: str, recipe: Recipe, tree: KernelTree, digest: str, say: Say) -> cache.Image:
    for tool in ("mmdebstrap", "mkfs.ext4", "dpkg-deb", "depmod"):
        proc.need(tool)
    started = time.monotonic()
    tmp = cache.images_dir() / f".tmp-{name}-{digest}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with Cleanup() as undo:
        tmp.mkdir(parents=True)
        undo.push(f"temporary build folder {tmp}", shutil.rmtree, tmp, True)
        # The log lives beside the cache entries, not in the temporary folder: it must outlive a failure.
        log = cache.images_dir() / f"{name}-{digest}.build.log"
        log.unlink(missing_ok=True)
        root = tmp / "root"
        say(f"{name}: mmdebstrap {recipe.suite} ({len(recipe.packages)} packages; kernel {tree.ref}: "
            f"{tree.release}); log {log}")
        proc.run_logged(
            mmdebstrap_argv(recipe, root),
            log,
            hint=f"is the package mirror in {recipe.path} reachable? full log: {log}",
        )
        packages = installed_packages(root)
        kver = tree.release
        src_mods = tree.moddir
        deps = kmods.parse_modules_dep((src_mods / "modules.dep").read_text())
        builtin = kmods.builtin_names(src_mods)
        say(f"{name}: kernel {kver}: selecting modules")
        # The recipe's own kernel must have every module it names; another kernel may lack some that
        # no scenario of it needs (the config check before boot names what a scenario does need).
        src = tree.source
        strict = (src.get("kind") == "debian" and src.get("package") == recipe.kernel.package
                  and src.get("version") == recipe.kernel.version)
        absent: list[str] = []
        wanted = kmods.select(deps, list(recipe.modules), builtin, recipe.path, None if strict else absent)
        kmods.install(src_mods, root / "lib/modules" / kver, wanted)
        (root / "lib/modules" / kver / "config").write_bytes(tree.config.read_bytes())  # the guest's own .config
        proc.run(["depmod", "-b", str(root), kver])
        shutil.copy2(tree.vmlinuz, tmp / "vmlinuz")
        for dest, src in recipe.program_sources().items():
            compile_program(src, root / dest.lstrip("/"))
        for overlay in recipe.overlay_dirs():
            copy_overlay(overlay, root)
        boot_absent: list[str] = []
        boot_mods = kmods.select(deps, list(recipe.initramfs_modules), builtin, recipe.path, None if strict else boot_absent)
        # The root disk's path must be there; crc32c_generic alone may be gone (newer kernels build crc32c in).
        lacking = [m for m in boot_absent if m != "crc32c_generic"]
        if lacking:
            raise KernelError(recipe.path, "initramfs_modules", f"kernel {tree.ref} ({kver}) has no module (nor "
                              f"built-in) {', '.join(lacking)}: the guest could not reach its root disk")
        absent += boot_absent
        if absent:
            say(f"{name}: kernel {kver} has no module (nor built-in) {', '.join(absent)}: left out")
        busybox = root / "bin/busybox"
        if not busybox.exists():
            raise TestbedError(f"{name}: recipe must include busybox-static (the initramfs uses it)")
        (tmp / "initrd.img").write_bytes(initramfs.build(busybox, src_mods, boot_mods))
        size_mb = dir_size(root) * 12 // 10 // 2**20 + recipe.root_extra_mb
        say(f"{name}: mkfs.ext4 -d ({size_mb} MB)")
        img = tmp / "root.img"
        proc.run(
            ["mkfs.ext4", "-q", "-F", "-L", f"tb-{name}", "-O", "^has_journal", "-d", str(root), str(img), f"{size_mb}M"],
            hint="mkfs.ext4 -d needs e2fsprogs >= 1.43",
        )
        shutil.rmtree(root)
        image = cache.Image(
            name=name,
            hash=digest,
            kernel_version=kver,
            kernel_package=tree.package,
            recipe_hash=recipe_hash(recipe),
            kernel_ref=tree.ref,
            kernel_source=tree.source,
            missing_modules=list(dict.fromkeys(absent)),
            packages=packages,
            packages_hash=packages_hash(packages),
            size_bytes=sum(p.stat().st_size for p in tmp.iterdir() if p.is_file()),
            built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            build_seconds=round(time.monotonic() - started, 1),
            dir="",
        )
        image.write_manifest(tmp)
        final = cache.entry_dir(name, digest)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)  # the step that makes the entry complete
    result = cache.read_entry(final)
    if result is None:
        raise TestbedError(f"{name}: built image at {final} is incomplete")
    return result


def ensure(name: str, kernel: KernelRef = KernelRef("default"), say: Say = print) -> cache.Image:
    """The current image for `name` with `kernel`, building it if the cache lacks it."""
    image, cached = build(name, kernel, say=say)
    return image


__all__ = ["build", "ensure", "mmdebstrap_argv", "CommandError"]
