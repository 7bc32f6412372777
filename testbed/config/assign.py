"""`--set a.b=value` overrides and matrix axes: dotted paths assigned into parsed YAML before the
strict conversion, so an override is checked exactly like the file."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from testbed.config.strict import StrictLoader
from testbed.errors import ConfigError


def parse_overrides(overrides: list[str], source: str) -> dict[str, Any]:
    """`a.b.c=value` strings -> {path: value}; the value is read as YAML (3 is a number, [1,2] a list)."""
    out: dict[str, Any] = {}
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(source, f"--set {ov}", "must look like key.path=value")
        key, _, value = ov.partition("=")
        if not key.strip():
            raise ConfigError(source, f"--set {ov}", "must look like key.path=value")
        try:
            out[key.strip()] = yaml.load(value, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.constructor.ConstructorError as e:  # a duplicate key, a merge key: a mistake, not text
            raise ConfigError(source, f"--set {key.strip()}", f"not valid YAML: {e.problem}") from None
        except (yaml.YAMLError, ValueError, OverflowError):
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


SYSCTL_AXIS = "client.sysctl."
SYSCTL_DEFAULT = "default"  # a sysctl's value `default`: leave it at the kernel's own value


def fold_sysctls(base: dict[str, Any], assignments: dict[str, Any], source: str = "") -> dict[str, Any]:
    """`client.sysctl.<name>` assignments (from `--set` or a matrix axis; the name has dots, so it
    is one key of the client's `sysctl` mapping, not a path further down) folded into one
    `client.sysctl` mapping, on top of the base's sysctls (and of a `client.sysctl` assignment, if
    any); the value `default` removes the name, leaving the kernel's own value."""
    names = {k[len(SYSCTL_AXIS):]: v for k, v in assignments.items() if k.startswith(SYSCTL_AXIS)}
    if not names:
        return dict(assignments)
    out = {k: v for k, v in assignments.items() if not k.startswith(SYSCTL_AXIS)}
    client = base.get("client") if isinstance(base.get("client"), dict) else {}
    sysctl = out.get("client.sysctl", client.get("sysctl"))
    if sysctl is None:
        sysctl = {}
    if not isinstance(sysctl, dict):
        raise ConfigError(source, "client.sysctl", "must be a mapping of sysctl names to values")
    sysctl = dict(sysctl)
    for name, value in names.items():
        if value == SYSCTL_DEFAULT:
            sysctl.pop(name, None)
        elif isinstance(value, (dict, list)) or value is None:
            raise ConfigError(source, f"{SYSCTL_AXIS}{name}",
                              f"must be a plain value or {SYSCTL_DEFAULT!r}, not {value!r}")
        else:
            sysctl[name] = value
    out["client.sysctl"] = sysctl
    return out


def apply_assignments(data: dict[str, Any], assignments: dict[str, Any], source: str) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for key, value in assignments.items():
        set_path(out, key.split("."), value, source, key)
    return out
