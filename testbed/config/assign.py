"""`--set a.b=value` overrides and matrix axes: dotted paths assigned into parsed YAML before the
strict conversion, so an override is checked exactly like the file."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from testbed.errors import ConfigError


def parse_overrides(overrides: list[str], source: str) -> dict[str, Any]:
    """`a.b.c=value` strings -> {path: value}; the value is read as YAML (3 is a number, [1,2] a list)."""
    out: dict[str, Any] = {}
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(source, f"--set {ov}", "must look like key.path=value")
        key, _, value = ov.partition("=")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def set_path(data: Any, parts: list[str], value: Any, source: str, label: str) -> None:
    """Assign at a dotted path; `*` walks every element of a list (or every value of a mapping)."""
    head, rest = parts[0], parts[1:]
    if head == "*":
        items = data if isinstance(data, list) else list(data.values()) if isinstance(data, dict) else None
        if not items:
            raise ConfigError(source, label, "* needs a non-empty list or mapping there")
        for item in items:
            if rest:
                set_path(item, rest, value, source, label)
        if not rest:
            raise ConfigError(source, label, "* cannot be the last part of a path")
        return
    if isinstance(data, list):
        if not head.isdigit() or int(head) >= len(data):
            raise ConfigError(source, label, f"{head!r} is not an index of a {len(data)}-element list")
        if rest:
            set_path(data[int(head)], rest, value, source, label)
        else:
            data[int(head)] = copy.deepcopy(value)
        return
    if not isinstance(data, dict):
        raise ConfigError(source, label, f"{head} is inside a value that is not a mapping")
    if not rest:
        data[head] = copy.deepcopy(value)
        return
    if data.get(head) is None:
        data[head] = {}
    set_path(data[head], rest, value, source, label)


def apply_assignments(data: dict[str, Any], assignments: dict[str, Any], source: str) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for key, value in assignments.items():
        set_path(out, key.split("."), value, source, key)
    return out
