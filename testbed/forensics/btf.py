"""The kernel's own BTF (the `__start_BTF`..`__stop_BTF` section of a kernel built with
CONFIG_DEBUG_INFO_BTF), read from a dump: struct sizes and member offsets, so a dump is readable without
the kernel's DWARF (drgn 0.3.0 reads no BTF itself). Only what offsets need is parsed."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

MAGIC = 0xEB9F
# BTF kinds (include/uapi/linux/btf.h)
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 12, 13, 14, 15, 16, 17, 18, 19
QUALIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)
# Bytes after the 12-byte common header, per kind: fixed, and per vlen entry.
_EXTRA = {INT: (4, 0), ARRAY: (12, 0), ENUM: (0, 8), FUNC_PROTO: (0, 8), VAR: (4, 0), DATASEC: (0, 12),
          DECL_TAG: (4, 0), ENUM64: (0, 12)}


class BtfError(Exception):
    pass


@dataclass
class BtfType:
    name: str
    kind: int
    size_or_type: int
    members: list[tuple[str, int, int]] = field(default_factory=list)  # (name, type id, bit offset)
    elem: tuple[int, int, int] | None = None  # ARRAY: (element type, index type, count)
    values: dict[str, int] = field(default_factory=dict)  # ENUM: name -> value


class Btf:
    def __init__(self, data: bytes, base: Btf | None = None):
        """The kernel's BTF, or with `base` a module's split BTF on top of it (its type ids continue the
        kernel's, and its string offsets the kernel's string section): a module's own structs first."""
        own, strings = parse(data, base.strings if base else b"")
        self.strings: bytes = (base.strings if base else b"") + strings
        self.types: list[BtfType] = (base.types if base else [BtfType("void", 0, 0)]) + own
        self.by_name: dict[str, int] = {}
        self.enumerators: dict[str, int] = {}
        first = len(self.types) - len(own)
        for i in [*range(first, len(self.types)), *range(1, first)]:
            t = self.types[i]
            if t.kind in (STRUCT, UNION) and t.name:
                self.by_name.setdefault(t.name, i)
            for name, value in t.values.items():
                self.enumerators.setdefault(name, value)

    def resolve(self, tid: int) -> int:
        while self.types[tid].kind in QUALIFIERS:
            tid = self.types[tid].size_or_type
        return tid

    def _member(self, tid: int, name: str) -> tuple[int, int] | None:
        """(bit offset, type id) of a member, looking inside anonymous structs and unions."""
        for mname, mtype, bits in self.types[self.resolve(tid)].members:
            if mname == name:
                return bits, mtype
            if mname == "":
                inner = self._member(mtype, name)
                if inner:
                    return bits + inner[0], inner[1]
        return None

    def offsetof(self, struct_name: str, path: str) -> int:
        """Byte offset of `a.b.c` in struct `struct_name`; an `x[n]` part indexes an array member."""
        bits = self.bit_offset(struct_name, path)
        if bits % 8:
            raise BtfError(f"{struct_name}.{path} is a bit field")
        return bits // 8

    def bit_offset(self, struct_name: str, path: str) -> int:
        """Bit offset of a member, bit fields included (icsk_ca_state)."""
        if struct_name not in self.by_name:
            raise BtfError(f"no struct {struct_name} in the kernel's BTF")
        tid, bits = self.by_name[struct_name], 0
        for part in path.split("."):
            name, _, index = part.partition("[")
            got = self._member(tid, name)
            if got is None:
                raise BtfError(f"no member {path} in struct {struct_name}")
            bits, tid = bits + got[0], got[1]
            if index:
                arr = self.types[self.resolve(tid)]
                if arr.elem is None:
                    raise BtfError(f"{struct_name}.{name} is not an array")
                tid = arr.elem[0]
                bits += int(index.rstrip("]")) * self.sizeof_id(tid) * 8
        return bits

    def sizeof_id(self, tid: int) -> int:
        t = self.types[self.resolve(tid)]
        if t.kind == PTR:
            return 8
        if t.kind == ARRAY and t.elem:
            return self.sizeof_id(t.elem[0]) * t.elem[2]
        return t.size_or_type

    def enum(self, name: str) -> int:
        """An enumerator's value (SOCK_MEMALLOC, TCP_ESTABLISHED ...)."""
        if name not in self.enumerators:
            raise BtfError(f"no enumerator {name} in the kernel's BTF")
        return self.enumerators[name]

    def sizeof(self, struct_name: str) -> int:
        if struct_name not in self.by_name:
            raise BtfError(f"no struct {struct_name} in the kernel's BTF")
        return self.types[self.by_name[struct_name]].size_or_type


def parse(data: bytes, base_strings: bytes = b"") -> tuple[list[BtfType], bytes]:
    """The types of a BTF blob (without the void type 0) and its string section. A split blob's string
    offsets below len(base_strings) name the base's strings."""
    if len(data) < 24:
        raise BtfError("no BTF (section too small)")
    magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data, 0)
    if magic != MAGIC:
        raise BtfError(f"no BTF (magic {magic:#x})")
    types = data[hdr_len + type_off: hdr_len + type_off + type_len]
    strs = data[hdr_len + str_off: hdr_len + str_off + str_len]

    def name(off: int) -> str:
        table = base_strings if off < len(base_strings) else strs
        off -= 0 if off < len(base_strings) else len(base_strings)
        return table[off:table.index(b"\0", off)].decode(errors="replace")

    out: list[BtfType] = []
    off = 0
    while off < len(types):
        name_off, info, size_or_type = struct.unpack_from("<III", types, off)
        off += 12
        kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        t = BtfType(name(name_off), kind, size_or_type)
        if kind in (STRUCT, UNION):
            for _ in range(vlen):
                mname, mtype, moff = struct.unpack_from("<III", types, off)
                off += 12
                t.members.append((name(mname), mtype, (moff & 0xFFFFFF) if kflag else moff))
        elif kind == ARRAY:
            t.elem = struct.unpack_from("<III", types, off)
            off += 12
        elif kind == ENUM:
            for _ in range(vlen):
                vname, value = struct.unpack_from("<Ii", types, off)
                off += 8
                t.values[name(vname)] = value
        else:
            fixed, each = _EXTRA.get(kind, (0, 0))
            off += fixed + each * vlen
        out.append(t)
    return out, strs
