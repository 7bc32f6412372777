"""`testbed judge RUN[/CASE]`: the checker again, as a pure function of each stored case folder;
`--write` replaces its verdict.json (the previous verdict kept inside) and its index row."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

from testbed import __version__

from testbed.store import index
from testbed.check import casefile
from testbed.check.verdict import is_ok, judge
from testbed.errors import TestbedError
from testbed.report.runs import find_case_path, resolve_run
from testbed.store.runs import write_atomic


def case_folders(ref: str) -> list[Path]:
    one = find_case_path(ref)
    if one:
        return [one]
    run = resolve_run(ref)
    return sorted(p.parent for p in run.glob("*/verdict.json") if not p.parent.name.endswith(".incomplete"))


def cmd_judge(args: argparse.Namespace) -> int:
    out = []
    failed = 0
    for folder in case_folders(args.ref):
        try:
            cf = casefile.load(folder)
        except (TestbedError, OSError, ValueError, KeyError) as e:  # one damaged folder does not stop the others
            failed += 1
            out.append({"case": str(folder), "error": str(e)})
            if not args.json:
                print(f"{folder}: cannot be judged: {e}")
            continue
        j = judge(cf.observations)
        old = cf.stored.get("verdict")
        row = {"case": str(folder), "stored": old, "verdict": j.verdict, "changed": j.verdict != old,
               "rule": j.rule, "reasons": j.reasons, "mechanism": j.mechanism.to_dict() if j.mechanism else None,
               "notes": cf.notes}
        out.append(row)
        if args.write:
            expected = cf.stored.get("expected")
            figures = {**cf.stored.get("figures", {}), **j.figures}
            new = {**cf.stored, "verdict": j.verdict, "rule": j.rule, "reasons": j.reasons, "figures": figures,
                   "mechanism": j.mechanism.to_dict() if j.mechanism else None,
                   "as_expected": is_ok(j.verdict, expected),
                   "rejudged": {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "testbed": __version__,
                                # the verdict as the run gave it, kept through later re-judgements
                                "previous": cf.stored.get("rejudged", {}).get("previous")
                                or {k: cf.stored.get(k) for k in ("verdict", "reasons")}, "notes": cf.notes}}
            write_atomic(folder / "verdict.json", json.dumps(new, indent=2, default=str) + "\n")
            index.add_case(folder, folder.parent.parent)
        if not args.json:
            mark = f"{old} -> {j.verdict}" if row["changed"] else f"{j.verdict} (as stored)"
            print(f"{folder}: {mark}")
            for r in j.reasons:
                print(f"  reason: {r}")
            for n in cf.notes:
                print(f"  judged from what the folder holds: {n}")
    if args.json:
        print(json.dumps({"cases": out}, indent=2))
    return 3 if failed else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    j = sub.add_parser("judge", help="judge stored cases again from their folders (RUN or RUN/CASE)")
    j.add_argument("ref", help="a run (id, path or `latest`) or one case folder")
    j.add_argument("--write", action="store_true", help="replace verdict.json (the previous verdict is kept in it)")
    j.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    j.set_defaults(func=cmd_judge)
