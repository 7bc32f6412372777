"""AoE: vblade on the NAS serves a file as shelf.slot on the storage NIC; the client loads `aoe`
bound to its storage NIC, runs `aoe-discover` and takes the device that discovery reports.

AoE frames are not IP and do not use a memalloc socket: they bypass sk_set_memalloc and are not in
the kernel's pfmemalloc protocol whitelist. The case records this rather than hiding it."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from testbed.cleanup import Cleanup
from testbed.config.scenario import Scenario
from testbed.errors import GuestError
from testbed.storage import Ends, use_block_device
from testbed.vm.argv import Disk
from testbed.vm.machine import VM

BACKING = "/srv/aoe.img"
NOTE = ("AoE does not use a memalloc socket: its frames bypass sk_set_memalloc and are not in the kernel's "
        "pfmemalloc protocol whitelist, so receive buffers from the reserve are dropped for it")


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


class Aoe:
    name = "aoe"
    needs_nas = True

    def client_disks(self, sc: Scenario, rundir: Path, undo: Cleanup) -> tuple[Disk, ...]:
        return ()

    def export(self, nas: VM, sc: Scenario, ends: Ends) -> dict[str, Any]:
        a = sc.storage.aoe
        size = sc.backing_mb()
        nas.sh(f"fallocate -l {size}M {BACKING}", 60)
        self.start_service(nas, sc, ends)
        return {"target": f"e{a.shelf}.{a.slot}", "iface": nas.net_devs[0], "backing_mb": size, "note": NOTE}

    def start_service(self, nas: VM, sc: Scenario, ends: Ends) -> str:
        a = sc.storage.aoe
        iface = nas.net_devs[0]
        lines: list[str] = []
        # vblade runs for the whole case as an agent job (it dies with the VM).
        nas.agent.start(["vblade", str(a.shelf), str(a.slot), iface, BACKING], on_line=lines.append)
        time.sleep(0.5)
        if not nas.exec(["pgrep", "-x", "vblade"], 10).ok:
            raise GuestError(f"NAS: vblade {a.shelf} {a.slot} {iface} exited: {' | '.join(lines[-3:])}")
        return f"vblade {a.shelf} {a.slot} {iface} {BACKING}"

    def stop_service(self, nas: VM, sc: Scenario, ends: Ends) -> str:
        nas.exec(["pkill", "-x", "vblade"], 10)
        return "pkill -x vblade"

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
        macs = client.sh(f"cat /sys/block/etherd!{want}/mac 2>/dev/null || true", 10).stdout.split()
        if len(set(macs)) > 1:
            raise GuestError(f"client: AoE shelf/slot clash: {want} is answered by several targets ({', '.join(macs)})")
        facts = use_block_device(client, f"/dev/etherd/{want}", sc)
        facts.update(discovered=seen, note=NOTE)
        return facts

    def counters(self, client: VM) -> dict[str, Any]:
        text = client.sh("mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug; "
                         "cat /sys/kernel/debug/aoe/e* 2>/dev/null", 10, check=False).stdout
        return parse_debugfs(text)
