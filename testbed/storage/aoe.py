"""AoE: vblade on the NAS serves a file as shelf.slot on the storage NIC; the client loads `aoe`
bound to its storage NIC, runs `aoe-discover` and takes the device that discovery reports.

AoE frames are not IP and do not use a memalloc socket: they bypass sk_set_memalloc and are not in
the kernel's pfmemalloc protocol whitelist. The case records this rather than hiding it."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from testbed.check.frames import FrameClass
from testbed.errors import ConfigError, GuestError
from testbed.kernels.kconfig import Need
from testbed.storage.base import (Ends, ServiceState, Storage, parse_pgrep, is_netns_service, netns_service_argv,
                                  parse_netns_service, use_block_device)
from testbed.vm.machine import VM

if TYPE_CHECKING:  # type only: see testbed/storage/base.py
    from testbed.config.scenario import Scenario

BACKING = "aoe.img"  # under the NAS's srv
DEBUGFS = ("mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug; "
           "cat /sys/kernel/debug/aoe/e* 2>/dev/null")
NOTE = ("AoE does not use a memalloc socket: its frames bypass sk_set_memalloc and are not in the kernel's "
        "pfmemalloc protocol whitelist, so receive buffers from the reserve are dropped for it")



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

    def client_kernel_needs(self, sc: Scenario) -> tuple[Need, ...]:
        return (Need("CONFIG_ATA_OVER_ETH", "the AoE initiator"),)

    def export(self, nas: VM, sc: Scenario, ends: Ends) -> dict[str, Any]:
        a = sc.storage.aoe
        size = sc.backing_mb()
        nas.exec(["fallocate", "-l", f"{size}M", f"{nas.srv}/{BACKING}"], 60, check=True)
        self.start_service(nas, sc, ends)
        return {"target": f"e{a.shelf}.{a.slot}", "iface": nas.net_devs[0], "backing_mb": size, "note": NOTE,
                "server": f"vblade ({ {'vm': 'NAS VM', 'netns': 'host, in the NAS namespace'}.get(nas.backend, 'container')})"}

    def start_service(self, nas: VM, sc: Scenario, ends: Ends) -> str:
        a = sc.storage.aoe
        iface = nas.net_devs[0]
        argv = ["vblade", str(a.shelf), str(a.slot), iface, f"{nas.srv}/{BACKING}"]
        if nas.backend != "vm":  # on the host: a server of the NAS's, ended with it
            host = nas  # type: Any
            host.serve("vblade", argv, host.root / "vblade.log", lambda: True, timeout=5)
            time.sleep(0.5)
            if host.server_state() != "running":
                raise GuestError(f"NAS: {' '.join(argv)} exited: {(host.root / 'vblade.log').read_text()[-300:]}")
            return " ".join(argv)
        lines: list[str] = []
        # vblade runs for the whole case as an agent job (it dies with the VM).
        nas.agent.start(argv, on_line=lines.append)
        time.sleep(0.5)
        if not nas.exec(["pgrep", "-x", "vblade"], 10).ok:
            raise GuestError(f"NAS: vblade {a.shelf} {a.slot} {iface} exited: {' | '.join(lines[-3:])}")
        return " ".join(argv)

    def stop_service(self, nas: VM, sc: Scenario, ends: Ends) -> str:
        if nas.backend != "vm":
            nas.stop_server("vblade")  # type: ignore[attr-defined]
            return "vblade stopped (SIGTERM)"
        nas.exec(["pkill", "-x", "vblade"], 10)
        return "pkill -x vblade"

    def service_argv(self, sc: Scenario, ends: Ends) -> list[str] | None:
        if sc.nas.backend != "vm":
            return netns_service_argv(ends.tag, "vblade")
        return ["pgrep", "-x", "vblade"]

    def parse_service(self, text: str) -> ServiceState:
        return parse_netns_service(text) if is_netns_service(text) else parse_vblade_pids(text)

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
