"""iSCSI: an LIO target on the NAS VM configured through rtslib-fb (targetcli's library: targetcli
itself wants a system D-Bus, which our init does not run), or tgt's tgtd on a netns NAS (its control
socket numbered per run), with an ACL for the client's initiator; open-iscsi on the client with
iscsid protected from the OOM killer, then swap or ext4 on the LUN."""

from __future__ import annotations

import fcntl
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from testbed.check.frames import FrameClass
from testbed.errors import ConfigError, GuestError
from testbed.forensics.btf import BtfError
from testbed.kernels.kconfig import Need
from testbed.nas.base import Nas
from testbed.storage.base import Ends, ServiceState, Storage, is_processes, parse_processes, use_block_device
from testbed.vm.machine import VM

if TYPE_CHECKING:  # type only: see testbed/storage/base.py
    from testbed.config.scenario import Scenario

LUN_FILE = "iscsi-lun0.img"  # under the NAS's srv
KERNEL_TARGET, USERSPACE_TARGET = "lio", "tgt"  # what a NAS with a kernel of its own runs, and one without
# iscsid locks ~10 MB of memory: below this the client OOM-kills it before swap exists (a case runs,
# and that kill is its answer: a warning says what to expect).
MIN_ISCSI_CLIENT_MB = 128
# iscsid is on the path that must not fail: it locks itself in memory (mlockall) and we take it out
# of the OOM killer's reach.
START_ISCSID = ("modprobe -a iscsi_tcp sd_mod && mkdir -p /run/lock/iscsi /var/lib/iscsi && iscsid"
                " && for p in $(pgrep -x iscsid); do echo -1000 > /proc/$p/oom_score_adj; done")
ISCSID_STATUS = ("for p in $(pgrep -x iscsid); do grep -E 'VmLck|VmRSS' /proc/$p/status | tr -s ' \\t' ' '; "
                 "cat /proc/$p/oom_score_adj; done")
WAIT_DISK = ("for i in $(seq 100); do for b in /sys/class/iscsi_session/session*/device/target*/*/block/*; do"
             ' [ -e "$b" ] && { echo /dev/${b##*/}; exit 0; }; done; sleep 0.1; done; exit 1')


# include/scsi/libiscsi.h (6.x): the connection's flag bits, and the session's and a task's states (the
# enumerators are read from the module's BTF where it has them; these names stand in where not)
ISCSI_CONN_FLAGS = ((0, "SUSPEND_TX"), (1, "SUSPEND_RX"), (2, "BOUND"))
ISCSI_SESSION_STATES = ("ISCSI_STATE_FREE", "ISCSI_STATE_LOGGED_IN", "ISCSI_STATE_FAILED", "ISCSI_STATE_TERMINATE",
                        "ISCSI_STATE_IN_RECOVERY", "ISCSI_STATE_RECOVERY_FAILED", "ISCSI_STATE_LOGGING_OUT")
ISCSI_TASK_STATES = ("ISCSI_TASK_FREE", "ISCSI_TASK_COMPLETED", "ISCSI_TASK_PENDING", "ISCSI_TASK_RUNNING",
                     "ISCSI_TASK_ABRT_TMF", "ISCSI_TASK_ABRT_SESS_RECOV", "ISCSI_TASK_REQUEUE_SCSIQ")


def _enum_name(btf: Any, names: tuple[str, ...], value: int) -> str:
    """The enumerator of `names` whose value (from the BTF, else its place in the list) is `value`."""
    for i, name in enumerate(names):
        try:
            v = btf.enum(name)
        except BtfError:  # an enum the module's BTF lacks: its place in the header
            v = i + (1 if name.startswith("ISCSI_STATE_") else 0)
        if v == value:
            return name.removeprefix("ISCSI_STATE_").removeprefix("ISCSI_TASK_")
    return str(value)


@dataclass(frozen=True)
class IscsiSpec:
    lun_mb: int | None = None  # default: swap_mb for swap, the workload's file plus room for ext4
    max_recv_data_segment_length: int = 262144  # node.conn[0].iscsi.MaxRecvDataSegmentLength, bytes
    replacement_timeout: int = 120  # node.session.timeo.replacement_timeout, seconds
    target: Literal["lio", "tgt"] | None = None  # default: what the NAS backend runs (LIO in a NAS VM, else tgt)

    def validate(self, source: str, path: str) -> None:
        if not 512 <= self.max_recv_data_segment_length <= 16777215:
            raise ConfigError(source, f"{path}.max_recv_data_segment_length", "must be between 512 and 16777215")
        if self.replacement_timeout < 0:
            raise ConfigError(source, f"{path}.replacement_timeout", "must be >= 0")


def parse_session_stats(text: str) -> dict[str, Any]:
    """`iscsiadm -m session -s`: the error counters and octets."""
    wanted = ("digest_err", "timeout_err", "txdata_octets", "rxdata_octets", "scsicmd_pdus", "dataout_pdus")
    out: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key in wanted and value.strip().isdigit():
            out[f"iscsi_{key}"] = int(value)
    return out


def tpg_enable_path(ends: Ends) -> str:
    """LIO's switch for the target's portal group: stop_service writes 0 there, start_service 1."""
    return f"/sys/kernel/config/target/iscsi/{ends.target_iqn}/tpgt_1/enable"


def parse_tpg_enable(text: str) -> ServiceState:
    """The TPG's `enable` file: '1' serves, '0' refuses logins; no file (cat printed nothing): no target."""
    value = text.strip()
    if value == "1":
        return ServiceState(True, "LIO TPG 1 enabled")
    if value == "0":
        return ServiceState(False, "LIO TPG 1 disabled")
    if not value:
        return ServiceState(False, "no LIO TPG 1 (target not configured)")
    return ServiceState(None, f"unexpected TPG enable value {value[:40]!r}")


def tgt_control_port(tag: str) -> int:
    """tgtd's control socket is /var/run/tgtd/socket.N on the host: N from the run's tag, so runs at
    once rarely share one (free_tgt_port steps past one in use)."""
    return 1000 + int(tag[2:], 16) % 30000  # tgtd takes -C 0..32767


TGT_PORT = "iscsi.tgt_port"  # in Nas.scratch: tgtd's control port for the case


def tgt_socket(port: int) -> Path:
    return Path(f"/var/run/tgtd/socket.{port}")


def _unlink_socket(sock: Path) -> None:
    for p in (sock, sock.with_name(sock.name + ".lock")):
        p.unlink(missing_ok=True)


def free_tgt_port(tag: str) -> int:
    """The run's control port, or the next one whose socket no tgtd holds (its .lock is locked by a live tgtd)."""
    port = tgt_control_port(tag)
    for _ in range(100):
        lock = tgt_socket(port).with_name(f"socket.{port}.lock")
        try:
            with open(lock, "rb") as f:
                fcntl.lockf(f, fcntl.LOCK_SH | fcntl.LOCK_NB)  # tgtd holds an exclusive lock while it runs
        except FileNotFoundError:
            return port
        except OSError:
            port = 1000 + (port - 1000 + 1) % 30000
            continue
        return port
    raise GuestError("no free tgtd control socket number (100 in use)")


class Iscsi(Storage):
    name = "iscsi"
    title = "iSCSI"
    spec = IscsiSpec
    ports = (3260,)
    client_processes = ("iscsid",)
    frame_classes = (FrameClass("iscsi", (r"_*iscsi\w*",), "inside the iSCSI initiator"),)
    stall_helpers = ("iscsid",)
    host_tools = (("tgtd", "tgt", "nas.backend netns/docker with iSCSI"),)

    def validate(self, sc: Scenario, source: str) -> None:
        st, wl = sc.storage, sc.workload
        lun = st.iscsi.lun_mb
        if lun is not None and wl.uses_swap and lun < st.swap_mb:
            raise ConfigError(source, "storage.iscsi.lun_mb", f"the LUN ({lun} MB) is smaller than the requested swap ({st.swap_mb} MB)")
        size = wl.total_mb(sc.client.mem_mb)
        if lun is not None and not wl.uses_swap and lun < size * 9 // 8 + 32:
            raise ConfigError(source, "storage.iscsi.lun_mb", f"the LUN ({lun} MB) cannot hold the workload's {size} MB file and ext4")

    def warnings(self, sc: Scenario) -> tuple[str, ...]:
        if sc.client.mem_mb < MIN_ISCSI_CLIENT_MB:
            return (f"client.mem_mb {sc.client.mem_mb}: below {MIN_ISCSI_CLIENT_MB} MB iscsid (which locks ~10 MB) "
                    "is expected to be OOM-killed (verdict oom, iscsid the victim)",)
        return ()

    def backing_mb(self, sc: Scenario) -> int:
        return sc.storage.iscsi.lun_mb if sc.storage.iscsi.lun_mb is not None else super().backing_mb(sc)

    def target(self, sc: Scenario) -> str:
        return sc.storage.iscsi.target or self.default_server(sc, KERNEL_TARGET, USERSPACE_TARGET)

    def check_backend(self, sc: Scenario, source: str) -> None:
        self.check_server(sc, source, "storage.iscsi.target", self.target(sc), KERNEL_TARGET, USERSPACE_TARGET)

    def client_kernel_needs(self, sc: Scenario) -> tuple[Need, ...]:
        return (Need("CONFIG_ISCSI_TCP", "the iSCSI initiator (open-iscsi's kernel half)"),
                Need("CONFIG_SCSI_ISCSI_ATTRS", "the iSCSI transport class"),
                Need("CONFIG_BLK_DEV_SD", "the LUN appears as a SCSI disk"))

    def nas_kernel_needs(self, sc: Scenario) -> tuple[Need, ...]:
        return (Need("CONFIG_TARGET_CORE", "the NAS VM's LIO target"),
                Need("CONFIG_ISCSI_TARGET", "LIO's iSCSI fabric"),
                Need("CONFIG_TCM_FILEIO", "LIO's file backstore"))

    def export(self, nas: Nas, sc: Scenario, ends: Ends) -> dict[str, Any]:
        size = sc.backing_mb()
        backing = f"{nas.srv}/{LUN_FILE}"
        params = [f"MaxRecvDataSegmentLength={sc.storage.iscsi.max_recv_data_segment_length}"]
        if self.target(sc) == "tgt":
            nas.exec(["fallocate", "-l", f"{size}M", backing], 60, check=True)
            started = self._start_tgt(nas, sc, ends)
            return {"target_server": "tgt", "target": ends.target_iqn, "lun_mb": size, "params": params,
                    "control": str(tgt_socket(nas.scratch[TGT_PORT])), "tgt": started}
        nas.exec(["modprobe", "-a", "target_core_mod", "target_core_file", "iscsi_target_mod"], 60, check=True)
        nas.sh("mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config", 30)
        nas.exec(["fallocate", "-l", f"{size}M", backing], 60, check=True)
        argv = ["/usr/local/sbin/tb-lio", "--name", "lun0", "--file", backing, "--size-mb", str(size),
                "--iqn", ends.target_iqn, "--portal", ends.nas_ip, "--initiator", ends.initiator_iqn]
        for p in params:
            argv += ["--param", p]
        res = nas.exec(argv, 120, check=True)
        config = json.loads(res.stdout)
        acls = [acl["node_wwn"] for t in config.get("targets", []) for tpg in t.get("tpgs", []) for acl in tpg.get("node_acls", [])]
        return {"target_server": "lio", "configured_with": "rtslib-fb (targetcli's library)", "target": ends.target_iqn,
                "lun_mb": size, "acls": acls, "params": params, "lio_config": config}

    def _start_tgt(self, nas: Nas, sc: Scenario, ends: Ends) -> str:
        """tgtd in the NAS's namespace, listening on the NAS's address only; the target, its LUN and
        the ACL for the client's initiator set through its control socket."""
        if TGT_PORT not in nas.scratch:  # chosen once per case: a restart reuses it
            nas.scratch[TGT_PORT] = free_tgt_port(ends.tag)
            made = nas.host_path(str(tgt_socket(nas.scratch[TGT_PORT])))
            nas.on_undo(f"tgtd control socket {made}", _unlink_socket, made)
        port = str(nas.scratch[TGT_PORT])
        sock = nas.host_path(str(tgt_socket(nas.scratch[TGT_PORT])))  # in a container: seen through its root
        _unlink_socket(sock)  # ours, from before a restart (no live tgtd)
        nas.serve("tgtd", ["tgtd", "-f", "-C", port, "--iscsi", f"portal={ends.nas_ip}:3260"], ready=sock.exists,
                  timeout=20)
        adm = ["tgtadm", "-C", port, "--lld", "iscsi"]
        mrdsl = str(sc.storage.iscsi.max_recv_data_segment_length)
        nas.run_all([*adm, "--op", "new", "--mode", "target", "--tid", "1", "-T", ends.target_iqn],
                    [*adm, "--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", f"{nas.srv}/{LUN_FILE}"],
                    [*adm, "--op", "bind", "--mode", "target", "--tid", "1", "-Q", ends.initiator_iqn],
                    [*adm, "--op", "update", "--mode", "target", "--tid", "1", "-n", "MaxRecvDataSegmentLength", "-v", mrdsl],
                    timeout=30)
        return f"tgtd -C {port}, target {ends.target_iqn} LUN 1, ACL {ends.initiator_iqn}"

    def read_state(self, dump: Any, sockets: list[dict[str, Any]]) -> dict[str, Any]:
        """Each iSCSI connection behind a socket to port 3260 (iscsi_tcp's sk_user_data is libiscsi's struct
        iscsi_conn): its TX/RX suspension, queued commands, and its session's state, command sequence window
        and tasks by state (the outstanding commands)."""
        lib = dump.module_btf("libiscsi")
        user_data = dump.off("sock", "sk_user_data")
        out = []
        for s in sockets:
            if not s["remote"].endswith(":3260") or "sk" not in s:
                continue
            conn = dump.u64(s["sk"] + user_data)
            if not conn:
                continue
            flags = dump.u64(conn + lib.offsetof("iscsi_conn", "flags"))
            session = dump.u64(conn + lib.offsetof("iscsi_conn", "session"))
            c: dict[str, Any] = {"socket": f"{s['local']}>{s['remote']}",
                                 "conn_flags": [n for b, n in ISCSI_CONN_FLAGS if flags >> b & 1],
                                 **{q: dump.list_len(conn + lib.offsetof("iscsi_conn", q))
                                    for q in ("cmdqueue", "mgmtqueue", "requeue")}}
            if session:
                f = {k: dump.u32(session + lib.offsetof("iscsi_session", k))
                     for k in ("state", "cmdsn", "exp_cmdsn", "max_cmdsn", "queued_cmdsn", "cmds_max")}
                c["session_state"] = _enum_name(lib, ISCSI_SESSION_STATES, f.pop("state"))
                c.update(f)
                cmds = dump.u64(session + lib.offsetof("iscsi_session", "cmds"))
                state_off = lib.offsetof("iscsi_task", "state")
                counts: dict[str, int] = {}
                for i in range(min(f["cmds_max"], 4096) if cmds else 0):
                    task = dump.u64(cmds + 8 * i)
                    if task:
                        name = _enum_name(lib, ISCSI_TASK_STATES, dump.u32(task + state_off))
                        counts[name] = counts.get(name, 0) + 1
                c["tasks"] = counts
            out.append(c)
        return {"iscsi_connections": out}

    def attach(self, client: VM, sc: Scenario, ends: Ends) -> dict[str, Any]:
        spec = sc.storage.iscsi
        portal = f"{ends.nas_ip}:3260"
        client.sh('printf "InitiatorName=%s\\n" "$1" > /etc/iscsi/initiatorname.iscsi', 10, args=[ends.initiator_iqn])
        client.sh(START_ISCSID, 30)
        iscsid = client.sh(ISCSID_STATUS, 10).stdout.split("\n")
        found = client.exec(["iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", portal], 60, check=True).stdout
        if ends.target_iqn not in found:
            raise GuestError(f"client: discovery at {portal} did not offer {ends.target_iqn}: {found.strip()}")
        node = ["iscsiadm", "-m", "node", "-T", ends.target_iqn, "-p", portal]
        for key, value in (("node.session.timeo.replacement_timeout", spec.replacement_timeout),
                           ("node.conn[0].iscsi.MaxRecvDataSegmentLength", spec.max_recv_data_segment_length)):
            client.exec([*node, "-o", "update", "-n", key, "-v", str(value)], 30, check=True)
        client.exec([*node, "--login"], 60, check=True)
        dev = client.sh(WAIT_DISK, 30, check=False)
        if not dev.ok:
            raise GuestError("client: iSCSI login succeeded but no SCSI disk appeared")
        facts = use_block_device(client, dev.stdout.strip(), sc)
        facts.update(portal=portal, iscsid=[x for x in iscsid if x],
                     session=client.exec(["iscsiadm", "-m", "session"], 10).stdout.strip())
        return facts

    def counters(self, client: VM) -> dict[str, Any]:
        return parse_session_stats(client.exec(["iscsiadm", "-m", "session", "-s"], 10, check=True).stdout)

    def _tpg_enable(self, nas: Nas, ends: Ends, value: str) -> str:
        path = tpg_enable_path(ends)
        nas.sh('echo "$1" > "$2"', 30, args=[value, path])
        return f"echo {value} > {path}"

    def stop_service(self, nas: Nas, sc: Scenario, ends: Ends) -> str:
        if self.target(sc) == "tgt":  # tgtd's target states do not refuse logins: the daemon goes, as a restart
            return nas.stop_server("tgtd")
        return self._tpg_enable(nas, ends, "0")

    def start_service(self, nas: Nas, sc: Scenario, ends: Ends) -> str:
        if self.target(sc) == "tgt":
            return self._start_tgt(nas, sc, ends)
        return self._tpg_enable(nas, ends, "1")

    def service_argv(self, nas: Nas, sc: Scenario, ends: Ends) -> list[str] | None:
        if self.target(sc) == "tgt":
            return nas.processes_argv("tgtd")
        return ["cat", tpg_enable_path(ends)]

    def parse_service(self, text: str) -> ServiceState:
        return parse_processes(text) if is_processes(text) else parse_tpg_enable(text)
