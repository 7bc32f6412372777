"""Running host commands: argv lists only, failures raised as CommandError with their output."""

from __future__ import annotations

import ctypes
import shutil
import signal
import subprocess
from pathlib import Path

from testbed.errors import CommandError, MissingToolError

# Debian package that provides each host tool we call, for the "install it" hint.
PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs",
    "dpkg-deb": "dpkg",
    "depmod": "kmod",
    "musl-gcc": "musl-tools",
    "ip": "iproute2",
    "nft": "nftables",
    "dnsmasq": "dnsmasq-base",
    "tcpdump": "tcpdump",
    "iperf3": "iperf3",
    "tc": "iproute2",
}


_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: a forked child must not dlopen
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: SIGKILL the child when the thread that started it dies (start it from a thread
    that lives as long as the child should: the main thread)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def need(tool: str) -> str:
    """Path of a host tool, or MissingToolError naming the package to install."""
    path = shutil.which(tool)
    if not path:
        raise MissingToolError(tool, PACKAGES.get(tool, tool))
    return path


def run(
    argv: list[str],
    *,
    timeout: float | None = 600,
    cwd: Path | str | None = None,
    check: bool = True,
    hint: str = "",
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv, capture its output; raise CommandError when it fails or times out."""
    need(argv[0])
    try:
        cp = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, input=input, errors="replace"
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise CommandError(argv, None, out, err, hint) from None
    if check and cp.returncode != 0:
        raise CommandError(argv, cp.returncode, cp.stdout, cp.stderr, hint)
    return cp


def run_logged(argv: list[str], log: Path, *, timeout: float | None = 3600, hint: str = "") -> None:
    """Run a long command with its output going to a log file; on failure show the log's tail."""
    need(argv[0])
    with open(log, "a") as f:
        f.write("$ " + " ".join(argv) + "\n")
        f.flush()
        try:
            rc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = None
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-8:]
        raise CommandError(argv, rc, "", "\n".join(tail), hint or f"full log: {log}")
