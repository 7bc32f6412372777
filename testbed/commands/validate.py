"""`testbed validate`: parse scenario and matrix files strictly; touches nothing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from testbed.config.matrix import is_matrix_file, load_matrix
from testbed.config.scenario import Scenario, load_scenario
from testbed.kernels import ref as kernel_ref
from testbed.errors import ConfigError


def check_kernel_folders(sc: Scenario, source: str) -> None:
    """A path: kernel's folder must hold a kernel (read only; Debian kernels are fetched when a case runs,
    and every config is checked then, before any VM boots)."""
    for field, text in (("client.kernel", sc.client.kernel), ("nas.kernel", sc.nas.kernel)):
        if text.startswith("path:"):
            kernel_ref.parse(text, source, field)


def cmd_validate(args: argparse.Namespace) -> int:
    bad = 0
    for f in args.files:
        try:
            if is_matrix_file(Path(f)):
                m = load_matrix(Path(f))
                for c in m.cases:
                    check_kernel_folders(c.loaded.scenario, f"{f} case {c.id}")
                print(f"{f}: ok (matrix {m.spec.name}: {len(m.cases)} cases: {', '.join(c.id for c in m.cases[:4])}"
                      f"{' ...' if len(m.cases) > 4 else ''})")
                continue
            loaded = load_scenario(Path(f), args.set)
            sc = loaded.scenario
            check_kernel_folders(sc, f)
            wl = sc.workload
            what = (f"command {wl.argv[0]} ({wl.storage_use})" if wl.kind == "command"
                    else f"{wl.kind} {wl.total_mb(sc.client.mem_mb)} MB")
            print(f"{f}: ok ({sc.name}: {sc.storage.protocol}, client {sc.client.mem_mb} MB, "
                  f"workload {what}, topology {loaded.topology.name})")
            for w in sc.warnings():
                print(f"{f}: warning: {w}", file=sys.stderr)
        except ConfigError as e:
            bad += 1
            print(f"testbed: error: {e}", file=sys.stderr)
    return 3 if bad else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("validate", help="check scenario files; touches nothing")
    v.add_argument("files", nargs="+")
    v.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    v.set_defaults(func=cmd_validate)
