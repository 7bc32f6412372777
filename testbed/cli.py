"""Command line: argument parsing and printing only; the work is done by the modules it calls."""
# The docstring above is also the description `testbed --help` prints. Each verb lives in testbed/commands/.

from __future__ import annotations

import argparse
import errno
import logging
import sys
import traceback
from typing import NoReturn

from testbed.host.cleanup import install_signal_handlers
from testbed.commands import (bench, bisect, clean, doctor, compare, image, index, inspect, judge, matrix, merge, node, report, run, search, show, validate, vm)
from testbed.commands.common import err
from testbed.errors import TestbedError

# In the order `testbed --help` lists them.
VERBS = (doctor, image, vm, clean, validate, run, bisect, matrix, search, report, show, inspect, judge, compare, index, merge, bench, node)


class Parser(argparse.ArgumentParser):
    """Bad command lines are bad input: one line naming the command and what is wrong, exit 3 (128 under
    `run --bisect`: `git bisect run` would read 3 as a bad commit; 128 stops it). Sub-parsers inherit it."""

    def error(self, message: str) -> NoReturn:
        err(f"{self.prog}: error: {message} (see `{self.prog} --help`)")
        raise SystemExit(128 if "--bisect" in sys.argv[1:] else 3)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="testbed", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="verb", required=True)
    for verb in VERBS:
        verb.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "--" in argv:  # everything after -- belongs to the guest command, never to our options
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1 :]
    args = parser().parse_args(argv)
    if hasattr(args, "command"):
        args.command = list(args.command) + rest
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # qemu.qmp logs every refused connection while QEMU starts; our errors say what matters.
    logging.getLogger("qemu.qmp").setLevel(logging.DEBUG if args.debug else logging.CRITICAL)
    install_signal_handlers()
    try:
        return int(args.func(args) or 0)
    except TestbedError as e:
        if args.debug:
            traceback.print_exc()
        err(f"testbed: error: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        err("testbed: interrupted; everything we started was stopped and removed")
        return 130
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        err(f"testbed: error: disk full ({e.strerror}) writing {e.filename or 'a results file'}: nothing more was "
            "recorded; earlier cases are intact")
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
