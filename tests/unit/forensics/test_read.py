"""Reading a dump's state: the BTF layouts it relies on (a BTF blob built here, as the kernel lays one
out), task states and flags, and what a recorded forensics.json (an idle 6.1 guest, dumped by QEMU 7.2 and
read with drgn 0.3.0) says."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from testbed.forensics import btf, summary, symbols
from testbed.forensics.read import flag_names, gfp_names, state_letter
from testbed.forensics.symbols import wanted

IDLE = json.loads((Path(__file__).parents[2] / "fixtures/forensics/idle-6.1.json").read_text())


def blob() -> bytes:
    """struct outer { int a; union { long b; struct inner c; }; }; struct inner { int x; int y[4]; }"""
    strs = b"\0int\0long\0outer\0a\0b\0c\0inner\0x\0y\0"
    name = lambda s: strs.index(s.encode() + b"\0")  # noqa: E731
    types = b""
    types += struct.pack("<III", name("int"), btf.INT << 24, 4) + struct.pack("<I", 32)  # 1
    types += struct.pack("<III", name("long"), btf.INT << 24, 8) + struct.pack("<I", 64)  # 2
    types += struct.pack("<III", name("inner"), btf.STRUCT << 24 | 2, 20)  # 3
    types += struct.pack("<III", name("x"), 1, 0) + struct.pack("<III", name("y"), 6, 32)
    types += struct.pack("<III", 0, btf.UNION << 24 | 2, 20)  # 4: anonymous union
    types += struct.pack("<III", name("b"), 2, 0) + struct.pack("<III", name("c"), 3, 0)
    types += struct.pack("<III", name("outer"), btf.STRUCT << 24 | 2, 24)  # 5
    types += struct.pack("<III", name("a"), 1, 0) + struct.pack("<III", 0, 4, 32)
    types += struct.pack("<III", 0, btf.ARRAY << 24, 0) + struct.pack("<III", 1, 1, 4)  # 6: int[4]
    header = struct.pack("<HBBIIIII", btf.MAGIC, 1, 0, 24, 0, len(types), len(types), len(strs))
    return header + types + strs


def test_btf_offsets_through_anonymous_unions_and_arrays() -> None:
    b = btf.Btf(blob())
    assert b.offsetof("outer", "a") == 0 and b.offsetof("outer", "b") == 4
    assert b.offsetof("outer", "c.y") == 8 and b.offsetof("outer", "c.y[2]") == 16
    assert b.sizeof("outer") == 24 and b.sizeof("inner") == 20
    with pytest.raises(btf.BtfError, match="no member z"):
        b.offsetof("outer", "z")
    with pytest.raises(btf.BtfError, match="magic"):
        btf.Btf(b"\0" * 32)


def test_task_states_and_flags() -> None:
    assert [state_letter(s) for s in (0, 1, 2, 0x402, 4, 8)] == ["R", "S", "D", "I", "T", "t"]
    assert state_letter(0, 0x10) == "Z"
    assert flag_names(0x00020800 | 0x4) == ["PF_MEMALLOC", "PF_KSWAPD"]
    assert flag_names(0x00080000) == ["PF_MEMALLOC_NOIO"]


def test_a_recorded_idle_guest() -> None:
    assert IDLE["release"] == "6.1.0-50-amd64" and IDLE["unread"] == {}
    s = summary(IDLE)
    assert s == {"tasks": 56, "blocked": 0, "memalloc": ["kswapd0 (43)"], "unread": [], "below_min": [],
                 "memalloc_sockets": [], "rx_empty": []}
    kswapd = next(t for t in IDLE["tasks"] if t["name"] == "kswapd0")
    assert kswapd["classes"] == ["kswapd"] and kswapd["frames"][:3] == ["__schedule", "schedule", "kswapd"]
    on_cpu = {t["cpu"]: t for t in IDLE["tasks"] if t["on_cpu"]}  # unwound from the CPUs' registers in the dump
    assert set(on_cpu) == {0, 1} and all("do_idle" in t["frames"] for t in on_cpu.values())
    zones = {z["zone"]: z for z in IDLE["memory"]["zones"]}
    assert set(zones) == {"DMA", "DMA32"} and zones["DMA32"]["min_kb"] == 1628 and IDLE["memory"]["memalloc_socks"] == 0


def test_summary_names_zones_below_their_minimum() -> None:
    low = {**IDLE, "memory": {**IDLE["memory"], "zones": [{**z, "free_kb": 100} for z in IDLE["memory"]["zones"]]}}
    assert summary(low)["below_min"] == ["DMA", "DMA32"]


def test_show_prints_the_state() -> None:
    from testbed.forensics.show import state_lines

    lines = state_lines({**IDLE, "why": "stall"})
    assert lines[0].startswith("state at the stall (forensics.json")
    assert any(ln.startswith("  zone DMA32: free ") for ln in lines)
    assert "    kswapd0 (pid 43) S [PF_MEMALLOC PF_KSWAPD] (kswapd)" in lines
    assert "      __schedule < schedule < kswapd < kthread < ret_from_fork" in lines


def test_a_recorded_stall_the_nas_frozen() -> None:
    """controls/nas-frozen.yaml on 6.1.0-50 (TCG, 2026-12-07): the client's reclaimers wait in mempool_alloc
    for swap writeback to a NAS that no longer answers; DMA32 below its minimum; the NFS socket is the one
    with SOCK_MEMALLOC."""
    f = json.loads((Path(__file__).parents[2] / "fixtures/forensics/nas-frozen-stall-6.1.json").read_text())
    s = summary(f)
    assert s["blocked"] == 3 and s["below_min"] == ["DMA32"] and s["unread"] == []
    assert s["memalloc"] == ["tb-agent (1)", "kswapd0 (37)", "tb-work (146)"]
    assert f["memory"]["memalloc_socks"] == 1
    blocked = [t for t in f["tasks"] if t["state"] == "D"]
    assert all("mempool_alloc" in t["frames"] and "__swap_writepage" in t["frames"] for t in blocked)
    assert f["dump"]["format"] == "kdump-zlib" and f["why"] == "stall"


def test_the_storage_socket_of_the_recorded_stall() -> None:
    f = json.loads((Path(__file__).parents[2] / "fixtures/forensics/nas-frozen-stall-6.1.json").read_text())
    (nfs,) = [s for s in f["sockets"] if s["remote"].endswith(":2049")]
    assert nfs["state"] == "ESTABLISHED" and nfs["memalloc"] is True  # swap over NFS: the socket is a memalloc one
    assert nfs["wmem_queued"] > nfs["sndbuf"]  # its send queue full: the NAS frozen takes nothing
    assert summary(f)["memalloc_sockets"] == [f"{nfs['local']}>{nfs['remote']}"]


def test_frames_in_module_code_are_named_from_the_modules_own_symbols() -> None:
    f = json.loads((Path(__file__).parents[2] / "fixtures/forensics/nas-frozen-stall-6.1.json").read_text())
    agent = next(t for t in f["tasks"] if t["name"] == "tb-agent")
    assert agent["frames"][-1] == "alloc_buf.constprop.0"  # virtio_console's: where unwinding without its ORC ends
    assert "direct-reclaim" in agent["classes"]  # __alloc_pages_slowpath.constprop.0 is classified as the function


def test_the_dumps_blocked_tasks_as_the_checkers_evidence() -> None:
    """Where sysrq w printed nothing, the memory dump's blocked tasks are the evidence (recorded stall)."""
    from testbed.forensics import evidence_of

    f = json.loads((Path(__file__).parents[2] / "fixtures/forensics/nas-frozen-stall-6.1.json").read_text())
    ev = evidence_of(f, 185.8)
    assert ev is not None and [t.name for t in ev.blocked] == ["tb-agent", "kswapd0", "tb-work"]
    assert [t.name for t in ev.on_path] == ["kswapd0", "tb-work"]  # the agent never decides
    assert ev.sources == ("forensics.json",) and "mempool-wait" in ev.blocked[2].classes
    assert evidence_of({"tasks": []}) is None


def test_the_receive_ring_of_the_recorded_stall() -> None:
    """virtio_net's types come from the module's split BTF: eth0's one receive queue, 256 descriptors."""
    f = json.loads((Path(__file__).parents[2] / "fixtures/forensics/nas-frozen-stall-6.1.json").read_text())
    eth0 = next(n for n in f["nics"] if n["name"] == "eth0")
    assert eth0["driver"] == "virtio_net" and [q["size"] for q in eth0["rx"]] == [256]
    assert 0 <= eth0["rx"][0]["free"] < 256 and eth0["refill_pending"] is False  # buffers posted: not the RX race
    assert summary(f)["rx_empty"] == []
    empty = {**f, "nics": [{**eth0, "rx": [{"queue": 0, "free": 256, "size": 256}], "refill_pending": True}]}
    assert summary(empty)["rx_empty"] == ["eth0/0"]
    from testbed.forensics.show import state_lines

    assert any("rx queue 0: 0 of 256 descriptors hold buffers EMPTY" in ln and "refill work pending" in ln
               for ln in state_lines(empty))


def test_a_modules_split_btf_continues_the_kernels_ids_and_strings() -> None:
    base = btf.Btf(blob())
    base_len = len(base.strings)
    strs = b"\0modstruct\0o\0"
    own = lambda s: base_len + strs.index(s.encode() + b"\0")  # noqa: E731
    a_name = base.strings.index(b"a\0")  # a string of the kernel's, named by its offset there
    types = struct.pack("<III", own("modstruct"), btf.STRUCT << 24 | 2, 32)  # id 7, after the kernel's 6
    types += struct.pack("<III", a_name, 1, 0) + struct.pack("<III", own("o"), 5, 64)  # int a; struct outer o
    header = struct.pack("<HBBIIIII", btf.MAGIC, 1, 0, 24, 0, len(types), len(types), len(strs))
    mod = btf.Btf(header + types + strs, base=base)
    assert mod.by_name["modstruct"] == 7 and mod.sizeof("modstruct") == 32
    assert mod.offsetof("modstruct", "o.c.y[1]") == 8 + 12  # through the kernel's struct outer
    assert mod.offsetof("modstruct", "a") == 0


def test_the_nfs_transport_of_the_recorded_stall() -> None:
    """NFS's own reader (Storage.read_state): the RPC transport behind the socket, from sunrpc's BTF."""
    from testbed.forensics.show import state_lines

    f = json.loads((Path(__file__).parents[2] / "fixtures/forensics/nas-frozen-stall-6.1.json").read_text())
    (x,) = f["protocol"]["rpc_transports"]
    assert f["protocol"]["name"] == "nfs" and "CONNECTED" in x["state"] and "WRITE_SPACE" in x["state"]
    assert x["swapper"] == 1 and x["sending_queue"] > 100 and x["pending_queue"] == 0  # all wait to send
    assert "sk" not in f["sockets"][0]  # guest addresses are for the readers, not the file
    assert any(ln.startswith("  RPC transport 10.201.0.1:965>10.201.0.2:2049 CONNECTED BOUND WRITE_SPACE: 2")
               and "tasks waiting to send, 0 for a reply" in ln for ln in state_lines(f))


def test_gfp_masks_read_as_the_kernel_prints_them() -> None:
    assert gfp_names(0xA20) == "GFP_ATOMIC"
    assert gfp_names(0xA20 | 0x2000) == "GFP_ATOMIC|__GFP_NOWARN"
    assert gfp_names(0xCC0 | 0x100) == "GFP_KERNEL|__GFP_ZERO"
    assert gfp_names(0xC00) == "GFP_NOIO"
    assert gfp_names(0x20000 | 0x40) == "__GFP_IO|__GFP_MEMALLOC"  # no set held whole: the bits
    assert gfp_names(0) == "0" and gfp_names(0x80000000) == "0x80000000"


def test_only_vmlinux_and_the_paths_modules_are_kept_of_a_dbg_package() -> None:
    """Of linux-image-<release>-dbg's 5.6 GB: vmlinux and the storage/network modules' debug objects."""
    rel = "6.1.0-50-amd64"
    root = "./usr/lib/debug"
    assert wanted(f"{root}/boot/vmlinux-{rel}", rel) == "vmlinux"
    assert wanted(f"{root}/boot/vmlinux-6.1.0-49-amd64", rel) is None  # another release's
    assert wanted(f"{root}/lib/modules/{rel}/kernel/net/sunrpc/sunrpc.ko", rel) == "modules/sunrpc.ko"
    assert wanted(f"{root}/lib/modules/{rel}/kernel/drivers/net/virtio_net.ko", rel) == "modules/virtio_net.ko"
    assert wanted(f"{root}/lib/modules/{rel}/kernel/drivers/scsi/iscsi_tcp.ko", rel) == "modules/iscsi_tcp.ko"
    assert wanted(f"{root}/lib/modules/{rel}/kernel/drivers/gpu/drm/amd/amdgpu/amdgpu.ko", rel) is None
    assert wanted(f"{root}/lib/modules/{rel}/kernel/fs/nfs/nfs.ko.debug", rel) is None


def test_no_symbols_for_a_path_kernel_without_vmlinux(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path / "cache"))
    files, why = symbols.ensure({"kind": "path", "path": str(tmp_path)}, "6.6.0", print)
    assert files == [] and "has no vmlinux" in why
    (tmp_path / "vmlinux").write_bytes(b"\x7fELF")
    assert symbols.ensure({"kind": "path", "path": str(tmp_path)}, "6.6.0", print)[0] == [tmp_path / "vmlinux"]
    monkeypatch.setenv("TESTBED_SYMBOLS", "0")
    files, why = symbols.ensure({"kind": "debian", "version": "6.1.176-1"}, "6.1.0-50-amd64", print)
    assert files == [] and "TESTBED_SYMBOLS=0" in why and symbols.listing() == []


def test_a_nas_image_names_its_kernel_for_the_symbols() -> None:
    image = {"kernel": "6.1.0-50-amd64", "package": "linux-image-6.1.0-50-amd64=6.1.176-1"}
    assert symbols.of_image(image) == ({"kind": "debian", "package": "linux-image-6.1.0-50-amd64",
                                        "version": "6.1.176-1"}, "6.1.0-50-amd64")
    assert symbols.of_image({}) == ({}, "")
