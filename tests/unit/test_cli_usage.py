"""A bad command line is bad input: one line naming the command, exit 3 (128 under `run --bisect`, so
that `git bisect run` stops instead of marking the commit bad for our mistake)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


@pytest.mark.parametrize("argv,code,words", [
    (["run"], 3, "testbed run: error: the following arguments are required: files"),
    (["frob"], 3, "testbed: error: argument verb: invalid choice: 'frob'"),
    (["report", "latest", "--rows"], 3, "testbed report: error: argument --rows: expected one argument"),
    (["run", "--bisect"], 128, "testbed run: error: the following arguments are required: files"),
])
def test_usage_errors_are_one_line(argv: list[str], code: int, words: str) -> None:
    cp = subprocess.run([sys.executable, "-m", "testbed", *argv], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert cp.returncode == code
    assert cp.stderr.strip().count("\n") == 0 and words in cp.stderr and cp.stdout == ""
