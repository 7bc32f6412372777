"""Debian's kernels from the archive, through a private apt state of ours (the host's apt is not touched):
which linux-image-amd64 a suite has now, and its package fetched and unpacked."""

from __future__ import annotations

import fcntl
import functools
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from testbed.host import proc
from testbed.errors import CommandError, TestbedError
from testbed.kernels.ref import SUITES
from testbed.host.paths import cache_dir

MIRROR = "http://deb.debian.org/"
LISTS_MAX_AGE_S = 6 * 3600  # the archive moves on: a suite's newest kernel is looked up anew after this

Say = Callable[[str], None]


def apt_dir() -> Path:
    return cache_dir() / "apt"


def suite_dir(suite: str) -> Path:
    """Each suite has an apt state of its own: one suite whose index cannot be read (an expired Release
    file, a mirror that dropped it) never stops a scenario that needs another."""
    return apt_dir() / suite


KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")  # bootstrap installs it (Ubuntu hosts too)


def sources_text(suite: str) -> str:
    signed = f"[signed-by={KEYRING}] " if KEYRING.is_file() else ""
    return "".join(f"deb {signed}{MIRROR}{archive} {name} main\n" for archive, name in SUITES[suite])


def apt_options(root: Path) -> list[str]:
    return [
        "-o", f"Dir::Etc::SourceList={root / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State={root / 'state'}",
        "-o", f"Dir::State::Lists={root / 'lists'}",
        "-o", "Dir::State::status=/dev/null",
        "-o", f"Dir::Cache={root / 'cache'}",
        "-o", "APT::Architecture=amd64",
        "-o", "APT::Architectures=amd64",
        "-o", "Acquire::Languages=none",
        "-o", "APT::Sandbox::User=root",
        "-o", "Debug::NoLocking=1",
    ]


class SuiteUnreadable(TestbedError):
    """A suite's package index could not be fetched and no earlier copy is at hand."""


def refresh(suite: str, say: Say, *, force: bool = False) -> Path:
    """One suite's private apt state, its package lists fetched when missing, older than LISTS_MAX_AGE_S
    or when the suite's sources changed. Only that suite is fetched. A failed update with older lists
    at hand goes on with them, and says so; without any, SuiteUnreadable names the suite."""
    root = suite_dir(suite)
    for sub in ("lists/partial", "cache/archives/partial", "state"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = root / "updated"
        text = sources_text(suite)
        changed = not (root / "sources.list").exists() or (root / "sources.list").read_text() != text
        fresh = stamp.exists() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE_S
        if fresh and not changed and not force:
            return root
        if changed:  # the old lists do not cover the new sources: a failed update must not pass for fresh
            stamp.unlink(missing_ok=True)
        (root / "sources.list").write_text(text)
        say(f"kernels: apt-get update ({suite}: {', '.join(name for _, name in SUITES[suite])})")
        try:
            # apt-get update exits 0 on some failed indexes (a warning): --error-on=any makes each one count.
            proc.run(["apt-get", "-q", *apt_options(root), "--error-on=any", "update"], timeout=300,
                     hint=f"the kernel axis reads Debian's archive at {MIRROR}")
        except CommandError as e:
            why = _apt_error(e)
            if not stamp.exists() or changed:
                raise SuiteUnreadable(f"debian:{suite}: its package index could not be read ({why}); "
                                      "other suites are not affected") from None
            say(f"kernels: apt-get update of {suite} failed ({why}); going on with its package lists of "
                + time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp.stat().st_mtime)))
            return root
        stamp.touch()
    return root


def _apt_error(e: CommandError) -> str:
    """The first E:/W: line apt printed, or the command's own summary."""
    for line in (e.stderr + "\n" + e.stdout).splitlines():
        if line.startswith(("E:", "W:", "Err:")):
            return line.strip()[:200]
    return str(e).splitlines()[0][:200]


def _compare(a: str, b: str) -> int:
    if a == b:
        return 0
    lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b], check=False).returncode == 0
    return -1 if lt else 1


def parse_madison(text: str) -> list[tuple[str, str, str]]:
    """`apt-cache madison` lines -> (version, archive, suite) triples."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 3:
            continue
        m = re.search(r"https?://[^/]+/(\S+) (\S+?)/\S+ \S+ (?:Packages|Sources)", parts[2])
        if m:
            out.append((parts[1], m.group(1).rstrip("/"), m.group(2)))
    return out


def newest_in_suite(triples: list[tuple[str, str, str]], suite: str) -> str | None:
    family = set(SUITES[suite])
    versions = [v for v, archive, s in triples if (archive, s) in family]
    if not versions:
        return None
    return sorted(versions, key=functools.cmp_to_key(_compare))[-1]


def image_dependency(show: str) -> tuple[str, str] | None:
    """The versioned linux-image-<release> package a linux-image-amd64 stanza depends on."""
    for line in show.splitlines():
        if line.startswith("Depends:"):
            m = re.search(r"(linux-image-[0-9][^\s,(]*)\s*\(=\s*([^)\s]+)\)", line)
            if m:
                return m.group(1), m.group(2)
    return None


_resolved: dict[str, tuple[str, str]] = {}  # per process: a matrix's cases all get the same answer


def resolve_suite(suite: str, say: Say) -> tuple[str, str]:
    """(package, version) of the newest linux-image-amd64 in a suite (with its -updates and -security)."""
    if suite not in _resolved:
        _resolved[suite] = _resolve_suite(suite, say)
    return _resolved[suite]


def closest(triples: list[tuple[str, str, str]], version: str) -> tuple[str, str, str] | None:
    """The available linux-image-amd64 nearest to `version`, in its upstream series (6.1.x for 6.1.153-1)
    when the mirror has one: the newest not above it, else the oldest above."""
    series = ".".join(version.split(".")[:2]) + "."
    same = [t for t in triples if t[0].startswith(series)]
    ordered = sorted(dict.fromkeys(same or triples), key=functools.cmp_to_key(lambda a, b: _compare(a[0], b[0])))
    below = [t for t in ordered if _compare(t[0], version) <= 0]
    return below[-1] if below else (ordered[0] if ordered else None)


def closest_hint(root: Path, version: str) -> str:
    """How to select the closest kernel the mirror has, for an error about one it no longer has."""
    try:
        madison = proc.run(["apt-cache", *apt_options(root), "madison", "linux-image-amd64"]).stdout
        near = closest(parse_madison(madison), version)
        dep = image_dependency(proc.run(["apt-cache", *apt_options(root), "show",
                                         f"linux-image-amd64={near[0]}"]).stdout) if near else None
    except (CommandError, TestbedError):
        near, dep = None, None
    if not near or not dep:
        return "no linux-image-amd64 in the package lists to suggest instead"
    return (f"the closest available is {dep[0]} {dep[1]} ({near[2]}): select it with "
            f"client.kernel: debian:{dep[0]}={dep[1]}, or pin it as kernel: in the image's recipe.yaml")


def _resolve_suite(suite: str, say: Say) -> tuple[str, str]:
    root = refresh(suite, say)
    madison = proc.run(["apt-cache", *apt_options(root), "madison", "linux-image-amd64"]).stdout
    version = newest_in_suite(parse_madison(madison), suite)
    if version is None:
        raise TestbedError(f"debian:{suite}: no linux-image-amd64 in the package lists ({apt_dir()}); "
                           f"`apt-cache madison linux-image-amd64` said: {madison.strip()[:300]}")
    show = proc.run(["apt-cache", *apt_options(root), "show", f"linux-image-amd64={version}"]).stdout
    dep = image_dependency(show)
    if dep is None:
        raise TestbedError(f"debian:{suite}: linux-image-amd64 {version} names no linux-image-<release> package")
    return dep


def download(package: str, version: str, into: Path, say: Say, suites: tuple[str, ...] = ()) -> Path:
    """The .deb of package=version fetched into `into`, looked up in `suites` (all the suites we know when
    empty, in their order). A suite whose index cannot be read is said and skipped; the error names them."""
    into.mkdir(parents=True, exist_ok=True)
    unreadable: list[str] = []
    gone_from: list[Path] = []
    for suite in suites or tuple(SUITES):
        try:
            root = refresh(suite, say)
        except SuiteUnreadable as e:
            say(f"kernels: {e}")
            unreadable.append(str(e))
            continue
        say(f"kernels: fetching {package} {version} ({suite})")
        try:
            proc.run(["apt-get", "-q", *apt_options(root), "download", f"{package}={version}"], cwd=into, timeout=900)
        except CommandError as e:
            gone = "Version '" in (e.stderr + e.stdout) or "Unable to locate" in (e.stderr + e.stdout)
            if not gone:
                raise TestbedError(f"debian:{package}={version}: not fetched from {MIRROR}: {e}") from e
            gone_from.append(root)
            continue
        debs = sorted(into.glob(f"{package}_*.deb"))
        if not debs:
            raise TestbedError(f"debian:{package}={version}: apt-get download left no .deb in {into}")
        return debs[0]
    if not gone_from:  # no suite could be read at all
        raise TestbedError(f"debian:{package}={version}: no package index could be read: " + "; ".join(unreadable))
    hint = closest_hint(gone_from[0], version)
    unread = f" ({len(unreadable)} suite(s) unreadable: " + "; ".join(unreadable) + ")" if unreadable else ""
    raise TestbedError(f"{package} {version} is not on the mirror any more ({MIRROR}); {hint}{unread}")
