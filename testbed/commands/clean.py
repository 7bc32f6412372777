"""`testbed clean`: remove leftovers of earlier runs, ours only (found by tag)."""

from __future__ import annotations

import argparse
import shutil

from testbed.forensics import symbols
from testbed.host.leftovers import clean_leftovers
from testbed.vm import dump


def cmd_clean(args: argparse.Namespace) -> int:
    done = clean_leftovers(dry_run=args.dry_run)
    if args.dumps:
        kept = dump.cached()
        done += [f"memory dumps {f} ({dump.size_mb(f):.0f} MB)" for f in kept]
        if not args.dry_run:
            dump.prune(0)
    if args.symbols:
        for k in symbols.listing():
            done.append(f"kernel DWARF {k['path']} ({k['mb']} MB)")
            if not args.dry_run:
                shutil.rmtree(k["path"])
    verb = "would remove" if args.dry_run else "removed"
    for d in done:
        print(f"{verb} {d}")
    if not done:
        print("nothing of ours to clean")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("clean", help="remove leftovers of earlier runs (ours only, found by tag)")
    c.add_argument("--dry-run", action="store_true")
    c.add_argument("--dumps", action="store_true", help="also remove the kept memory dumps (docs/forensics.md)")
    c.add_argument("--symbols", action="store_true",
                   help="also remove the kernels' DWARF kept for reading dumps (fetched again on the next dump)")
    c.set_defaults(func=cmd_clean)
