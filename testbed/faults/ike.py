"""IKEv2 for the ipsec fault: strongSwan's charon in both guests, configured through swanctl with a
pre-shared key and short lifetimes so CHILD_SA (and IKE_SA) rekeys fall inside the pressure phase.
The client's charon runs under the agent with its log on stdout: every IKE event it prints becomes
an event in the history. At the heal the client's charon is examined: how much of it was swapped
out, how long it waited for a CPU, and how late its rekeys came against the planned interval.

With `establish: before-pressure` the tunnel comes up at setup, as on a booted system, and the
test is charon's rekeys under pressure. With `establish: at-inject` (the default) the exchange
happens at the injection, under pressure. Storage traffic flows in clear until the first
CHILD_SA is up (charon installs the policies with it). With `trap: true` the client's policies are
installed first: from then on storage traffic is ESP or held, never clear, so an IKE exchange that
cannot complete under memory pressure (charon's own pages swapped out to the NAS behind that very
policy) blocks the storage path - the seed's "key exchange before the ACK" problem.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable
from typing import Any

from testbed.errors import GuestError, TestbedError
from testbed.faults.base import FaultContext
from testbed.vm.machine import VM

CHARON = "/usr/lib/ipsec/charon"
CONF = "/etc/swanctl/conf.d/tb.conf"
LOGCONF = "/etc/strongswan.d/tb-log.conf"
IKE_PROPOSAL = "aes128-sha256-modp2048"
ESP_PROPOSAL = "aes128gcm16"

EVENT_LINE = re.compile(r"(IKE_SA|CHILD_SA) \S+ (established|rekeyed)|rekeying|retransmit|giving up|deleting|"
                        r"failed|initiating|received DELETE|closing")
# charon 5.9 logs a rekeyed CHILD_SA twice ("inbound ... established", "outbound ... established"):
# one new SA is counted once.
CHILD_UP = re.compile(r"(?<!outbound )CHILD_SA \S+ established")


def swanctl_conf(me: str, peer: str, psk: str, child_rekey_s: float, ike_rekey_s: float, initiator: bool,
                 trap: bool = False) -> str:
    """One connection, transport mode between the two storage addresses, exact (unrandomised) rekeys.
    With `trap`, the initiator's policies are installed at load: nothing leaves in clear before the
    first CHILD_SA, so the exchange itself stands between the client and its storage."""
    return (
        "connections {\n"
        "  tb {\n"
        "    version = 2\n"
        f"    local_addrs = {me}\n"
        f"    remote_addrs = {peer}\n"
        f"    proposals = {IKE_PROPOSAL}\n"
        f"    rekey_time = {int(ike_rekey_s)}s\n"
        "    reauth_time = 0s\n"
        "    over_time = 10s\n"
        "    rand_time = 0s\n"
        f"    local {{\n      auth = psk\n      id = {me}\n    }}\n"
        f"    remote {{\n      auth = psk\n      id = {peer}\n    }}\n"
        "    children {\n"
        "      tb {\n"
        "        mode = transport\n"
        f"        esp_proposals = {ESP_PROPOSAL}\n"
        f"        rekey_time = {int(child_rekey_s)}s\n"
        f"        life_time = {int(child_rekey_s) + 30}s\n"
        "        rand_time = 0s\n"
        f"        local_ts = {me}/32\n"
        f"        remote_ts = {peer}/32\n"
        f"        start_action = {'trap' if initiator and trap else 'none'}\n"
        "      }\n"
        "    }\n"
        "  }\n"
        "}\n"
        "secrets {\n"
        f"  ike-tb {{\n    id-1 = {me}\n    id-2 = {peer}\n    secret = 0x{psk}\n  }}\n"
        "}\n"
    )


# The filelog named "stderr" is charon's stderr (a "stdout" section with path /dev/stdout logged
# nothing here); charon runs with stderr joined to the stdout the agent streams.
LOG_CONF = ("charon {\n  filelog {\n    stderr {\n      time_format = %s\n      default = 1\n"
            "      ike = 1\n      knl = 1\n      flush_line = yes\n    }\n  }\n}\n")


def swanctl_said(text: str) -> str:
    """swanctl's own words, without its plugin-loading noise; the last few lines."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("plugin '")]
    return " | ".join(lines[-6:])[-600:]


def write_file(vm: VM, path: str, text: str) -> None:
    vm.sh('mkdir -p "${2%/*}" && printf %s "$1" > "$2"', 30, args=[text, path])


def charon_state(vm: VM) -> dict[str, Any]:
    """The client's charon as the kernel sees it: swapped-out memory, CPU waits, state."""
    res = vm.sh("p=$(pidof charon) && grep -E '^(State|VmRSS|VmSwap):' /proc/$p/status && cat /proc/$p/schedstat", 20, check=False)
    if not res.ok:
        return {"charon": f"not readable: {(res.stderr or res.stdout).strip()[:200]}"}
    out: dict[str, Any] = {}
    for line in res.stdout.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[f"charon_{k.strip().lower()}"] = v.strip()
        elif len(line.split()) == 3:
            run_ns, wait_ns, slices = (int(x) for x in line.split())
            out.update(charon_cpu_s=round(run_ns / 1e9, 3), charon_runqueue_wait_s=round(wait_ns / 1e9, 3))
    return out


def rekey_lateness(established: list[float], planned_s: float, until: float | None = None) -> dict[str, Any]:
    """Intervals between CHILD_SA establishments against the planned rekey time; with `until`, the
    time since the last one counts too (a rekey that never came is the latest of all)."""
    gaps = [round(b - a, 1) for a, b in zip(established, established[1:])]
    late = [g - planned_s for g in gaps]
    if until is not None and established and planned_s:
        late.append(until - established[-1] - planned_s)
    worst = max(late) if late else None
    return {"child_sa_intervals_s": gaps, "worst_late_s": round(max(worst, 0.0), 1) if worst is not None else None}


class Ikev2:
    def __init__(self, spec: Any, note: Callable[..., None]):
        self.spec = spec
        self.note = note  # the ipsec fault's own: IKE's events are that fault's
        self.jobs: list[Any] = []
        self.established: list[float] = []
        self.lock = threading.Lock()
        self.ike_rekey_s = max(2 * (spec.rekey_s or 20), 30)
        self.setup_exchange: dict[str, object] = {}

    def _on_line(self, ctx: FaultContext, role: str, line: str) -> None:
        line = line.strip()
        if line:  # charon's whole log is evidence; the IKE milestones are also events
            with open(ctx.case_dir / f"charon-{role}.log", "a") as f:
                f.write(line + "\n")
        if not line or not EVENT_LINE.search(line):
            return
        if role == "client" and CHILD_UP.search(line):
            with self.lock:
                self.established.append(ctx.history.now())
                n = len(self.established)
            name = "child-sa" if n == 1 else "rekey"
            self.note(ctx, name, via="ikev2", vm=role, line=line[:300])
            return
        self.note(ctx, "ike", vm=role, line=line[:300])

    def setup(self, ctx: FaultContext) -> dict[str, object]:
        """charon started in both guests; nothing loaded yet (the storage path is untouched)."""
        for role, vm in (("client", ctx.client), ("nas", ctx.nas_vm())):
            assert vm is not None
            write_file(vm, LOGCONF, LOG_CONF)
            vm.exec(["modprobe", "-a", "esp4", "xfrm_user"], 30, check=True)
            job = vm.agent.start(["/bin/sh", "-c", 'exec "$@" 2>&1', "charon", CHARON],
                                 on_line=lambda line, r=role: self._on_line(ctx, r, line))
            self.jobs.append(job)
            if len(self.jobs) == 1:
                ctx.undo.push("charon in the guests", self.stop, ctx)
        for vm in (ctx.client, ctx.nas_vm()):
            assert vm is not None
            res = vm.sh("for i in $(seq 50); do [ -S /var/run/charon.vici ] && exit 0; sleep 0.2; done; exit 1", 30, check=False)
            if not res.ok:
                raise TestbedError(f"{vm.name}: charon did not open its vici socket in 10 s")
        info: dict[str, object] = {"ike": f"IKEv2, strongSwan charon, PSK, IKE {IKE_PROPOSAL}, ESP {ESP_PROPOSAL}",
                                   "child_rekey_s": self.spec.rekey_s, "ike_rekey_s": self.ike_rekey_s,
                                   "establish": self.spec.establish}
        if self.spec.establish == "before-pressure":
            self.setup_exchange = self._exchange(ctx)
            if not self.setup_exchange.get("initiate_ok"):  # before the pressure, failing is the testbed's
                raise TestbedError(f"ikev2: the tunnel did not come up before the pressure: {self.setup_exchange}")
            info.update(self.setup_exchange)
        return info

    def inject(self, ctx: FaultContext) -> dict[str, object]:
        """establish at-inject: the key exchange, now. before-pressure: it was made at setup (the
        tunnel is up when the pressure starts, as on a booted system); charon's rekeys come due
        inside the pressure phase."""
        if self.spec.establish == "before-pressure":
            return {"mode": "ikev2", "established": "before the pressure (at setup)", **self.setup_exchange}
        return self._exchange(ctx)

    def _exchange(self, ctx: FaultContext) -> dict[str, object]:
        """The NAS (responder) loads the connection, then the client loads it and initiates. A client
        that cannot finish (charon waiting on a swap-in) is an outcome, recorded, not a testbed
        failure: the case goes on and is judged by its progress."""
        c, n = ctx.ends.client_ip, ctx.ends.nas_ip
        psk = secrets.token_hex(32)
        rekey = self.spec.rekey_s or 3600
        trap = self.spec.trap
        write_file(ctx.nas_vm(), CONF, swanctl_conf(n, c, psk, rekey, self.ike_rekey_s, initiator=False, trap=False))
        ctx.nas_vm().exec(["swanctl", "--load-all", "--noprompt"], 30, check=True)
        write_file(ctx.client, CONF, swanctl_conf(c, n, psk, rekey, self.ike_rekey_s, initiator=True, trap=trap))
        out: dict[str, object] = {"mode": "ikev2", "trap": trap}
        t0 = ctx.history.now()
        for step, argv in (("load", ["swanctl", "--load-all", "--noprompt"]),
                           ("initiate", ["swanctl", "--initiate", "--child", "tb", "--timeout", "30"])):
            try:
                res = ctx.client.exec(argv, 45)
            except GuestError as e:  # no answer: swanctl (or charon behind it) is stuck in the client
                out[f"{step}_ok"] = False
                out["stuck"] = f"{' '.join(argv)}: {e}"
                break
            out[f"{step}_ok"] = res.ok
            if not res.ok:
                said = swanctl_said(res.stdout + "\n" + res.stderr)
                out[f"{step}_error"] = said
                if "timeout" in said.lower():  # charon could not finish the exchange in 30 s: an outcome
                    out["stuck"] = f"{' '.join(argv)}: {said[-200:]}"
                elif trap or step == "load":
                    # A refused exchange with trap policies in place would hold the storage path
                    # because of the testbed's own configuration: that is not the client's verdict.
                    raise TestbedError(f"ikev2 {step} failed on the client: {said}")
                break
        out["ike_s"] = round(ctx.history.now() - t0, 2)
        return out

    def heal(self, ctx: FaultContext) -> dict[str, object]:
        try:
            out: dict[str, object] = charon_state(ctx.client)
        except GuestError as e:  # a stuck client cannot start `sh`: recorded, the heal goes on
            out = {"charon": f"not readable: {e}", "stuck": f"reading charon's state: {e}"}
        with self.lock:
            out.update(rekey_lateness(self.established, self.spec.rekey_s or 0, until=ctx.history.now()))
            out["rekeys"] = max(0, len(self.established) - 1)
        return out

    def stop(self, ctx: FaultContext) -> None:
        """charon goes (it removes its SAs and policies on the way out)."""
        for job in self.jobs:
            try:
                job.kill(15)
                job.wait(10)
            except GuestError:  # no answer, or the channel is gone with the guest
                try:
                    job.kill(9)
                except (GuestError, OSError):
                    pass
            except OSError:
                pass
        self.jobs.clear()
