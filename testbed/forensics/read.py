"""Reading a kdump-compressed dump of a guest with drgn. Symbols from the kernel's DWARF where
testbed/forensics/symbols.py has it (stacks through module code, each frame's gfp_t arguments), else from
the kallsyms the guest's VMCOREINFO points at (kernels >= 6.0); struct layouts always from the kernel's
own BTF in the dump and each module's split BTF (testbed/forensics/btf.py), so every part reads the same
with or without DWARF. Each part of the state is read by a function of its own (PARTS); a part that
cannot be read says why in `unread`, and the others are still read. The protocols' own state is read by
the reader each protocol module declares (Storage.read_state) with this module's Dump."""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import Any

from testbed.check.evidence import CLONE_SUFFIX, BlockedTask, Evidence, classify
from testbed.forensics.btf import Btf, BtfError

FILE = "forensics.json"
NAS_FILE = "forensics-nas.json"  # the NAS VM's, where the NAS side was suspect at the stall
FORMAT = 1
PAGE_KB = 4
# include/linux/sched.h (6.x)
PF_FLAGS = {0x00000800: "PF_MEMALLOC", 0x00020000: "PF_KSWAPD", 0x00040000: "PF_MEMALLOC_NOFS",
            0x00080000: "PF_MEMALLOC_NOIO"}
# include/linux/gfp_types.h (6.1): the ___GFP_ bits, and the combinations the kernel prints first (%pGg)
GFP_BITS = ((0x1, "__GFP_DMA"), (0x2, "__GFP_HIGHMEM"), (0x4, "__GFP_DMA32"), (0x8, "__GFP_MOVABLE"),
            (0x10, "__GFP_RECLAIMABLE"), (0x20, "__GFP_HIGH"), (0x40, "__GFP_IO"), (0x80, "__GFP_FS"),
            (0x100, "__GFP_ZERO"), (0x200, "__GFP_ATOMIC"), (0x400, "__GFP_DIRECT_RECLAIM"),
            (0x800, "__GFP_KSWAPD_RECLAIM"), (0x1000, "__GFP_WRITE"), (0x2000, "__GFP_NOWARN"),
            (0x4000, "__GFP_RETRY_MAYFAIL"), (0x8000, "__GFP_NOFAIL"), (0x10000, "__GFP_NORETRY"),
            (0x20000, "__GFP_MEMALLOC"), (0x40000, "__GFP_COMP"), (0x80000, "__GFP_NOMEMALLOC"),
            (0x100000, "__GFP_HARDWALL"), (0x200000, "__GFP_THISNODE"), (0x400000, "__GFP_ACCOUNT"),
            (0x800000, "__GFP_ZEROTAGS"))
GFP_SETS = ((0xCC0, "GFP_KERNEL"), (0xC40, "GFP_NOFS"), (0xC00, "GFP_NOIO"), (0xA20, "GFP_ATOMIC"),
            (0x800, "GFP_NOWAIT"))
TASK_UNINTERRUPTIBLE, TASK_NOLOAD = 0x2, 0x400
# struct inactive_task_frame (x86-64): what switch_to pushed, from thread.sp up
INACTIVE_FRAME = "<7Q"  # r15 r14 r13 r12 bx bp ret_addr
PT_REGS_SIZE = 168  # struct pt_regs (x86-64), read by drgn at fixed offsets


class Unreadable(Exception):
    pass


def cpu_registers(path: Path) -> dict[int, bytes]:
    """Each CPU's registers at the dump (pt_regs bytes by CPU number), from the NT_PRSTATUS notes of a plain
    kdump-compressed file (QEMU numbers them by CPU + 1 in pr_pid). Empty when the file has none."""
    out: dict[int, bytes] = {}
    with open(path, "rb") as f:
        head = f.read(4096)
        if head[:8] != b"KDUMP   ":
            return out
        block_size = struct.unpack_from("<i", head, 428)[0]  # struct disk_dump_header
        f.seek(block_size)
        sub = f.read(64)  # struct kdump_sub_header (header_version >= 4 has the notes)
        offset_note, size_note = struct.unpack_from("<QQ", sub, 48)
        if not offset_note or not size_note:
            return out
        f.seek(offset_note)
        notes = f.read(size_note)
    off = 0
    while off + 12 <= len(notes):
        namesz, descsz, kind = struct.unpack_from("<III", notes, off)
        off += 12
        name = notes[off:off + namesz].rstrip(b"\0")
        off += (namesz + 3) & ~3
        desc = notes[off:off + descsz]
        off += (descsz + 3) & ~3
        if name == b"CORE" and kind == 1 and len(desc) >= 112 + PT_REGS_SIZE:  # NT_PRSTATUS
            pid = struct.unpack_from("<i", desc, 32)[0]
            out[pid - 1] = desc[112:112 + PT_REGS_SIZE]  # elf_gregset_t begins with pt_regs' layout
    return out


def state_letter(state: int, exit_state: int = 0) -> str:
    """/proc's letter for a task's __state and exit_state (fs/proc/array.c task_state_array)."""
    if exit_state & 0x10:
        return "Z"
    if exit_state & 0x20:
        return "X"
    if state == TASK_UNINTERRUPTIBLE | TASK_NOLOAD:
        return "I"
    for bit, letter in ((0x1, "S"), (0x2, "D"), (0x4, "T"), (0x8, "t"), (0x40, "P"), (0x400, "N")):
        if state & bit:
            return letter
    return "R"


def gfp_names(mask: int) -> str:
    """A gfp mask as the kernel prints it: `GFP_ATOMIC|__GFP_NOWARN`, the first set it holds whole, then bits."""
    names, rest = [], mask
    for bits, name in GFP_SETS:
        if rest & bits == bits:
            names.append(name)
            rest &= ~bits
            break
    names += [name for bit, name in GFP_BITS if rest & bit]
    rest &= ~sum(bit for bit, _ in GFP_BITS)
    if rest:
        names.append(f"{rest:#x}")
    return "|".join(names) or "0"


def flag_names(flags: int) -> list[str]:
    return [name for bit, name in PF_FLAGS.items() if flags & bit]


class Dump:
    """An opened dump: drgn's Program with kallsyms and the kernel's address range, and its BTF."""

    def __init__(self, path: Path, debug: list[Path] | tuple[Path, ...] = ()):
        """`debug`: the kernel's DWARF (vmlinux first, then modules' debug objects: testbed/forensics/symbols.py);
        without it, kallsyms and the kernel's BTF."""
        # drgn only where a dump is read: a host without it keeps its dumps unread (read_dump says so)
        import drgn
        from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms  # (as drgn above)

        self.drgn = drgn
        platform = drgn.Platform(drgn.Architecture.X86_64,
                                 drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN)
        self.prog = drgn.Program(platform)  # QEMU's kdump files name no architecture: drgn needs it given
        self.dwarf: list[str] = []  # the modules (and "kernel") whose DWARF was loaded
        try:
            self.prog.set_core_dump(str(path))
            if debug:
                self._load_dwarf(debug)
            if not self.dwarf:
                self.prog.register_symbol_finder("kallsyms", load_vmlinux_kallsyms(self.prog), enable_index=0)
                kernel = self.prog.main_module("kernel", create=True)
                kernel.address_range = (self.sym("_text"), self.sym("_end"))
            start, stop = self.sym("__start_BTF"), self.sym("__stop_BTF")
            self.btf = Btf(self.prog.read(start, stop - start))
            symbols = module_symbols(self)
            self.modules = [(n, a, s) for n, a, s, func, _m in symbols if func]
            self.module_objects = [(n, a, s, m) for n, a, s, func, m in symbols if not func]
            self._module_btf: dict[str, Btf] = {}
            if self.modules:
                self.prog.register_symbol_finder("module-kallsyms", self._find_module_symbol, enable_index=-1)
        except (drgn.FaultError, LookupError, ValueError, BtfError, OSError) as e:
            raise Unreadable(f"{type(e).__name__}: {e} (kallsyms in VMCOREINFO need a kernel >= 6.0; "
                             "struct layouts need CONFIG_DEBUG_INFO_BTF)") from None
        self.pt_regs = self.prog.struct_type("pt_regs", PT_REGS_SIZE, [])
        self.clocks: dict[int, int] = {}  # each CPU's task clock (ns): tasks() reads them
        try:
            self.cpus = cpu_registers(path)
        except (OSError, struct.error):
            self.cpus = {}

    def _load_dwarf(self, debug: list[Path] | tuple[Path, ...]) -> None:
        """drgn's own debug info from the given files: the kernel's and the loaded modules' that match."""
        try:
            self.prog.load_debug_info([str(p) for p in debug])
        except self.drgn.MissingDebugInfoError:  # modules without a kept debug object: they unwind by ORC
            pass
        self.dwarf = sorted(m.name for m in self.prog.modules() if m.debug_file_status.name == "HAVE")

    def _find_module_symbol(self, prog: Any, name: str | None, address: int | None, one: bool) -> list[Any]:
        """drgn's symbol finder over the loaded modules' own symbol tables (testbed/forensics/read.py
        module_symbols): frames in module code get their names."""
        out = []
        for sname, start, size in self.modules:
            if (name is None or sname == name) and (address is None or start <= address < start + max(size, 1)):
                out.append(self.drgn.Symbol(sname, start, size, self.drgn.SymbolBinding.GLOBAL, self.drgn.SymbolKind.FUNC))
                if one:
                    break
        return out

    def module_btf(self, module: str) -> Btf:
        """A loaded module's types (its split BTF, as the kernel parsed it at load: `btf_modules`)."""
        if module not in self._module_btf:
            o = {k: self.off("btf_module", k) for k in ("list", "module", "btf")}
            data_off, size_off = self.off("btf", "data"), self.off("btf", "data_size")
            name_off = self.off("module", "name")
            head = self.sym("btf_modules")
            node = self.u64(head)
            while node != head:
                entry = node - o["list"]
                if self.cstr(self.u64(entry + o["module"]) + name_off, 56) == module:
                    btf = self.u64(entry + o["btf"])
                    blob = bytes(self.prog.read(self.u64(btf + data_off), self.u32(btf + size_off)))
                    self._module_btf[module] = Btf(blob, base=self.btf)
                    break
                node = self.u64(node)
            else:
                raise BtfError(f"no BTF for module {module} (not loaded, or built without BTF)")
        return self._module_btf[module]

    def module_object(self, name: str, module: str | None = None) -> int:
        """A module's data object's address (its kallsyms), e.g. virtio_net's `virtnet_netdev`; `module`
        names the module where the name is a static one others may share (aoe's `devlist`)."""
        for sname, start, _size, mod in self.module_objects:
            if sname == name and module in (None, mod):
                return start
        raise LookupError(f"no module object {name}" + (f" in {module}" if module else ""))

    def list_len(self, head: int, limit: int = 100_000) -> int:
        """The entries of a struct list_head list."""
        n, node = 0, self.u64(head)
        while node != head and n < limit:
            n, node = n + 1, self.u64(node)
        return n

    def xarray(self, xa: int) -> list[tuple[int, int]]:
        """(index, entry) of every pointer entry of a struct xarray (an IDR's tree), walked through its nodes."""
        slots, shift_off = self.off("xa_node", "slots"), self.off("xa_node", "shift")
        out: list[tuple[int, int]] = []

        def walk(entry: int, base: int) -> None:
            if entry & 3 == 2 and entry > 4096:  # xa_is_node: an internal node
                node = entry - 2
                shift = self.u8(node + shift_off)
                for i, child in enumerate(struct.unpack("<64Q", bytes(self.prog.read(node + slots, 64 * 8)))):
                    if child:
                        walk(child, base + (i << shift))
            elif entry and not entry & 3 and len(out) < 100_000:  # a pointer (values and retries are not)
                out.append((base, entry))

        walk(self.u64(xa + self.off("xarray", "xa_head")), 0)
        return out

    def sym(self, name: str) -> int:
        return int(self.prog.symbol(name).address)

    def off(self, struct_name: str, path: str) -> int:
        return self.btf.offsetof(struct_name, path)

    def u64(self, addr: int) -> int:
        return int(self.prog.read_u64(addr))

    def u32(self, addr: int) -> int:
        return int(self.prog.read_u32(addr))

    def u8(self, addr: int) -> int:
        return int(self.prog.read_u8(addr))

    def cstr(self, addr: int, n: int) -> str:
        return bytes(self.prog.read(addr, n)).split(b"\0")[0].decode(errors="replace")

    def stack(self, sp: int) -> list[str]:
        """Frames of a task switched out at `sp` (innermost first): names, or addresses in module code."""
        return self.unwind(self.switched_out(sp))

    def switched_out(self, sp: int) -> bytes:
        """The registers (pt_regs bytes) of a task switched out at `sp`, from what switch_to pushed."""
        r15, r14, r13, r12, bx, bp, ret = struct.unpack(INACTIVE_FRAME, bytes(self.prog.read(sp, 56)))
        regs = [0] * 21  # pt_regs: r15 r14 r13 r12 bp bx r11..r8 ax cx dx si di orig_ax ip cs flags sp ss
        regs[0:6] = [r15, r14, r13, r12, bp, bx]
        regs[16], regs[19] = ret, sp + 56
        return struct.pack("<21Q", *regs)

    def unwind(self, regs: bytes) -> list[str]:
        return [f.name or f"{f.pc:#x}" for f in self.trace(regs)]

    def trace(self, regs: bytes) -> Any:
        return self.prog.stack_trace(self.drgn.Object.from_bytes_(self.prog, self.pt_regs, regs))

    def allocations(self, trace: Any) -> list[dict[str, Any]]:
        """The frames of a stack that allocate, with their gfp_t arguments and order as DWARF gives them
        (innermost first): only with the kernel's DWARF, and only where the compiler kept the value."""
        out: list[dict[str, Any]] = []
        if not self.dwarf:
            return out
        for f in trace:
            try:
                names = f.locals()
            except (self.drgn.FaultError, LookupError, ValueError):
                continue
            got: dict[str, Any] = {}
            for name in names:
                try:
                    v = f[name]
                    tname = v.type_.type_name()
                    if tname == "gfp_t":
                        got["gfp_mask"] = int(v.value_())
                    elif name == "order" and tname in ("unsigned int", "int"):
                        got["order"] = int(v.value_())
                except (self.drgn.ObjectAbsentError, self.drgn.FaultError, LookupError, ValueError, TypeError):
                    continue
            if "gfp_mask" in got:
                out.append({"function": f.name, **got, "gfp": gfp_names(got["gfp_mask"])})
        return out


def module_symbols(d: Dump) -> list[tuple[str, int, int, bool, str]]:
    """(name, address, size, is a function, module) of every function and data symbol of every loaded module,
    from each module's own kallsyms (struct mod_kallsyms: an Elf64_Sym table and its strings). Empty when the
    layout is unknown."""
    try:
        o = {k: d.off("module", k) for k in ("list", "kallsyms", "name")}
        ks = {k: d.off("mod_kallsyms", k) for k in ("symtab", "num_symtab", "strtab")}
        head = d.sym("modules")
    except (BtfError, LookupError):
        return []
    out: list[tuple[str, int, int, bool, str]] = []
    node = d.u64(head)
    while node != head and len(out) < 500_000:
        mod = node - o["list"]
        kallsyms, module = d.u64(mod + o["kallsyms"]), d.cstr(mod + o["name"], 56)
        if kallsyms:
            symtab, count, strtab = (d.u64(kallsyms + ks["symtab"]), d.u32(kallsyms + ks["num_symtab"]),
                                     d.u64(kallsyms + ks["strtab"]))
            table = bytes(d.prog.read(symtab, 24 * count)) if count else b""
            for i in range(count):  # Elf64_Sym: name, info, other, shndx, value, size
                st_name, st_info, _other, shndx, value, size = struct.unpack_from("<IBBHQQ", table, 24 * i)
                if st_info & 0xF in (1, 2) and value and shndx:  # STT_OBJECT, STT_FUNC; defined
                    out.append((d.cstr(strtab + st_name, 128), value, size, st_info & 0xF == 2, module))
        node = d.u64(node)
    return out


def release(d: Dump) -> str:
    return d.cstr(d.sym("init_uts_ns") + d.off("uts_namespace", "name.release"), 65)


def tasks(d: Dump) -> list[dict[str, Any]]:
    """Every task: pid, name, state letter, PF_* flags, whether on a CPU, and its stack when it is not."""
    o = {k: d.off("task_struct", k) for k in ("tasks", "pid", "comm", "__state", "exit_state", "flags", "on_cpu",
                                              "thread.sp", "thread_group", "thread_info.cpu", "se.exec_start")}
    d.clocks = cpu_clocks(d)
    init = d.sym("init_task")
    leaders, node = [init], d.u64(init + o["tasks"])
    while node != init + o["tasks"] and len(leaders) < 100_000:
        leaders.append(node - o["tasks"])
        node = d.u64(node)
    out = []
    for leader in leaders:
        group, node = [leader], d.u64(leader + o["thread_group"])
        while node != leader + o["thread_group"] and len(group) < 10_000:
            group.append(node - o["thread_group"])
            node = d.u64(node)
        for t in group:
            out.append(_task(d, t, o))
    # A CPU whose current task is not on the task list (the idle tasks of CPUs but the first): its stack still
    seen = {t.get("cpu") for t in out}
    for cpu, regs in sorted(d.cpus.items()):
        if cpu not in seen:
            try:
                frames = d.unwind(regs)
            except Exception as e:  # said, as for a task
                out.append({"pid": None, "name": f"cpu{cpu}", "cpu": cpu, "on_cpu": True, "state": "R", "flags": [],
                            "stack_unread": f"{type(e).__name__}: {e}"})
                continue
            out.append({"pid": None, "name": f"cpu{cpu}", "cpu": cpu, "on_cpu": True, "state": "R", "flags": [],
                        "frames": frames, "note": "the CPU's current task is not on the task list (an idle task)"})
    return out


def cpu_clocks(d: Dump) -> dict[int, int]:
    """Each CPU's runqueue task clock (ns) at the dump: what a task's last run is measured against."""
    try:
        rq, clock = d.sym("runqueues"), d.off("rq", "clock_task")
        cpus = d.u32(d.sym("nr_cpu_ids"))
        return {c: d.u64(rq + d.u64(d.sym("__per_cpu_offset") + 8 * c) + clock) for c in range(min(cpus, 64))}
    except (BtfError, LookupError):
        return {}


def _task(d: Dump, t: int, o: dict[str, int]) -> dict[str, Any]:
    flags = d.u32(t + o["flags"])
    task: dict[str, Any] = {"pid": d.u32(t + o["pid"]), "name": d.cstr(t + o["comm"], 16),
                            "state": state_letter(d.u32(t + o["__state"]), d.u32(t + o["exit_state"])),
                            "flags": flag_names(flags), "on_cpu": bool(d.u32(t + o["on_cpu"]))}
    clock, ran = d.clocks.get(d.u32(t + o["thread_info.cpu"])), d.u64(t + o["se.exec_start"])
    if clock and ran and not task["on_cpu"] and clock >= ran:  # since it last ran (its runtime last accounted)
        task["off_cpu_s"] = round((clock - ran) / 1e9, 1)
    cpu = d.u32(t + o["thread_info.cpu"]) if task["on_cpu"] else None
    if cpu is not None:
        task["cpu"] = cpu
        if cpu not in d.cpus:
            task["stack_unread"] = f"running on CPU {cpu}, whose registers the dump does not hold"
            return task
    try:  # a task on a CPU unwinds from the CPU's registers, one switched out from its saved frame
        trace = d.trace(d.cpus[cpu]) if cpu is not None else d.trace(d.switched_out(d.u64(t + o["thread.sp"])))
        task["frames"] = [f.name or f"{f.pc:#x}" for f in trace]
        allocs = d.allocations(trace)
        if allocs:
            task["allocations"] = allocs
    except Exception as e:  # one task's stack unreadable: said, the others read
        task["stack_unread"] = f"{type(e).__name__}: {e}"
        return task
    frames = tuple(CLONE_SUFFIX.sub("", f) for f in task["frames"])  # the classes match functions, not clones
    task["classes"] = list(classify(BlockedTask(task["name"], task["pid"], task["state"], frames=frames)))
    return task


def memory(d: Dump) -> dict[str, Any]:
    """Per zone free pages against its watermarks; the reserves and swap; the memalloc-socket count."""
    zone_size = d.btf.sizeof("zone")
    o = {k: d.off("zone", k) for k in ("_watermark", "watermark_boost", "managed_pages", "vm_stat", "name",
                                       "nr_reserved_highatomic")}
    node_zones = d.off("pglist_data", "node_zones")
    try:
        node0 = d.u64(d.sym("node_data"))  # NUMA kernels: an array of pointers
    except LookupError:
        node0 = d.sym("contig_page_data")
    zones = []
    for i in range(8):
        z = node0 + node_zones + i * zone_size
        name_ptr = d.u64(z + o["name"])
        if not name_ptr:
            break
        managed = d.u64(z + o["managed_pages"])
        if not managed:
            continue
        boost = d.u64(z + o["watermark_boost"])
        wm = [d.u64(z + o["_watermark"] + 8 * k) + boost for k in range(3)]  # min low high, as the kernel compares
        zones.append({"zone": d.cstr(name_ptr, 16), "free_kb": d.u64(z + o["vm_stat"]) * PAGE_KB,
                      "min_kb": wm[0] * PAGE_KB, "low_kb": wm[1] * PAGE_KB, "high_kb": wm[2] * PAGE_KB,
                      "boost_kb": boost * PAGE_KB, "managed_kb": managed * PAGE_KB,
                      "reserved_highatomic_kb": d.u64(z + o["nr_reserved_highatomic"]) * PAGE_KB})
    return {"zones": zones, "totalreserve_kb": d.u64(d.sym("totalreserve_pages")) * PAGE_KB,
            "memalloc_socks": d.u32(d.sym("memalloc_socks_key")),  # static key: sockets with SOCK_MEMALLOC
            "swap_free_kb": d.u64(d.sym("nr_swap_pages")) * PAGE_KB,
            "swap_total_kb": d.u64(d.sym("total_swap_pages")) * PAGE_KB}


TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
              7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}
MINI_SOCKS = (6, 12)  # time-wait and request socks share the hash but are no struct sock


def ip4(addr: int) -> str:
    return ".".join(str(b) for b in addr.to_bytes(4, "little"))


def sockets(d: Dump) -> list[dict[str, Any]]:
    """Every connected TCP socket (the established hash): addresses, state, SOCK_MEMALLOC, receive memory
    against its buffer, queued send memory, drops. The storage path's (NFS, iSCSI, NBD) are among them."""
    hashinfo = d.sym("tcp_hashinfo")
    ehash = d.u64(hashinfo + d.off("inet_hashinfo", "ehash"))
    buckets = d.u32(hashinfo + d.off("inet_hashinfo", "ehash_mask")) + 1
    size = d.btf.sizeof("inet_ehash_bucket")
    heads = bytes(d.prog.read(ehash, buckets * size))
    node_off = d.off("sock_common", "skc_nulls_node")
    out: list[dict[str, Any]] = []
    for i in range(buckets):
        node = struct.unpack_from("<Q", heads, i * size)[0]
        while node and not node & 1 and len(out) < 10_000:  # a nulls list ends in an odd marker
            out.append(_socket(d, node - node_off))
            node = d.u64(node)
    return out


def _socket(d: Dump, sk: int) -> dict[str, Any]:
    c = {k: d.off("sock_common", k) for k in ("skc_family", "skc_state", "skc_daddr", "skc_rcv_saddr", "skc_dport",
                                            "skc_num")}
    state = d.u8(sk + c["skc_state"])
    dport = int.from_bytes(bytes(d.prog.read(sk + c["skc_dport"], 2)), "big")
    s: dict[str, Any] = {"sk": sk,
                         "local": f"{ip4(d.u32(sk + c['skc_rcv_saddr']))}:{int(d.prog.read_u16(sk + c['skc_num']))}",
                         "remote": f"{ip4(d.u32(sk + c['skc_daddr']))}:{dport}",
                         "state": TCP_STATES.get(state, str(state))}
    if state in MINI_SOCKS:
        return s
    flags = d.u64(sk + d.off("sock_common", "skc_flags"))  # sk_flags is a define for it
    s.update(memalloc=bool(flags >> d.btf.enum("SOCK_MEMALLOC") & 1),
             rmem_alloc=d.u32(sk + d.off("sock", "sk_backlog.rmem_alloc")),
             rcvbuf=d.u32(sk + d.off("sock", "sk_rcvbuf")),
             wmem_queued=d.u32(sk + d.off("sock", "sk_wmem_queued")),
             sndbuf=d.u32(sk + d.off("sock", "sk_sndbuf")),
             drops=d.u32(sk + d.off("sock", "sk_drops")))
    s["tcp"] = _tcp(d, sk)
    return s


TCP_CA_STATES = ("Open", "Disorder", "CWR", "Recovery", "Loss")


def _tcp(d: Dump, sk: int) -> dict[str, Any]:
    """A TCP socket's sending state: segments out, lost and being retransmitted, the retransmission timer's
    firings and backoff, and what was ever retransmitted (struct tcp_sock, inet_connection_sock)."""
    tp = {k: d.off("tcp_sock", k) for k in ("packets_out", "lost_out", "retrans_out", "sacked_out", "total_retrans",
                                            "snd_cwnd", "snd_una", "snd_nxt", "write_seq", "snd_wnd")}
    ic = {k: d.off("inet_connection_sock", k) for k in ("icsk_retransmits", "icsk_backoff", "icsk_rto",
                                                        "icsk_pending")}
    ca_bits = d.btf.bit_offset("inet_connection_sock", "icsk_ca_state")  # a 5-bit field
    out: dict[str, Any] = {k: d.u32(sk + o) for k, o in tp.items()}
    out["unsent_bytes"] = (out.pop("write_seq") - out["snd_nxt"]) & 0xFFFFFFFF
    out["unacked_bytes"] = (out["snd_nxt"] - out.pop("snd_una")) & 0xFFFFFFFF
    del out["snd_nxt"]
    ca = d.u8(sk + ca_bits // 8) >> (ca_bits % 8) & 0x1F
    out.update(ca_state=TCP_CA_STATES[ca] if ca < len(TCP_CA_STATES) else str(ca),
               rto_fired=d.u8(sk + ic["icsk_retransmits"]), backoff=d.u8(sk + ic["icsk_backoff"]),
               rto_jiffies=d.u32(sk + ic["icsk_rto"]), timer_pending=d.u8(sk + ic["icsk_pending"]))
    return out


# The counters of /proc/net/netstat and /proc/net/snmp that say why a storage socket does not move: by
# their kernel enumerator and their name in those files
NETSTAT = (("net_statistics", "LINUX_MIB_TCPTIMEOUTS", "TCPTimeouts"),
           ("net_statistics", "LINUX_MIB_TCPRETRANSFAIL", "TCPRetransFail"),
           ("net_statistics", "LINUX_MIB_TCPMEMORYPRESSURES", "TCPMemoryPressures"),
           ("net_statistics", "LINUX_MIB_PFMEMALLOCDROP", "PFMemallocDrop"),
           ("net_statistics", "LINUX_MIB_TCPLOSSPROBES", "TCPLossProbes"),
           ("net_statistics", "LINUX_MIB_TCPSPURIOUS_RTX_HOSTQUEUES", "TCPSpuriousRtxHostQueues"),
           ("net_statistics", "LINUX_MIB_TCPBACKLOGDROP", "TCPBacklogDrop"),
           ("net_statistics", "LINUX_MIB_TCPRCVQDROP", "TCPRcvQDrop"),
           ("net_statistics", "LINUX_MIB_TCPWQUEUETOOBIG", "TCPWqueueTooBig"),
           ("tcp_statistics", "TCP_MIB_OUTSEGS", "OutSegs"), ("tcp_statistics", "TCP_MIB_RETRANSSEGS", "RetransSegs"),
           ("tcp_statistics", "TCP_MIB_INSEGS", "InSegs"))


def netstat(d: Dump) -> dict[str, int]:
    """The initial namespace's TCP counters (per-CPU MIBs summed), as /proc/net/netstat and snmp name them."""
    mib = d.sym("init_net") + d.off("net", "mib")
    cpus = d.u32(d.sym("nr_cpu_ids"))
    offsets = [d.u64(d.sym("__per_cpu_offset") + 8 * c) for c in range(min(cpus, 64))]
    out = {}
    for table, enum, name in NETSTAT:
        try:
            idx = d.btf.enum(enum)
        except BtfError:  # a counter this kernel does not have
            continue
        base = d.u64(mib + d.off("netns_mib", table))
        out[name] = sum(d.u64(base + off + 8 * idx) for off in offsets) if base else 0
    return out


NETDEV_ALIGN = 32
WORK_STRUCT_PENDING = 1


def nics(d: Dump) -> list[dict[str, Any]]:
    """Every network device of the initial namespace; for virtio_net ones, each receive queue's free
    descriptors against its ring size, and whether the refill work is pending (the RX refill race: a ring
    with no buffers receives nothing, and refilling it needs memory)."""
    o = {k: d.off("net_device", k) for k in ("dev_list", "name", "netdev_ops")}
    priv_off = (d.btf.sizeof("net_device") + NETDEV_ALIGN - 1) & ~(NETDEV_ALIGN - 1)  # netdev_priv()
    head = d.sym("init_net") + d.off("net", "dev_base_head")
    try:
        virtnet_ops = d.module_object("virtnet_netdev")
    except LookupError:
        virtnet_ops = None
    out: list[dict[str, Any]] = []
    node = d.u64(head)
    while node != head and len(out) < 1000:
        dev = node - o["dev_list"]
        nic: dict[str, Any] = {"name": d.cstr(dev + o["name"], 16)}
        if virtnet_ops is not None and d.u64(dev + o["netdev_ops"]) == virtnet_ops:
            nic.update(driver="virtio_net", **_virtnet(d, dev + priv_off))
        out.append(nic)
        node = d.u64(node)
    return out


def _virtnet(d: Dump, vi: int) -> dict[str, Any]:
    net, ring = d.module_btf("virtio_net"), d.module_btf("virtio_ring")
    rq_size = net.sizeof("receive_queue")
    rqs = d.u64(vi + net.offsetof("virtnet_info", "rq"))
    pairs = int(d.prog.read_u16(vi + net.offsetof("virtnet_info", "curr_queue_pairs")))
    num_off = ring.offsetof("vring_virtqueue", "split.vring.num")
    rx = []
    for i in range(pairs):
        vq = d.u64(rqs + i * rq_size + net.offsetof("receive_queue", "vq"))
        rx.append({"queue": i, "free": d.u32(vq + net.offsetof("virtqueue", "num_free")),
                   "size": d.u32(vq + num_off)})  # struct vring_virtqueue begins with its struct virtqueue
    refill = d.u64(vi + net.offsetof("virtnet_info", "refill.work.data"))
    return {"rx": rx, "refill_pending": bool(refill & WORK_STRUCT_PENDING)}


PARTS = {"tasks": tasks, "memory": memory, "sockets": sockets, "netstat": netstat, "nics": nics}


def read_dump(path: Path, release_expected: str | None = None, protocol: Any = None,
              debug: tuple[list[Path], str] = ([], "no symbols looked for")) -> dict[str, Any]:
    """forensics.json's content: what each part read, and what could not be read and why. `debug`: the
    kernel's DWARF files and how they were found, or none and why (testbed/forensics/symbols.py)."""
    try:
        import drgn  # noqa: F401  # is it installed? (a dependency, but a host may lack its wheel)
    except ImportError:
        return {"format": FORMAT, "unread": {"all": "drgn is not installed (pip install drgn): the dump is kept, unread"}}
    logging.getLogger("drgn").setLevel(logging.ERROR)  # not a line per debug object that matches no module
    files, how = debug
    try:
        d = Dump(path, files)
    except Unreadable as e:
        return {"format": FORMAT, "unread": {"all": str(e)}}
    out: dict[str, Any] = {"format": FORMAT, "unread": {}}
    if d.dwarf:
        out["debug_info"] = (f"DWARF from {how} for the kernel and {len(d.dwarf) - 1} modules "
                             f"({', '.join(m for m in d.dwarf if m != 'kernel')}) + the kernel's BTF")
    else:
        out["debug_info"] = "kallsyms (VMCOREINFO) + the kernel's BTF; no DWARF"
        out["unread"]["allocations"] = (f"no DWARF ({how}): stacks stop at the first module frame, and no "
                                        "allocation's gfp_mask or order is read")
    try:
        out["release"] = release(d)
    except Exception as e:
        out["unread"]["release"] = f"{type(e).__name__}: {e}"
    if release_expected and out.get("release") not in (None, release_expected):
        out["unread"]["release"] = f"the dump's kernel is {out.get('release')}, not {release_expected}"
    for name, fn in PARTS.items():
        try:
            out[name] = fn(d)
        except Exception as e:  # a part that fails is said; the others are still read
            out["unread"][name] = f"{type(e).__name__}: {e}"
    if protocol is not None:  # the protocol's own queues, read by the reader its module declares
        try:
            out["protocol"] = {"name": protocol.name, **protocol.read_state(d, out.get("sockets") or [])}
        except Exception as e:
            out["unread"]["protocol"] = f"{protocol.name}: {type(e).__name__}: {e}"
    for s in out.get("sockets") or []:
        s.pop("sk", None)  # an address in the guest: for the readers, not the file
    return out


def evidence_of(got: dict[str, Any], taken_t: float | None = None) -> Evidence | None:
    """The blocked tasks a dump shows, as the checker's evidence: where the sysrq dump printed nothing, the
    memory dump still tells who waits where. None when no task was read."""
    ts = got.get("tasks")
    if not ts:
        return None
    blocked = tuple(BlockedTask(t["name"], int(t["pid"]), "D", frames=tuple(CLONE_SUFFIX.sub("", f) for f in t["frames"]))
                    for t in ts if t.get("state") == "D" and t.get("frames") and t.get("pid") is not None)
    return Evidence(blocked=tuple(BlockedTask.from_dict(b.to_dict()) for b in blocked), taken_t=taken_t,
                    sources=(FILE,))


def summary(got: dict[str, Any]) -> dict[str, Any]:
    """A few numbers for the case's history."""
    ts = got.get("tasks") or []
    out: dict[str, Any] = {"tasks": sum(1 for t in ts if t.get("pid") is not None), "blocked": sum(1 for t in ts if t.get("state") == "D"),
                           "memalloc": [f"{t['name']} ({t['pid']})" for t in ts if "PF_MEMALLOC" in t.get("flags", [])],
                           "unread": sorted(got.get("unread") or {})}
    zones = (got.get("memory") or {}).get("zones") or []
    out["below_min"] = [z["zone"] for z in zones if z["free_kb"] < z["min_kb"]]
    out["memalloc_sockets"] = [f"{s['local']}>{s['remote']}" for s in got.get("sockets") or [] if s.get("memalloc")]
    out["rx_empty"] = [f"{n['name']}/{q['queue']}" for n in got.get("nics") or [] for q in n.get("rx", [])
                       if q["free"] == q["size"]]
    return out
