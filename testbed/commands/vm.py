"""`testbed vm exec`: boot one guest, run one command through the agent, shut down."""

from __future__ import annotations

import argparse
import shlex
import sys

from testbed.commands.common import err
from testbed.errors import UsageError
from testbed.vm import oneshot


def cmd_vm_exec(args: argparse.Namespace) -> int:
    command = list(args.command)
    if not command and not args.show_command:
        raise UsageError("vm exec needs a command after --, e.g. `testbed vm exec client -- uname -r`")
    req = oneshot.OneShot(args.role, args.mem, args.vcpus, args.accel, tuple(command), args.timeout)
    if args.show_command:
        print(shlex.join(oneshot.show_command(req, err)))
        return 0
    res, _ = oneshot.run(req, err)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    if res.timed_out:
        err(f"testbed: the command timed out after {args.timeout:.0f} s in the guest")
        return 124
    return res.status if res.status >= 0 else 128 - res.status


def add_parser(sub: argparse._SubParsersAction) -> None:
    vm = sub.add_parser("vm", help="boot a guest").add_subparsers(dest="vm_verb", required=True)
    e = vm.add_parser("exec", help="boot a guest, run one command through the agent, shut down")
    e.add_argument("role", choices=["client", "nas"])
    e.add_argument("--mem", type=int, default=128, help="VM RAM in MB (QEMU -m)")
    e.add_argument("--vcpus", type=int, default=1)
    e.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    e.add_argument("--timeout", type=float, default=120, help="seconds the command may run in the guest")
    e.add_argument("--show-command", action="store_true", help="print the QEMU argv and run nothing")
    # main() appends everything after `--` to this list, so guest options never reach our parser.
    e.add_argument("command", nargs="*", help="after --: the command to run in the guest")
    e.set_defaults(func=cmd_vm_exec)
