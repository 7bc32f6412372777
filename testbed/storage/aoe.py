"""AoE: vblade on the NAS serves a file as shelf.slot on the storage NIC; the client loads `aoe`
bound to its storage NIC, runs `aoe-discover` and takes the device that discovery reports.

AoE frames are not IP and do not use a memalloc socket: they bypass sk_set_memalloc and are not in
the kernel's pfmemalloc protocol whitelist. The case records this rather than hiding it."""

from __future__ import annotations

import errno
import random
import re
import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from testbed.check.frames import FrameClass
from testbed.errors import ConfigError, GuestError, ProbeError
from testbed.net.netns import socket_at
from testbed.kernels.kconfig import Need
from testbed.nas.base import Nas
from testbed.storage.base import Ends, ServiceState, Storage, parse_pgrep, is_processes, parse_processes, use_block_device
from testbed.vm.machine import VM

if TYPE_CHECKING:  # type only: see testbed/storage/base.py
    from testbed.config.scenario import Scenario

BACKING = "aoe.img"  # under the NAS's srv
DEBUGFS = ("mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug; "
           "cat /sys/kernel/debug/aoe/e* 2>/dev/null")
NOTE = ("AoE does not use a memalloc socket: its frames bypass sk_set_memalloc and are not in the kernel's "
        "pfmemalloc protocol whitelist, so receive buffers from the reserve are dropped for it")

# drivers/block/aoe/aoe.h: struct aoedev's flags
AOE_DEVFL = ((0, "UP"), (1, "TKILL"), (2, "EXT"), (3, "GDALLOC"), (4, "GD_NOW"), (5, "KICKME"), (6, "NEWSIZE"),
             (7, "FREEING"), (8, "FREED"))


@dataclass(frozen=True)
class AoeSpec:
    shelf: int = 0  # the AoE target's shelf (major) number
    slot: int = 1  # the AoE target's slot (minor) number

    def validate(self, source: str, path: str) -> None:
        # 0xffff and 0xff are AoE's broadcast addresses: a target there clashes with every query.
        if not 0 <= self.shelf <= 65534:
            raise ConfigError(source, f"{path}.shelf", f"{self.shelf} clashes: shelves are 0..65534 (65535 is broadcast)")
        if not 0 <= self.slot <= 254:
            raise ConfigError(source, f"{path}.slot", f"{self.slot} clashes: slots are 0..254 (255 is broadcast)")


def parse_aoe_stat(text: str) -> dict[str, dict[str, str]]:
    """`aoe-stat` lines like '      e0.1       268.435GB   eth0 1024  up' -> {'e0.1': {...}}."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0].startswith("e") and "." in parts[0]:
            out[parts[0]] = {"size": parts[1] if len(parts) > 1 else "", "ifaces": parts[2] if len(parts) > 2 else "",
                             "state": parts[-1]}
    return out


def parse_debugfs(text: str) -> dict[str, Any]:
    """The aoe driver's debugfs view (rtt, kicked, per-target taint, lost frames ...): every
    `name: number` summed over targets, since no single retransmit counter is exported."""
    out: dict[str, Any] = {"aoe_debugfs": bool(text.strip())}
    for key, value in re.findall(r"([A-Za-z_]+):\s*(-?\d+)\b", text):
        out[f"aoe_{key}"] = out.get(f"aoe_{key}", 0) + int(value)
    return out


def parse_vblade_pids(text: str) -> ServiceState:
    """`pgrep -x vblade`: one pid a line while vblade serves, nothing once it is gone."""
    return parse_pgrep(text, "vblade")


class Aoe(Storage):
    name = "aoe"
    title = "AoE"
    spec = AoeSpec
    is_ip = False  # Ethernet frames: no IPsec, and a DHCP lease is not its path
    nas_processes = ("vblade",)
    frame_classes = (FrameClass("aoe", (r"aoe\w*",), "inside the AoE driver"),)
    link_probe_column = "nas_aoe_ms"  # AoeProbe.column
    host_tools = (("vblade", "vblade", "nas.backend netns/docker with AoE"),)

    def link_probe(self, netns: str, iface: str, nas_mac: str, sc: Scenario) -> AoeProbe:
        return AoeProbe(netns, iface, nas_mac, sc.storage.aoe.shelf, sc.storage.aoe.slot)

    def client_kernel_needs(self, sc: Scenario) -> tuple[Need, ...]:
        return (Need("CONFIG_ATA_OVER_ETH", "the AoE initiator"),)

    def export(self, nas: Nas, sc: Scenario, ends: Ends) -> dict[str, Any]:
        a = sc.storage.aoe
        size = sc.backing_mb()
        nas.exec(["fallocate", "-l", f"{size}M", f"{nas.srv}/{BACKING}"], 60, check=True)
        self.start_service(nas, sc, ends)
        return {"target": f"e{a.shelf}.{a.slot}", "iface": nas.net_devs[0], "backing_mb": size, "note": NOTE,
                "server": f"vblade ({nas.traits.where})"}

    def start_service(self, nas: Nas, sc: Scenario, ends: Ends) -> str:
        a = sc.storage.aoe
        argv = ["vblade", str(a.shelf), str(a.slot), nas.net_devs[0], f"{nas.srv}/{BACKING}"]
        # For the whole case, ended with the NAS; it opens its raw socket at once, or exits.
        nas.serve("vblade", argv, timeout=5, settle_s=0.5)
        return " ".join(argv)

    def stop_service(self, nas: Nas, sc: Scenario, ends: Ends) -> str:
        return nas.stop_server("vblade")

    def service_argv(self, nas: Nas, sc: Scenario, ends: Ends) -> list[str] | None:
        return nas.processes_argv("vblade")

    def parse_service(self, text: str) -> ServiceState:
        return parse_processes(text) if is_processes(text) else parse_vblade_pids(text)

    def read_state(self, dump: Any, sockets: list[dict[str, Any]]) -> dict[str, Any]:
        """Each AoE device (the aoe module's `devlist`): its flags, the frames awaiting retransmission, the
        preallocated skbs left in its pool, and per target the commands outstanding against the window."""
        aoe = dump.module_btf("aoe")
        d_off = {k: aoe.offsetof("aoedev", k) for k in ("next", "aoemajor", "aoeminor", "flags", "rexmitq", "targets",
                                                        "ntargets", "rttavg", "skbpool")}
        t_off = {k: aoe.offsetof("aoetgt", k) for k in ("addr", "nout", "maxout", "nframes", "falloc", "wpkts", "rpkts")}
        qlen = dump.off("sk_buff_head", "qlen")
        out: list[dict[str, Any]] = []
        dev = dump.u64(dump.module_object("devlist", "aoe"))
        while dev and len(out) < 1000:
            flags = int(dump.prog.read_u16(dev + d_off["flags"]))
            targets, tgts = dump.u64(dev + d_off["targets"]), []
            for i in range(min(dump.u64(dev + d_off["ntargets"]), 64) if targets else 0):
                t = dump.u64(targets + 8 * i)
                if t:
                    tgts.append({"mac": bytes(dump.prog.read(t + t_off["addr"], 6)).hex(":"),
                                 **{k: int(dump.prog.read_u16(t + t_off[k])) for k in ("nout", "maxout", "nframes")},
                                 "falloc": dump.u64(t + t_off["falloc"]),
                                 **{k: dump.u32(t + t_off[k]) for k in ("wpkts", "rpkts")}})
            out.append({"device": f"e{dump.u64(dev + d_off['aoemajor'])}.{int(dump.prog.read_u16(dev + d_off['aoeminor']))}",
                        "flags": [f for b, f in AOE_DEVFL if flags >> b & 1],
                        "rexmit_queue": dump.list_len(dev + d_off["rexmitq"]),
                        "skbpool": dump.u32(dev + d_off["skbpool"] + qlen),
                        "rttavg": dump.u32(dev + d_off["rttavg"]), "targets": tgts})
            dev = dump.u64(dev + d_off["next"])
        return {"aoe_devices": out}

    def attach(self, client: VM, sc: Scenario, ends: Ends) -> dict[str, Any]:
        a = sc.storage.aoe
        want = f"e{a.shelf}.{a.slot}"
        iface = client.net_devs[0]
        client.exec(["modprobe", "aoe", f"aoe_iflist={iface}"], 30, check=True)
        seen: dict[str, dict[str, str]] = {}
        for _ in range(50):
            client.exec(["aoe-discover"], 10)
            seen = parse_aoe_stat(client.exec(["aoe-stat"], 10).stdout)
            if seen.get(want, {}).get("state", "").startswith("up"):
                break
            time.sleep(0.2)
        else:
            raise GuestError(f"client: aoe-discover on {iface} did not find {want} up (found: {seen or 'nothing'})")
        macs = client.sh('cat "/sys/block/etherd!$1/mac" 2>/dev/null || true', 10, args=[want]).stdout.split()
        if len(set(macs)) > 1:
            raise GuestError(f"client: AoE shelf/slot clash: {want} is answered by several targets ({', '.join(macs)})")
        facts = use_block_device(client, f"/dev/etherd/{want}", sc)
        facts.update(discovered=seen, note=NOTE)
        return facts

    def counters(self, client: VM) -> dict[str, Any]:
        text = client.sh(DEBUGFS, 10, check=False).stdout
        return parse_debugfs(text)


# -- the NAS probe: AoE query-config from the switch ------------------------------------------------
ETH_P_AOE = 0x88A2
AOE_VERSION = 1
AOE_FLAG_RESPONSE = 0x08
AOE_FLAG_ERROR = 0x04
AOE_CMD_CONFIG = 1
ETH_MIN_FRAME = 60  # without the FCS; a packet socket does not pad what it sends
PACKET_OUTGOING = 4  # sockaddr_ll pkttype of a frame this host sent
# Ethernet header + AoE common header (ver/flags, error, major, minor, command, tag): 24 bytes.
_HEADER = struct.Struct("!6s6sHBBHBBI")
# Query-config arguments: buffer count, firmware version, sector count, AoE version/ccmd, config length.
_CONFIG = struct.Struct("!HHBBH")


def mac_bytes(mac: str) -> bytes:
    b = bytes.fromhex(mac.replace(":", ""))
    if len(b) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return b


def mac_text(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


@dataclass(frozen=True)
class AoeFrame:
    dst: str
    src: str
    flags: int  # the low nibble of the ver/flags byte: AOE_FLAG_RESPONSE, AOE_FLAG_ERROR
    error: int
    shelf: int
    slot: int
    command: int
    tag: int
    buffers: int | None = None  # the query-config arguments, when the frame carries them
    firmware: int | None = None
    sectors: int | None = None
    config: bytes = b""

    @property
    def response(self) -> bool:
        return bool(self.flags & AOE_FLAG_RESPONSE)


def build_aoe_query(dst: str, src: str, shelf: int, slot: int, tag: int) -> bytes:
    """An AoE query-config request (read the config string) from src to dst for shelf.slot, padded
    to Ethernet's minimum."""
    frame = _HEADER.pack(mac_bytes(dst), mac_bytes(src), ETH_P_AOE, AOE_VERSION << 4, 0, shelf, slot,
                         AOE_CMD_CONFIG, tag) + _CONFIG.pack(0, 0, 0, 0, 0)
    return frame.ljust(ETH_MIN_FRAME, b"\0")


def parse_aoe_frame(frame: bytes) -> AoeFrame | None:
    """Any AoE (version 1) frame -> its header, and its config arguments for a query-config; None
    for anything else."""
    if len(frame) < _HEADER.size:
        return None
    dst, src, etype, verflags, error, shelf, slot, command, tag = _HEADER.unpack_from(frame)
    if etype != ETH_P_AOE or verflags >> 4 != AOE_VERSION:
        return None
    f = AoeFrame(mac_text(dst), mac_text(src), verflags & 0x0F, error, shelf, slot, command, tag)
    end = _HEADER.size + _CONFIG.size
    if command == AOE_CMD_CONFIG and len(frame) >= end:
        buffers, firmware, sectors, _, length = _CONFIG.unpack_from(frame, _HEADER.size)
        return AoeFrame(f.dst, f.src, f.flags, error, shelf, slot, command, tag, buffers, firmware, sectors,
                        frame[end : end + length])
    return f


def is_reply(f: AoeFrame | None, tag: int, src: str | None = None) -> bool:
    """Whether f answers our query-config `tag` (from `src`, when given)."""
    return (f is not None and f.response and f.command == AOE_CMD_CONFIG and f.tag == tag
            and (src is None or f.src == src.lower()))


class AoeQuerier:
    """A packet socket for AoE on one interface (the switch's bridge in the run's namespace): frames
    go out with the interface's own MAC, and vblade's replies to that MAC come up the bridge."""

    def __init__(self, netns: str | None, iface: str):
        self.iface = iface
        try:
            self.sock = socket_at(netns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_AOE))
        except OSError as e:
            raise ProbeError(f"AoE probe: cannot open a packet socket in namespace {netns or '(ours)'}: {e}") from e
        try:
            self.sock.bind((iface, ETH_P_AOE))
            self.sock.setblocking(False)
            if len(self.sock.getsockname()[4]) != 6:
                raise OSError(f"{iface} has no Ethernet address")
        except OSError as e:
            self.sock.close()
            raise ProbeError(f"AoE probe: cannot bind a packet socket to {iface}: {e}") from e
        self.tag = random.getrandbits(32)

    @property
    def mac(self) -> str:
        """The interface's current MAC (a bridge's follows its ports)."""
        return mac_text(self.sock.getsockname()[4])

    def query(self, nas_mac: str, shelf: int, slot: int, timeout: float) -> float | None:
        """Round trip in ms of a query-config to nas_mac, or None when no reply came in time."""
        self.tag = (self.tag + 1) & 0xFFFFFFFF
        try:
            for _ in range(1000):  # what came since the last query (late replies, other traffic)
                self.sock.recv(2048)
        except BlockingIOError:
            pass
        except OSError as e:
            raise ProbeError(f"AoE probe: reading {self.iface}: {e}") from e
        frame = build_aoe_query(nas_mac, self.mac, shelf, slot, self.tag)
        start = time.monotonic()
        try:
            self.sock.send(frame)
        except OSError as e:
            if e.errno in (errno.ENETDOWN, errno.ENOBUFS, errno.EAGAIN, errno.ENXIO):
                return None  # the interface is down or full: no reply, as far as the NAS is concerned
            raise ProbeError(f"AoE probe: sending on {self.iface}: {e}") from e
        deadline = start + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                return None
            try:
                data, addr = self.sock.recvfrom(2048)
            except BlockingIOError:
                continue
            if addr[2] != PACKET_OUTGOING and is_reply(parse_aoe_frame(data), self.tag, nas_mac):
                return (time.monotonic() - start) * 1000
        return None

    def close(self) -> None:
        self.sock.close()


def aoe_query(netns: str | None, iface: str, nas_mac: str, shelf: int, slot: int, timeout: float) -> float | None:
    """One query-config from iface to nas_mac for shelf.slot: ms, or None without a reply."""
    q = AoeQuerier(netns, iface)
    try:
        return q.query(nas_mac, shelf, slot, timeout)
    finally:
        q.close()


class AoeProbe:
    """The NAS probe of an AoE case: a query-config from the switch's bridge to the NAS's MAC for the
    case's shelf.slot, each sample; its round trip is the timeline's `nas_aoe_ms` (AoE is no IP: no
    TCP connect can say whether vblade answers)."""

    column = "nas_aoe_ms"

    def __init__(self, netns: str, iface: str, nas_mac: str, shelf: int, slot: int):
        self.querier = AoeQuerier(netns, iface)
        self.nas_mac, self.shelf, self.slot = nas_mac, shelf, slot

    def query(self, timeout: float) -> float | None:
        return self.querier.query(self.nas_mac, self.shelf, self.slot, timeout)

    def describe(self, timeout: float) -> str:
        q = self.querier
        return (f"AoE query-config (ethertype 0x88a2, command 1) from {q.iface} ({q.mac}) to {self.nas_mac} "
                f"for e{self.shelf}.{self.slot}: round trip; empty after {timeout} s")

    def close(self) -> None:
        self.querier.close()
