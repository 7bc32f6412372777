"""ipsec: ESP in transport mode between client and NAS on the storage path, either with static keys
set by `ip xfrm` on both guests and rekeyed (new SPIs and keys, then the old SAs removed) every
`rekey_s` (mode static), or negotiated by IKEv2 with strongSwan and rekeyed by it (mode ikev2, in
testbed/faults/ike.py). A capture on the switch shows whether storage traffic is really ESP."""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess
import threading
from pathlib import Path
from typing import Any

from testbed.errors import GuestError
from testbed.faults import BaseFault, FaultContext
from testbed.faults.ike import Ikev2
from testbed.vm.machine import VM

AEAD = "rfc4106(gcm(aes))"
STORAGE_PORTS = (2049, 3260, 111)


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


def run_all(vm: VM, commands: list[list[str]]) -> None:
    """Several guest commands in one process start: in a starved guest each start can take seconds."""
    vm.sh(" && ".join(shlex.join(c) for c in commands), 30)


def sa_bytes(vm: VM) -> int | None:
    """Bytes through the SAs, or None when the guest could not say (a stuck guest cannot start `ip`)."""
    try:
        res = vm.exec(["ip", "-s", "xfrm", "state"], 10)
    except GuestError:
        return None
    if not res.ok:
        return None
    return sum(int(x) for x in re.findall(r"(\d+)\(bytes\)", res.stdout))


def xfrm_evidence(vm: VM, role: str, case_dir: Any) -> dict[str, object]:
    """The kernel's IPsec error counters (non-zero ones) and, into xfrm-<role>.txt, its SAs and
    policies with their statistics: where ESP traffic died, if it did."""
    try:
        res = vm.sh("cat /proc/net/xfrm_stat; echo ===; ip -s xfrm state; echo ===; ip -s xfrm policy", 20, check=False)
    except GuestError as e:
        return {"xfrm_stat": f"not readable: {e}"}
    if case_dir:
        Path(case_dir, f"xfrm-{role}.txt").write_text(res.stdout + res.stderr)
    stat = res.stdout.split("===")[0]
    nonzero = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", stat, re.M) if int(v)}
    return {"xfrm_stat": nonzero}


class Ipsec(BaseFault):
    def __init__(self, spec: Any):
        super().__init__(spec)
        self.generation = 0
        self.spis: list[tuple[int, int]] = []
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.rekeys: list[float] = []
        self.ike = Ikev2(spec) if spec.mode == "ikev2" else None
        self.captured: dict[str, object] = {}

    def _install(self, ctx: FaultContext) -> tuple[int, int]:
        c, n = ctx.ends.client_ip, ctx.ends.nas_ip
        self.generation += 1
        fwd, back = 0x1000 + 2 * self.generation, 0x1001 + 2 * self.generation
        kf, kb = secrets.token_hex(20), secrets.token_hex(20)
        to_nas, to_client = sa_commands(c, n, fwd, back, kf, kb)
        assert ctx.nas is not None
        # The kernel sends on the newest SA the moment it exists: each end first learns to receive
        # on the new SPIs, and only then do both start sending on them (as IKE does), so a rekey
        # loses no packet to an SPI the peer does not know yet.
        run_all(ctx.nas, [to_nas])
        run_all(ctx.client, [to_client])
        run_all(ctx.client, [to_nas])
        run_all(ctx.nas, [to_client])
        return fwd, back

    def _remove(self, ctx: FaultContext, spis: tuple[int, int]) -> None:
        c, n = ctx.ends.client_ip, ctx.ends.nas_ip
        for vm in (ctx.client, ctx.nas):
            assert vm is not None
            vm.exec(["ip", "xfrm", "state", "delete", "src", c, "dst", n, "proto", "esp", "spi", hex(spis[0])], 15)
            vm.exec(["ip", "xfrm", "state", "delete", "src", n, "dst", c, "proto", "esp", "spi", hex(spis[1])], 15)

    def setup(self, ctx: FaultContext) -> dict[str, object]:
        if self.ike:
            return self.ike.setup(ctx)
        for vm in (ctx.client, ctx.nas):
            assert vm is not None
            vm.exec(["modprobe", "-a", "esp4", "xfrm_user"], 30, check=True)
        return {"mode": "static", "aead": AEAD, "ike": "not used: static keys, no IKE daemon"}

    def inject(self, ctx: FaultContext) -> dict[str, object]:
        if self.ike:
            info = self.ike.inject(ctx)
            self._start_capture(ctx)
            return info
        self.spis.append(self._install(ctx))
        c, n = ctx.ends.client_ip, ctx.ends.nas_ip
        # Both ends start sending ESP (out policies) before either refuses clear packets (in
        # policies): an ESP packet is taken by its SA with or without an in policy.
        assert ctx.nas is not None
        (out_c, in_c), (out_n, in_n) = policy_commands(c, n), policy_commands(n, c)
        for vm, cmd in ((ctx.client, out_c), (ctx.nas, out_n), (ctx.client, in_c), (ctx.nas, in_n)):
            run_all(vm, [cmd])
        if self.spec.rekey_s:
            self.thread = threading.Thread(target=self._rekeyer, args=(ctx,), daemon=True)
            self.thread.start()
        self._start_capture(ctx)
        return {"spi": [hex(x) for x in self.spis[-1]]}

    def _start_capture(self, ctx: FaultContext) -> None:
        # The capture runs beside the case so the injection is recorded at its real time.
        def capture() -> None:
            self.captured = self._capture(ctx)
            ctx.history.add("fault", "ipsec:capture", **self.captured)
        threading.Thread(target=capture, daemon=True).start()

    def _rekeyer(self, ctx: FaultContext) -> None:
        while not self.stop.wait(self.spec.rekey_s):
            try:
                new = self._install(ctx)
                old = self.spis[-1]
                self.spis.append(new)
                self.stop.wait(2)  # both SAs valid while traffic moves to the new one
                self._remove(ctx, old)
                ctx.history.add("fault", "ipsec:rekey", old_spi=[hex(x) for x in old], new_spi=[hex(x) for x in new])
            except Exception as e:  # recorded: a failed rekey is a finding, not a crash of the case
                ctx.history.add("fault", "ipsec:rekey-failed", error=str(e))

    def _capture(self, ctx: FaultContext) -> dict[str, object]:
        """Three seconds of the switch: ESP packets versus storage packets in clear."""
        net = ctx.net
        bridge = net.bridges[net.port_of("client").switch]
        argv = ["ip", "netns", "exec", net.netns, "timeout", "5", "tcpdump", "-nn", "-l", "-i", bridge, "-c", "400", "ip"]
        try:
            text = subprocess.run(argv, capture_output=True, text=True, timeout=15).stdout
        except (OSError, subprocess.TimeoutExpired) as e:
            return {"capture": f"failed: {e}"}
        lines = text.splitlines()
        esp = sum("ESP(spi" in ln for ln in lines)
        clear = sum(any(f".{p}:" in ln or f".{p} " in ln for p in STORAGE_PORTS) for ln in lines)
        if ctx.case_dir:
            Path(ctx.case_dir, "capture-ipsec.txt").write_text(text)
        return {"capture_packets": len(lines), "capture_esp": esp, "capture_clear_storage": clear,
                "capture_file": "capture-ipsec.txt"}

    def heal(self, ctx: FaultContext) -> dict[str, object]:
        self.stop.set()
        if self.thread:
            self.thread.join(10)
        assert ctx.nas is not None
        out: dict[str, object] = self.ike.heal(ctx) if self.ike else {"rekeys": len(self.spis) - 1}
        out["sa_bytes_client"] = sa_bytes(ctx.client)
        out["sa_bytes_nas"] = sa_bytes(ctx.nas)
        for role, vm in (("client", ctx.client), ("nas", ctx.nas)):
            out.update({f"{k}_{role}": v for k, v in xfrm_evidence(vm, role, ctx.case_dir).items()})
        if self.ike:
            self.ike.stop(ctx)
        for vm in (ctx.client, ctx.nas):
            try:
                vm.exec(["ip", "xfrm", "policy", "flush"], 15)
                vm.exec(["ip", "xfrm", "state", "flush"], 15)
            except GuestError as e:  # a stuck guest keeps its SAs: said, and the heal goes on
                out[f"flush_failed_{'client' if vm is ctx.client else 'nas'}"] = str(e)
        # Seen: ESP on the switch, or bytes through the SAs in place now (after a rekey the current
        # SA may carry nothing if the client stalled). Unknown is not "no effect".
        esp = int(self.captured.get("capture_esp", 0) or 0)
        out["capture_esp"] = esp
        if esp or out["sa_bytes_client"]:
            out["visible"] = True
        elif out["sa_bytes_client"] is not None and self.captured:
            out["visible"] = False
        return out

    def teardown(self, ctx: FaultContext) -> dict[str, object]:
        self.stop.set()
        if self.ike:
            self.ike.stop(ctx)
        return {"rekeys": len(self.spis) - 1 if self.spis else 0}
