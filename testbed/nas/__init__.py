"""NAS backends, by the name `nas.backend` gives: one module each (testbed/nas/<module>.py, a `Backend`
subclass with its `Traits`), found by name as protocols and faults are. `vm`: kernel servers in a NAS VM;
`netns`: userspace servers on the host in a namespace of the run; `docker`: the same in a container.

The modules are read on first use, not at import: the scenario (which validates `nas.backend` here)
is imported by the modules that make a NAS."""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from testbed.errors import ConfigError, TestbedError
from testbed.nas.base import Backend, Nas, NasSetup, Traits

if TYPE_CHECKING:
    from testbed.config.scenario import Scenario

__all__ = ["Backend", "Nas", "NasSetup", "Traits", "names", "traits", "make", "register", "unregister", "parse"]

_BACKENDS: dict[str, type[Backend]] = {}
_found = False


def _discover() -> dict[str, type[Backend]]:
    global _found
    if not _found:
        for mod in pkgutil.iter_modules(__path__):
            if mod.name == "base":
                continue
            module = importlib.import_module(f"{__name__}.{mod.name}")
            for value in vars(module).values():
                if (isinstance(value, type) and issubclass(value, Backend) and value.__module__ == module.__name__
                        and "traits" in vars(value)):
                    _BACKENDS.setdefault(value.traits.name, value)
        _found = True
    return _BACKENDS


def names() -> list[str]:
    """The backends there are, in a stable order (the default first)."""
    found = _discover()
    return sorted(found, key=lambda n: (n != "vm", n))


def traits(name: str) -> Traits:
    return _discover()[name].traits


def make(sc: Scenario, tag: str) -> Backend:
    """The scenario's backend, for one case."""
    return _discover()[sc.nas.backend](sc, tag)


def register(cls: type[Backend]) -> None:
    """A backend from outside this package (a plugin, a test's fixture)."""
    if not isinstance(getattr(cls, "traits", None), Traits):
        raise TestbedError(f"NAS backend {cls.__name__}: no Traits")
    _discover()[cls.traits.name] = cls


def unregister(name: str) -> None:
    _discover().pop(name, None)


def parse(value: object, source: str, path: str) -> str:
    """nas.backend: one of the backends registered now."""
    if not isinstance(value, str) or value not in _discover():
        raise ConfigError(source, path, f"must be one of {', '.join(names())}, not {value!r}")
    return value
