"""Fault kinds: one module each (testbed/faults/<kind>.py) holding its spec dataclass, its
compatibility with the storage, and a `BaseFault` subclass with setup / inject / heal / teardown.
They are found by their `kind`, so adding a kind touches its module, its test and its scenario."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from testbed.config.strict import from_dict
from testbed.errors import ConfigError
from testbed.faults.base import BaseFault, FaultContext, FaultSpec, Step

__all__ = ["KINDS", "BaseFault", "FaultContext", "FaultSpec", "Step", "make", "parse_spec"]

def _discover() -> dict[str, type[BaseFault]]:
    """Every BaseFault subclass that names its kind, in the package's modules (sorted by kind)."""
    found: dict[str, type[BaseFault]] = {}
    for mod in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{mod.name}")
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, BaseFault) and value.__module__ == module.__name__
                    and "kind" in vars(value)):
                found[value.kind] = value
    return dict(sorted(found.items()))


KINDS: dict[str, type[BaseFault]] = _discover()


def parse_spec(value: Any, source: str, path: str) -> FaultSpec:
    """A scenario's fault entry -> its kind's spec (the kind picks the dataclass)."""
    if not isinstance(value, dict):
        raise ConfigError(source, path, "a fault must be a mapping with a kind")
    kind = value.get("kind")
    if kind not in KINDS:
        raise ConfigError(source, f"{path}.kind", f"must be one of {', '.join(KINDS)}, not {kind!r}")
    return from_dict(KINDS[kind].Spec, value, source, path)


def make(spec: FaultSpec) -> BaseFault:
    return KINDS[spec.kind](spec)
