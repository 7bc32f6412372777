"""Guest shell snippets built from argv lists: the one place a guest command line is put together.

Prefer `VM.exec(argv)`. Where a shell is needed (several commands in one process start, a loop, a
redirection), either join argv lists here (every word quoted by shlex) or pass a constant script
and give it its values as positional arguments (`"$1"`), never formatted into the text.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Try:
    """A step whose failure is fine (e.g. removing what may not exist)."""

    argv: Sequence[str]


Step = Sequence[str] | Try


def script(*steps: Step) -> str:
    """Steps run in order, each only if the one before succeeded (a `Try` always counts as success)."""
    out = []
    for step in steps:
        if isinstance(step, Try):
            out.append(f"{{ {shlex.join(step.argv)}; }} 2>/dev/null || true")
        else:
            out.append(shlex.join(step))
    return " && ".join(out)
