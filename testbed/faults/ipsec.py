"""ipsec: ESP in transport mode between client and NAS on the storage path, either with static keys
set by `ip xfrm` on both guests and rekeyed (new SPIs and keys, then the old SAs removed) every
`rekey_s` (mode static), or negotiated by IKEv2 with strongSwan and rekeyed by it (mode ikev2, in
testbed/faults/ike.py). A capture on the switch shows whether storage traffic is really ESP."""

from __future__ import annotations

import re
import secrets
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from testbed.errors import ConfigError, GuestError
from testbed.faults.base import BaseFault, Effect, FaultContext, FaultSpec, Step
from testbed.faults.ike import Ikev2
from testbed.kernels.kconfig import Need
from testbed.nas import Traits, names as backend_names, traits as backend_traits
from testbed.storage.base import Storage
from testbed.vm.machine import VM

AEAD = "rfc4106(gcm(aes))"
_TCPDUMP_IP = re.compile(r"\bIP (\d+\.\d+\.\d+\.\d+)(?:\.(\d+))? > (\d+\.\d+\.\d+\.\d+)(?:\.(\d+))?:")


def count_capture(lines: list[str], client_ip: str, nas_ip: str, ports: tuple[int, ...]) -> dict[str, int]:
    """tcpdump -nn lines from the switch -> ESP packets, and storage packets in clear *between the
    client and the NAS* (the protected pair). Clear packets to the storage port from elsewhere (the
    testbed's own NAS probe from the switch's address) are counted apart: they are not the client's."""
    esp = clear = other = 0
    pair = {client_ip, nas_ip}
    for ln in lines:
        if "ESP(spi" in ln:
            esp += 1
            continue
        m = _TCPDUMP_IP.search(ln)
        if not m:
            continue
        src, sport, dst, dport = m.groups()
        if not {int(p) for p in (sport, dport) if p} & set(ports):
            continue
        if {src, dst} == pair:
            clear += 1
        else:
            other += 1
    return {"capture_packets": len(lines), "capture_esp": esp, "capture_clear_storage": clear,
            "capture_storage_port_other": other}


@dataclass(frozen=True)
class IpsecSpec(FaultSpec):
    kind: Literal["ipsec"]
    at_s: float = 0
    duration_s: float | None = None
    optional: bool = False  # the case may end before its time (else a fault that never started: unknown)
    mode: Literal["static", "ikev2"] = "static"
    rekey_s: float | None = 20  # replace the SAs (new SPIs and keys) this often
    trap: bool = False  # ikev2: policies before the first exchange (no clear packet; traffic waits for IKE)
    establish: Literal["at-inject", "before-pressure"] = "at-inject"  # ikev2: when the first exchange happens

    def validate(self, source: str, path: str) -> None:
        self.check_times(source, path)
        if self.trap and self.mode != "ikev2":
            raise ConfigError(source, f"{path}.trap", "only for mode ikev2 (static keys install their policies at once)")
        if self.establish != "at-inject" and self.mode != "ikev2":
            raise ConfigError(source, f"{path}.establish", "only for mode ikev2")
        if self.establish == "before-pressure" and self.at_s != 0:
            raise ConfigError(source, f"{path}.at_s", "must be 0 with establish: before-pressure (the tunnel is up from the start)")
        least = 10 if self.mode == "ikev2" else 2  # an IKE exchange in a starved TCG guest takes seconds
        if self.rekey_s is not None and self.rekey_s < least:
            raise ConfigError(source, f"{path}.rekey_s", f"must be at least {least} s for mode {self.mode}")

    def kernel_needs(self) -> tuple[Need, ...]:
        return (Need("CONFIG_INET_ESP", "ipsec's ESP transforms"), Need("CONFIG_XFRM_USER", "ipsec's SAs and policies over netlink"),
                Need("CONFIG_CRYPTO_GCM", "ipsec's rfc4106(gcm(aes))"), Need("CONFIG_CRYPTO_SEQIV", "ipsec's GCM IVs"))

    def check_storage(self, storage: Storage, source: str, path: str) -> None:
        if not storage.needs_nas:
            raise ConfigError(source, f"{path}.kind", "ipsec needs network storage")
        if not storage.is_ip:
            raise ConfigError(source, f"{path}.kind", f"ipsec cannot cover {storage.title}: {storage.title} is not IP "
                              "(no ESP for Ethernet frames)")

    def check_nas_backend(self, nas: Traits, source: str, path: str) -> None:
        if not nas.own_kernel:
            raise ConfigError(source, f"{path}.kind", f"ipsec needs the NAS's own kernel (xfrm, ESP): with nas.backend "
                              f"{nas.name} the NAS's kernel is the host's; use {own_kernel_backends()}")

    def path_processes(self) -> tuple[str, ...]:
        return ("charon",) if self.mode == "ikev2" else ()


def own_kernel_backends() -> str:
    return " or ".join(f"nas.backend {n}" for n in backend_names() if backend_traits(n).own_kernel)


def sa_commands(src: str, dst: str, spi_fwd: int, spi_back: int, key_fwd: str, key_back: str) -> list[list[str]]:
    """The two SAs (both directions) every side needs; the keys are 16-byte AES + 4-byte salt."""
    return [
        ["ip", "xfrm", "state", "add", "src", src, "dst", dst, "proto", "esp", "spi", hex(spi_fwd), "reqid", "1",
         "mode", "transport", "aead", AEAD, "0x" + key_fwd, "128"],
        ["ip", "xfrm", "state", "add", "src", dst, "dst", src, "proto", "esp", "spi", hex(spi_back), "reqid", "1",
         "mode", "transport", "aead", AEAD, "0x" + key_back, "128"],
    ]


def policy_commands(me: str, peer: str) -> list[list[str]]:
    return [
        ["ip", "xfrm", "policy", "add", "src", f"{me}/32", "dst", f"{peer}/32", "dir", "out",
         "tmpl", "src", me, "dst", peer, "proto", "esp", "reqid", "1", "mode", "transport"],
        ["ip", "xfrm", "policy", "add", "src", f"{peer}/32", "dst", f"{me}/32", "dir", "in",
         "tmpl", "src", peer, "dst", me, "proto", "esp", "reqid", "1", "mode", "transport"],
    ]


def sa_bytes(vm: VM) -> int | None:
    """Bytes through the SAs, or None when the guest could not say (a stuck guest cannot start `ip`)."""
    try:
        res = vm.exec(["ip", "-s", "xfrm", "state"], 10)
    except GuestError:
        return None
    if not res.ok:
        return None
    return sum(int(x) for x in re.findall(r"(\d+)\(bytes\)", res.stdout))


def xfrm_evidence(vm: VM, role: str, case_dir: Path) -> dict[str, object]:
    """The kernel's IPsec error counters (non-zero ones) and, into xfrm-<role>.txt, its SAs and
    policies with their statistics: where ESP traffic died, if it did."""
    try:
        res = vm.sh("cat /proc/net/xfrm_stat; echo ===; ip -s xfrm state; echo ===; ip -s xfrm policy", 20, check=False)
    except GuestError as e:
        return {"xfrm_stat": f"not readable: {e}"}
    (case_dir / f"xfrm-{role}.txt").write_text(res.stdout + res.stderr)
    stat = res.stdout.split("===")[0]
    nonzero = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", stat, re.M) if int(v)}
    return {"xfrm_stat": nonzero}


def split_stuck(info: dict[str, Any]) -> Step:
    """IKE's facts as a Step: a swanctl step that never returned is the Step's `stuck`."""
    return Step({k: v for k, v in info.items() if k != "stuck"}, stuck=info.get("stuck"))


class Ipsec(BaseFault):
    kind = "ipsec"
    Spec = IpsecSpec

    def __init__(self, spec: Any):
        super().__init__(spec)
        self.generation = 0
        self.spis: list[tuple[int, int]] = []
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.rekeys: list[float] = []
        self.ike = Ikev2(spec, self.note) if spec.mode == "ikev2" else None
        self.captured: dict[str, object] = {}

    def _install(self, ctx: FaultContext) -> tuple[int, int]:
        c, n = ctx.ends.client_ip, ctx.ends.nas_ip
        self.generation += 1
        fwd, back = 0x1000 + 2 * self.generation, 0x1001 + 2 * self.generation
        kf, kb = secrets.token_hex(20), secrets.token_hex(20)
        to_nas, to_client = sa_commands(c, n, fwd, back, kf, kb)
        # The kernel sends on the newest SA the moment it exists: each end first learns to receive
        # on the new SPIs, and only then do both start sending on them (as IKE does), so a rekey
        # loses no packet to an SPI the peer does not know yet.
        ctx.nas_vm().run_all(to_nas, timeout=30)
        ctx.client.run_all(to_client, timeout=30)
        ctx.client.run_all(to_nas, timeout=30)
        ctx.nas_vm().run_all(to_client, timeout=30)
        return fwd, back

    def _remove(self, ctx: FaultContext, spis: tuple[int, int]) -> None:
        c, n = ctx.ends.client_ip, ctx.ends.nas_ip
        for vm in (ctx.client, ctx.nas_vm()):
            assert vm is not None
            vm.exec(["ip", "xfrm", "state", "delete", "src", c, "dst", n, "proto", "esp", "spi", hex(spis[0])], 15)
            vm.exec(["ip", "xfrm", "state", "delete", "src", n, "dst", c, "proto", "esp", "spi", hex(spis[1])], 15)

    def setup(self, ctx: FaultContext) -> Step:
        if self.ike:
            return split_stuck(self.ike.setup(ctx))
        for vm in (ctx.client, ctx.nas_vm()):
            assert vm is not None
            vm.exec(["modprobe", "-a", "esp4", "xfrm_user"], 30, check=True)
        return Step({"mode": "static", "aead": AEAD, "ike": "not used: static keys, no IKE daemon"})

    def inject(self, ctx: FaultContext) -> Step:
        if self.ike:
            info = self.ike.inject(ctx)
            self._start_capture(ctx)
            return split_stuck(info)
        self.spis.append(self._install(ctx))
        c, n = ctx.ends.client_ip, ctx.ends.nas_ip
        # Both ends start sending ESP (out policies) before either refuses clear packets (in
        # policies): an ESP packet is taken by its SA with or without an in policy.
        (out_c, in_c), (out_n, in_n) = policy_commands(c, n), policy_commands(n, c)
        for vm, cmd in ((ctx.client, out_c), (ctx.nas_vm(), out_n), (ctx.client, in_c), (ctx.nas_vm(), in_n)):
            vm.run_all(cmd, timeout=30)
        if self.spec.rekey_s:
            self.thread = threading.Thread(target=self._rekeyer, args=(ctx,), daemon=True)
            self.thread.start()
            ctx.undo.push("ipsec rekeying", self._stop_rekeys)
        self._start_capture(ctx)
        return Step({"spi": [hex(x) for x in self.spis[-1]]})

    def _stop_rekeys(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join(10)

    def _start_capture(self, ctx: FaultContext) -> None:
        # The capture runs beside the case so the injection is recorded at its real time.
        def capture() -> None:
            self.captured = self._capture(ctx)
            self.note(ctx, "capture", **self.captured)
        threading.Thread(target=capture, daemon=True).start()

    def _rekeyer(self, ctx: FaultContext) -> None:
        while not self.stop.wait(self.spec.rekey_s):
            try:
                new = self._install(ctx)
                old = self.spis[-1]
                self.spis.append(new)
                self.stop.wait(2)  # both SAs valid while traffic moves to the new one
                self._remove(ctx, old)
                self.note(ctx, "rekey", old_spi=[hex(x) for x in old], new_spi=[hex(x) for x in new])
            except Exception as e:  # `ip xfrm` could not finish in a guest: what the client went through, not a crash
                self.note(ctx, "rekey-failed", Step(stuck=f"rekeying the static SAs: {e}"), error=str(e))

    def _capture(self, ctx: FaultContext) -> dict[str, object]:
        """Three seconds of the switch: ESP packets versus storage packets in clear."""
        net = ctx.net
        bridge = net.bridges[net.port_of("client").switch]
        argv = ["ip", "netns", "exec", net.netns, "timeout", "5", "tcpdump", "-nn", "-l", "-i", bridge, "-c", "400", "ip"]
        try:
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except OSError as e:
            return {"capture": f"failed: {e}"}
        # terminate, not kill: `timeout` passes SIGTERM on to tcpdump, a SIGKILL would orphan it
        undo = ctx.undo.push(f"tcpdump on {bridge} (pid {p.pid})", p.terminate)
        try:
            text = p.communicate(timeout=15)[0]
        except subprocess.TimeoutExpired as e:
            p.kill()
            p.communicate()
            return {"capture": f"failed: {e}"}
        finally:
            ctx.undo.discard(undo)
        (ctx.case_dir / "capture-ipsec.txt").write_text(text)
        return {**count_capture(text.splitlines(), ctx.ends.client_ip, ctx.ends.nas_ip, ctx.storage.service_ports(ctx.sc)),
                "capture_file": "capture-ipsec.txt"}

    def heal(self, ctx: FaultContext) -> Step:
        self._stop_rekeys()
        out: dict[str, Any] = self.ike.heal(ctx) if self.ike else {"rekeys": len(self.spis) - 1}
        client_bytes = sa_bytes(ctx.client)
        out["sa_bytes_nas"] = sa_bytes(ctx.nas_vm())
        for role, vm in (("client", ctx.client), ("nas", ctx.nas_vm())):
            out.update({f"{k}_{role}": v for k, v in xfrm_evidence(vm, role, ctx.case_dir).items()})
        if self.ike:
            self.ike.stop(ctx)
        for vm in (ctx.client, ctx.nas_vm()):
            try:
                vm.exec(["ip", "xfrm", "policy", "flush"], 15)
                vm.exec(["ip", "xfrm", "state", "flush"], 15)
            except GuestError as e:  # a stuck guest keeps its SAs: said, and the heal goes on
                out[f"flush_failed_{'client' if vm is ctx.client else 'nas'}"] = str(e)
        # Seen: ESP on the switch, or bytes through the SAs in place now (after a rekey the current
        # SA may carry nothing if the client stalled). Unknown is not "no effect".
        esp = int(self.captured.get("capture_esp", 0) or 0)
        counters = {"sa_bytes_client": client_bytes, "capture_esp": esp}
        step = split_stuck(out)
        if esp or client_bytes:
            step.effect = Effect(True, counters)
        elif client_bytes is not None and self.captured:
            step.effect = Effect(False, counters)
        else:  # neither seen nor measurable: recorded, no claim either way
            step.facts.update(counters)
        return step

    def teardown(self, ctx: FaultContext) -> Step:
        return Step({"rekeys": len(self.spis) - 1 if self.spis else 0})
