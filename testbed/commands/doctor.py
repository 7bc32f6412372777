"""`testbed doctor`: what this host has and lacks for running cases, with the command that fixes each gap."""

from __future__ import annotations

import argparse
import json

from testbed.host.doctor import Check, run_checks

MARK = {"ok": "ok  ", "warn": "warn", "missing": "MISS"}


def cmd_doctor(args: argparse.Namespace) -> int:
    def say(c: Check) -> None:
        if not args.json:
            print(f"[{MARK[c.status]}] {c.name}: {c.found}" + (f"\n        fix: {c.fix}" if c.fix and c.status != "ok" else ""),
                  flush=True)

    checks = run_checks(say)
    missing = [c for c in checks if c.status == "missing"]
    if args.json:
        print(json.dumps({"ok": not missing, "checks": [c.to_dict() for c in checks]}, indent=2))
    else:
        warns = sum(1 for c in checks if c.status == "warn")
        print(f"{len(checks)} checks: {len(missing)} missing, {warns} warnings" +
              ("" if not missing else " - cases cannot run until the missing pieces are installed"))
    return 1 if missing else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("doctor", help="check the host for what cases need, and say how to fix what is missing")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_doctor)
