"""Entering a network namespace for one socket: the host's main namespace is never changed.

A helper thread joins the namespace (setns affects only the calling thread), makes the socket and
exits; the socket stays bound to that namespace.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading

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
    t.join()
    r = result[0]
    if isinstance(r, BaseException):
        raise r
    return r


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
        from concurrent.futures import ThreadPoolExecutor

        self.netns = netns
        self._ex = ThreadPoolExecutor(1, thread_name_prefix=f"netns-{netns}", initializer=_enter, initargs=(netns,))

    def call(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self._ex.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        self._ex.shutdown(wait=True)
