"""ICMP echo to a guest from inside the run's namespace, with a raw socket (no ping binary, no processes)."""

from __future__ import annotations

import os
import select
import socket
import struct
import time

from testbed.net.netns import socket_in


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


class Pinger:
    def __init__(self, netns: str, address: str):
        self.address = address
        self.sock = socket_in(netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.ident = os.getpid() & 0xFFFF
        self.seq = 0

    def ping(self, timeout: float = 1.0) -> float | None:
        """Round trip in ms, or None when no reply came in time."""
        self.seq = (self.seq + 1) & 0xFFFF
        header = struct.pack("!BBHHH", 8, 0, 0, self.ident, self.seq)
        payload = struct.pack("!d", time.monotonic())
        packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), self.ident, self.seq) + payload
        start = time.monotonic()
        self.sock.sendto(packet, (self.address, 0))
        deadline = start + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return None
            data, addr = self.sock.recvfrom(2048)
            ihl = (data[0] & 0x0F) * 4
            typ, _, _, ident, seq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if addr[0] == self.address and typ == 0 and ident == self.ident and seq == self.seq:
                return (time.monotonic() - start) * 1000

    def close(self) -> None:
        self.sock.close()
