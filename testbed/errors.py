"""The testbed's error hierarchy: each error carries what the user needs to fix it.

The CLI prints one line per error and exits non-zero; `--debug` shows the trace.
"""

from __future__ import annotations


def one_line(text: str) -> str:
    """An error is one line: line breaks and other control characters (from a --set value, a file name)
    are shown escaped."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


class TestbedError(Exception):
    """Base of every error the testbed raises on purpose."""

    exit_code = 2


class ConfigError(TestbedError):
    """A scenario, topology, matrix or recipe file is wrong; names the file and field path."""

    exit_code = 3

    def __init__(self, source: str, field: str, message: str):
        self.source, self.field, self.message = source, field, message
        where = f"{source}: {field}" if field else source
        super().__init__(one_line(f"{where}: {message}"))


class KernelError(ConfigError):
    """The kernel a scenario names cannot run it: its folder lacks what a kernel needs, or its config an
    option the scenario needs. A bisection step skips such a kernel (exit 125) rather than judging it."""


class UsageError(TestbedError):
    """The command line asks for something that cannot be done."""

    exit_code = 3


class CommandError(TestbedError):
    """A host command failed; carries its argv, exit status and output."""

    def __init__(self, argv: list[str], status: int | None, stdout: str = "", stderr: str = "", hint: str = ""):
        self.argv, self.status, self.stdout, self.stderr, self.hint = argv, status, stdout, stderr, hint
        tail = (stderr or stdout).strip().splitlines()[-3:]
        what = "timed out" if status is None else f"exited {status}"
        msg = f"command {' '.join(argv[:6])}{' ...' if len(argv) > 6 else ''} {what}"
        if tail:
            msg += ": " + " | ".join(tail)
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class MissingToolError(TestbedError):
    """A host binary the testbed needs is not installed."""

    def __init__(self, tool: str, package: str):
        self.tool, self.package = tool, package
        super().__init__(f"{tool} not found on PATH: install it with `apt-get install {package}` "
                         "(`testbed doctor` checks everything a case needs)")


class ResultsDiskError(TestbedError):
    """The results folder's disk is full (or its quota spent): the case cannot be recorded."""


class GuestError(TestbedError):
    """A guest VM failed: did not boot, died, or its agent stopped answering."""


class AccelError(TestbedError):
    """The requested accelerator cannot run the guest kernel on this host."""


class ProbeError(TestbedError):
    """A probe's own machinery failed (its socket cannot be made or used): nothing about the NAS."""
