"""iSCSI: an LIO target on the NAS configured through rtslib-fb (targetcli's library: targetcli
itself wants a system D-Bus, which our init does not run), with an ACL for the client's initiator;
open-iscsi on the client with iscsid protected from the OOM killer, then swap or ext4 on the LUN."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from testbed.cleanup import Cleanup
from testbed.config.scenario import Scenario
from testbed.errors import GuestError
from testbed.storage import Ends, use_block_device
from testbed.vm.argv import Disk
from testbed.vm.machine import VM

BACKING = "/srv/iscsi-lun0.img"


def parse_session_stats(text: str) -> dict[str, Any]:
    """`iscsiadm -m session -s`: the error counters and octets."""
    wanted = ("digest_err", "timeout_err", "txdata_octets", "rxdata_octets", "scsicmd_pdus", "dataout_pdus")
    out: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key in wanted and value.strip().isdigit():
            out[f"iscsi_{key}"] = int(value)
    return out


class Iscsi:
    name = "iscsi"
    needs_nas = True

    def client_disks(self, sc: Scenario, rundir: Path, undo: Cleanup) -> tuple[Disk, ...]:
        return ()

    def export(self, nas: VM, sc: Scenario, ends: Ends) -> dict[str, Any]:
        size = sc.backing_mb()
        nas.sh(
            "modprobe -a target_core_mod target_core_file iscsi_target_mod"
            " && (mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config)"
            f" && fallocate -l {size}M {BACKING}",
            60,
        )
        params = [f"MaxRecvDataSegmentLength={sc.storage.iscsi.max_recv_data_segment_length}"]
        argv = ["/usr/local/sbin/tb-lio", "--name", "lun0", "--file", BACKING, "--size-mb", str(size),
                "--iqn", ends.target_iqn, "--portal", ends.nas_ip, "--initiator", ends.initiator_iqn]
        for p in params:
            argv += ["--param", p]
        res = nas.exec(argv, 120, check=True)
        config = json.loads(res.stdout)
        acls = [acl["node_wwn"] for t in config.get("targets", []) for tpg in t.get("tpgs", []) for acl in tpg.get("node_acls", [])]
        return {"configured_with": "rtslib-fb (targetcli's library)", "target": ends.target_iqn, "lun_mb": size,
                "acls": acls, "params": params, "lio_config": config}

    def attach(self, client: VM, sc: Scenario, ends: Ends) -> dict[str, Any]:
        spec = sc.storage.iscsi
        portal = f"{ends.nas_ip}:3260"
        client.exec(["sh", "-c", 'printf "InitiatorName=%s\\n" "$1" > /etc/iscsi/initiatorname.iscsi', "sh", ends.initiator_iqn], 10, check=True)
        # iscsid is on the path that must not fail: it locks itself in memory (mlockall) and we
        # take it out of the OOM killer's reach.
        client.sh("modprobe -a iscsi_tcp sd_mod && mkdir -p /run/lock/iscsi /var/lib/iscsi && iscsid"
                  " && for p in $(pgrep -x iscsid); do echo -1000 > /proc/$p/oom_score_adj; done", 30)
        iscsid = client.sh("for p in $(pgrep -x iscsid); do grep -E 'VmLck|VmRSS' /proc/$p/status | tr -s ' \\t' ' '; "
                           "cat /proc/$p/oom_score_adj; done", 10).stdout.split("\n")
        found = client.exec(["iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", portal], 60, check=True).stdout
        if ends.target_iqn not in found:
            raise GuestError(f"client: discovery at {portal} did not offer {ends.target_iqn}: {found.strip()}")
        node = ["iscsiadm", "-m", "node", "-T", ends.target_iqn, "-p", portal]
        for key, value in (("node.session.timeo.replacement_timeout", spec.replacement_timeout),
                           ("node.conn[0].iscsi.MaxRecvDataSegmentLength", spec.max_recv_data_segment_length)):
            client.exec([*node, "-o", "update", "-n", key, "-v", str(value)], 30, check=True)
        client.exec([*node, "--login"], 60, check=True)
        dev = client.sh(
            "for i in $(seq 100); do for b in /sys/class/iscsi_session/session*/device/target*/*/block/*; do"
            ' [ -e "$b" ] && { echo /dev/${b##*/}; exit 0; }; done; sleep 0.1; done; exit 1', 30, check=False)
        if not dev.ok:
            raise GuestError("client: iSCSI login succeeded but no SCSI disk appeared")
        facts = use_block_device(client, dev.stdout.strip(), sc)
        facts.update(portal=portal, iscsid=[x for x in iscsid if x],
                     session=client.exec(["iscsiadm", "-m", "session"], 10).stdout.strip())
        return facts

    def counters(self, client: VM) -> dict[str, Any]:
        return parse_session_stats(client.exec(["iscsiadm", "-m", "session", "-s"], 10, check=True).stdout)

    def _tpg_enable(self, nas: VM, ends: Ends, value: str) -> str:
        path = f"/sys/kernel/config/target/iscsi/{ends.target_iqn}/tpgt_1/enable"
        nas.exec(["sh", "-c", 'echo "$1" > "$2"', "sh", value, path], 30, check=True)
        return f"echo {value} > {path}"

    def stop_service(self, nas: VM, sc: Scenario, ends: Ends) -> str:
        return self._tpg_enable(nas, ends, "0")

    def start_service(self, nas: VM, sc: Scenario, ends: Ends) -> str:
        return self._tpg_enable(nas, ends, "1")
