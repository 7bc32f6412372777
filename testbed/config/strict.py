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


MAX_FILE_BYTES = 1 << 20  # a scenario, topology or matrix is a few KB; more is a wrong file


class StrictLoader(yaml.SafeLoader):
    """YAML that hides no mistake: a key given twice in one mapping is an error (PyYAML lets the last one
    win), and so are merge keys (`<<: *defaults`, whose fields silently lose to the mapping's own)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise yaml.constructor.ConstructorError(
                    None, None, "merge keys (<<) are not supported: write the fields out", key_node.start_mark)
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, f"a mapping key must be a plain value, not {type(key).__name__}",
                    key_node.start_mark) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice in one mapping (first on line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def parse_yaml_text(text: str, source: str) -> Any:
    """YAML text -> data with StrictLoader; any YAML problem is a ConfigError with its line."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(source, where, f"not valid YAML: {problem}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # e.g. a timestamp out of range
        raise ConfigError(source, "", f"not valid YAML: {e}") from None


def load_yaml(path: Path) -> Any:
    try:
        if path.is_dir():
            raise ConfigError(str(path), "", "is a folder, not a file")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(str(path), "", f"{size} bytes: too large for a scenario, topology or matrix "
                              f"(at most {MAX_FILE_BYTES}); is it the right file?")
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(str(path), "", f"cannot read: {e.strerror}") from None
    if b"\0" in raw:
        raise ConfigError(str(path), "", "not a text file (it holds NUL bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(str(path), f"line {line}", f"not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start})") from None
    return parse_yaml_text(text, str(path))


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
