"""Entering a network namespace for one socket: the host's main namespace is never changed.

A helper thread joins the namespace (setns affects only the calling thread), makes the socket and
exits; the socket stays bound to that namespace.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from testbed.host import proc
from testbed.host.cleanup import join, wait_result

CLONE_NEWNET = 0x40000000


def socket_in(netns: str, family: int, type_: int, proto: int = 0) -> socket.socket:
    result: list[socket.socket | BaseException] = []

    def work() -> None:
        try:
            _enter(netns)
            result.append(socket.socket(family, type_, proto))
        except BaseException as e:
            result.append(e)

    t = threading.Thread(target=work, name=f"netns-{netns}")
    t.start()
    join(t)
    r = result[0]
    if isinstance(r, BaseException):
        raise r
    return r


def socket_at(netns: str | None, family: int, type_: int, proto: int = 0) -> socket.socket:
    """A socket in namespace `netns`, or in ours when netns is None."""
    return socket.socket(family, type_, proto) if netns is None else socket_in(netns, family, type_, proto)


def _enter(netns: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns} failed")
    finally:
        os.close(fd)


class NetnsWorker:
    """One thread that lives inside a namespace; netlink sockets and tun ioctls made there stay there.

    pyroute2's own NetNS forks helper processes, which inherit our signal handlers and threads;
    a thread that joined the namespace needs neither.
    """

    def __init__(self, netns: str):
        self.netns = netns
        self._ex = ThreadPoolExecutor(1, thread_name_prefix=f"netns-{netns}", initializer=_enter, initargs=(netns,))

    def call(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        return wait_result(self._ex.submit(fn, *args, **kwargs))

    def close(self) -> None:
        self._ex.shutdown(wait=True)


def delete_netns(name: str) -> subprocess.CompletedProcess[str]:
    """Delete a namespace after ending every process still inside it (a fault's helper: dnsmasq,
    iperf3, tcpdump): `ip netns delete` only unmounts the name, and its processes would live on."""
    def pids() -> list[int]:
        out = proc.run(["ip", "netns", "pids", name], check=False, timeout=30).stdout
        return [int(x) for x in out.split() if x.isdigit()]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        found = pids()
        for pid in found:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 3
        while found and pids() and time.monotonic() < deadline:
            time.sleep(0.1)
    return proc.run(["ip", "netns", "delete", name], check=False, timeout=30)
