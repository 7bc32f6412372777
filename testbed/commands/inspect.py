"""`testbed inspect RUN/CASE`: a case's memory dump, for a person (drgn's interactive prompt, with the
testbed's reader at hand) or read again into its forensics.json (`--read`: after a reader was added or
improved, without running the case again)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from testbed import forensics
from testbed.check import casefile
from testbed.errors import UsageError
from testbed.forensics import read, show, symbols
from testbed.report.runs import find_case_path
from testbed.vm import dump as guest_dump


def recorded(case: Path, kind: str, name: str) -> list[dict[str, Any]]:
    """The records of one kind and name in a case's history (its events.jsonl), in order."""
    out = []
    path = case / "events.jsonl"
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("kind") == kind and row.get("name") == name:
            out.append(row)
    return out


def dumps_recorded(case: Path) -> list[dict[str, Any]]:
    return recorded(case, "evidence", "memory-dump")


def kernel_of(case: Path, verdict: dict[str, Any], vm: str) -> tuple[dict[str, Any], str]:
    """The kernel a VM of the case ran: the client's from its `kernel` fact, the NAS's from its image."""
    if vm != "client":
        return symbols.of_image((verdict.get("images") or {}).get(vm) or {})
    facts = recorded(case, "fact", "kernel")
    source = facts[-1].get("source") if facts else None
    return (source if isinstance(source, dict) else {}), str(verdict.get("kernel") or "")


def debug_files(source: dict[str, Any], release: str) -> tuple[list[Path], str]:
    """The kernel's DWARF for that kernel, fetched on first need (progress on stderr)."""
    if not source:
        return [], "the case names no kernel source"
    return symbols.ensure(source, release, lambda m: print(m, file=sys.stderr, flush=True))


def the_dump(case: Path, which: str | None, vm: str = "client") -> tuple[Path, str]:
    """The dump of `vm` to open (the last one taken, or the one whose moment is `which`) and its moment."""
    recorded = [r for r in dumps_recorded(case) if r.get("vm", "client") == vm]
    found = [p for p in guest_dump.of_case(case, recorded) if p.name.startswith(f"{vm}-")]
    if not found:
        taken = [r for r in recorded if r.get("path")]
        why = ("the case took no memory dump (evidence.dump, or nothing failed)" if not recorded else
               "its dumps are gone from the cache (bounded to "
               f"{guest_dump.KEEP_MB} MB; `testbed run --keep-dumps` keeps them in the case folder)" if taken else
               "every dump it tried failed: " + "; ".join(str(r.get("error")) for r in recorded))
        raise UsageError(f"{case}: no memory dump of the {vm} to open: {why}")
    if which:
        found = [p for p in found if p.stem == f"{vm}-{which}"]
        if not found:
            raise UsageError(f"{case}: no dump taken at '{which}' (taken: "
                             f"{', '.join(str(r.get('why')) for r in recorded)})")
    path = found[-1]
    return path, path.stem.removeprefix(f"{vm}-")


def cmd_inspect(args: argparse.Namespace) -> int:
    case = find_case_path(args.ref)
    if case is None:
        raise UsageError(f"no complete case at {args.ref}")
    vm = "nas" if args.nas else "client"
    path, why = the_dump(case, args.at, vm)
    verdict = json.loads((case / "verdict.json").read_text())
    if args.read:
        sc = casefile.case_scenario(case)
        if sc is None:
            raise UsageError(f"{case}/scenario.yaml: missing or no longer valid: the protocol's reader is unknown")
        protocol = sc.storage.role if vm == "client" else None  # the protocol's reader is the client side's
        source, release = kernel_of(case, verdict, vm)
        got = forensics.read_dump(path, release or None, protocol, debug_files(source, release))
        file = case / (forensics.FILE if vm == "client" else forensics.NAS_FILE)
        record = json.loads(file.read_text()).get("dump") if file.exists() else None
        file.write_text(json.dumps({**got, "dump": record or {"path": str(path)}, "why": why},
                                                      indent=2, default=str) + "\n")
        if args.json:
            print(json.dumps({**got, "why": why}, indent=2, default=str))
        else:
            print("\n".join(show.state_lines({**got, "why": why}, "client" if vm == "client" else "NAS")))
            print(f"written: {file}")
        return 0
    return interactive(path, why, case, debug_files(*kernel_of(case, verdict, vm)))


def interactive(path: Path, why: str, case: Path, debug: tuple[list[Path], str]) -> int:
    """drgn's prompt on the dump: `prog` (drgn's Program, kallsyms and the module symbols loaded) and `dump`
    (testbed/forensics/read.py's Dump: `dump.btf`, `dump.module_btf(name)`, `dump.off(struct, field)`,
    `dump.u64(addr)`...) with the parts' readers (`tasks(dump)`, `memory(dump)`, `sockets(dump)`, `nics(dump)`)."""
    import drgn.cli  # the interactive prompt only: drgn is imported where a dump is read, never at start

    try:
        d = read.Dump(path, debug[0])
    except read.Unreadable as e:
        raise UsageError(f"{path}: {e}") from None

    def banner(text: str) -> str:
        dwarf = f"DWARF: {debug[1]}" if d.dwarf else f"no DWARF ({debug[1]}): kallsyms and BTF"
        return (f"{text}\n{case.name}: the client's memory at the {why} ({path}); {dwarf}.\n"
                "dump: the testbed's reader (dump.btf, dump.module_btf('sunrpc'), dump.off('sock', 'sk_rcvbuf'), "
                "dump.u64(addr)); tasks(dump), memory(dump), sockets(dump), nics(dump): forensics.json's parts")

    def more(g: dict[str, Any]) -> dict[str, Any]:
        return {**g, "dump": d, **read.PARTS}

    drgn.cli.run_interactive(d.prog, banner_func=banner, globals_func=more)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="a case's memory dump: drgn's prompt on it, or --read it again into forensics.json")
    p.add_argument("ref", metavar="RUN/CASE")
    p.add_argument("--read", action="store_true", help="read the dump again into the case's forensics.json and print it")
    p.add_argument("--at", metavar="MOMENT", help="the dump taken at this moment (stall, no-answer, finished); default: the last")
    p.add_argument("--nas", action="store_true", help="the NAS VM's dump (taken where the NAS side was suspect)")
    p.add_argument("--json", action="store_true", help="with --read: print what was read as JSON")
    p.set_defaults(func=cmd_inspect)
