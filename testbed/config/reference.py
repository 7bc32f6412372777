"""The scenario reference (docs/scenario-reference.md), generated from the spec dataclasses themselves: every
field's path, type and default, and the comment its definition carries. Protocol options come from each
protocol's spec (testbed/storage/<name>.py) and fault fields from each kind's (testbed/faults/<kind>.py),
so a new protocol or fault kind shows up here without editing this file.

    python -m testbed.config.reference docs/scenario-reference.md     # rewrite the page
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import types
import typing
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from testbed import faults
from testbed.config.scenario import Scenario


@dataclass(frozen=True)
class Row:
    path: str
    type: str
    default: str
    doc: str


def _comments(cls: type) -> dict[str, str]:
    """field name -> the comment on its line, or on the comment lines just above it."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    above: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# ").strip())
            continue
        m = re.match(r"\s+([a-z_][a-z0-9_]*)\s*:", line)
        if m and not stripped.startswith(("def ", "return", "raise", "if ", "for ")):
            trailing = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            out.setdefault(m.group(1), " ".join([*above, trailing]).strip())
        above = []
    return out


def _type_text(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" if a is not None else "null" for a in typing.get_args(tp))
    if origin is typing.Annotated:
        return _type_text(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join("null" if a is type(None) else _type_text(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"list of {_type_text(args[0])}" if args else "list"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"mapping {_type_text(k)} -> {_type_text(v)}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is not MISSING:
        value = f.default
    elif f.default_factory is not MISSING:
        value = f.default_factory()
        if dataclasses.is_dataclass(value):
            return "(section)"
    else:
        return "required"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple | list):
        return f"`[{', '.join(map(str, value))}]`"
    if isinstance(value, dict):
        return f"`{value}`" if value else "`{}`"
    return f"`{value}`" if value != "" else '`""`'


def rows(cls: type, prefix: str = "", skip: tuple[str, ...] = ()) -> list[Row]:
    hints = typing.get_type_hints(cls, include_extras=True)
    docs = _comments(cls)
    for base in cls.__mro__[1:]:  # a field a subclass redefines without a comment keeps its base's
        if base is not object:
            docs = {**_comments(base), **{k: v for k, v in docs.items() if v}}
    out: list[Row] = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp, path = hints[f.name], f"{prefix}{f.name}"
        doc = f.metadata.get("doc") or docs.get(f.name, "")
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            own = (tp.__doc__ or "").split("\n")[0]
            out.append(Row(path, "section", "", doc or ("" if own.startswith(tp.__name__ + "(") else own)))
            out += rows(tp, path + ".")
            continue
        out.append(Row(path, _type_text(tp), _default(f), doc))
    return out


def _table(rs: list[Row]) -> list[str]:
    lines = ["| field | type | default | what it is |", "|---|---|---|---|"]
    lines += [f"| `{r.path}` | {r.type} | {r.default} | {r.doc.replace('|', '/')} |" for r in rs]
    return lines


def markdown() -> str:
    out = ["# Scenario reference", "",
           "Generated from the spec dataclasses (`python -m testbed.config.reference docs/scenario-reference.md`; "
           "a unit test fails when this page is stale). Every field is optional unless it says `required`; "
           "`--set PATH=VALUE` overrides any of them. How they fit together: [scenarios.md](scenarios.md).", "",
           "## The scenario", ""]
    out += _table(rows(Scenario, skip=("faults", "path")))
    out += ["", "## Faults", "",
            "`faults:` is a list; each entry's `kind` picks its fields (all kinds have `at_s`, seconds after the "
            "pressure phase starts, and `duration_s`, omitted for a fault that never heals).", ""]
    for kind, cls in faults.KINDS.items():
        spec = cls.Spec
        first = next((" ".join(d.strip().split("\n\n")[0].split()) for d in (cls.__doc__, spec.__doc__, sys.modules[cls.__module__].__doc__)
                      if d and not d.startswith(spec.__name__ + "(")), "")
        out += [f"### `{kind}`", "", first, ""] if first else [f"### `{kind}`", ""]
        out += _table(rows(spec, "faults[].", skip=("kind",))) + [""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    for name in sys.argv[1:]:
        Path(name).write_text(markdown())
