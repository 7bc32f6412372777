"""Strict conversion of parsed YAML into frozen dataclasses.

Unknown keys, wrong types and bad literals raise ConfigError naming the file and the field path
(`storage.nfs.version`), so every config error points at what to edit.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from testbed.errors import ConfigError

T = TypeVar("T")


def load_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(str(path), "", f"cannot read: {e.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(str(path), where, f"not valid YAML: {problem}") from None


@dataclasses.dataclass(frozen=True)
class Parse:
    """`Annotated[Base, Parse(fn)]`: fn(value, source, path) builds the value (e.g. a fault's kind
    picks its spec dataclass)."""

    fn: typing.Callable[[Any, str, str], Any]


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def convert(tp: Any, value: Any, source: str, path: str) -> Any:
    """Convert `value` to type `tp`, raising ConfigError(source, path, ...) on mismatch."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Annotated:
        parse = next((a for a in args[1:] if isinstance(a, Parse)), None)
        return parse.fn(value, source, path) if parse else convert(args[0], value, source, path)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in args:
            if arm is type(None):
                continue
            try:
                return convert(arm, value, source, path)
            except ConfigError as e:
                errors.append(e.message)
        raise ConfigError(source, path, " or ".join(dict.fromkeys(errors)))
    if origin is Literal:
        if value in args or (isinstance(value, (int, float)) and str(value) in args):
            return value if value in args else str(value)
        raise ConfigError(source, path, f"must be one of {', '.join(map(str, args))}, not {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(source, path, f"must be a list, not {type(value).__name__}")
        item = args[0] if args else Any
        return tuple(convert(item, v, source, _join(path, i)) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, path, f"must be a mapping, not {type(value).__name__}")
        kt, vt = args or (Any, Any)
        return {convert(kt, k, source, path): convert(vt, v, source, _join(path, str(k))) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, path, f"must be true or false, not {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, path, f"must be an integer, not {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(source, path, f"must be a number, not {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(source, path, f"must be a string, not {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def from_dict(cls: type[T], data: Any, source: str, path: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and missing required fields are errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, path or "(top)", f"must be a mapping, not {type(data).__name__}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if str(k).replace("-", "_") not in fields]
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(source, _join(path, str(unknown[0])), f"unknown field (known: {known})")
    kwargs = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        kwargs[name] = convert(hints[name], value, source, _join(path, name))
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(source, _join(path, missing[0]), "required field is missing")
    try:
        obj = cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(source, path or "(top)", str(e)) from None
    check = getattr(obj, "validate", None)
    if check:
        check(source, path)
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain data for YAML/JSON (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
