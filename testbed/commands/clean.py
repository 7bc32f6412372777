"""`testbed clean`: remove leftovers of earlier runs, ours only (found by tag)."""

from __future__ import annotations

import argparse

from testbed.host.leftovers import clean_leftovers


def cmd_clean(args: argparse.Namespace) -> int:
    done = clean_leftovers(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for d in done:
        print(f"{verb} {d}")
    if not done:
        print("nothing of ours to clean")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("clean", help="remove leftovers of earlier runs (ours only, found by tag)")
    c.add_argument("--dry-run", action="store_true")
    c.set_defaults(func=cmd_clean)
