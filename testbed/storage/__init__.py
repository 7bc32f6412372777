"""Storage protocols: one module each (testbed/storage/<name>.py, a `Storage` subclass), found by
name. The scenario's `storage:` section is made from them: each protocol's options dataclass
becomes the field `storage.<name>`, so adding a protocol touches its module and nothing here."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import field, make_dataclass
from typing import Annotated, Any

from testbed.check import frames
from testbed.config.strict import Parse
from testbed.errors import ConfigError, TestbedError
from testbed.storage.base import MOUNT, WORKFILE, Ends, Storage, use_block_device

__all__ = ["MOUNT", "WORKFILE", "Ends", "Storage", "use_block_device", "PROTOCOLS", "get", "register", "unregister",
           "StorageSpec"]


def _discover() -> dict[str, Storage]:
    """One object of every Storage subclass in the package's modules (sorted by name)."""
    found: dict[str, Storage] = {}
    for mod in pkgutil.iter_modules(__path__):
        if mod.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Storage) and value is not Storage and value.__module__ == module.__name__:
                found[value.name] = value()
    found = dict(sorted(found.items()))
    for s in found.values():  # the checker reads what each protocol declares, and names none itself
        frames.register(s.for_checker())
    return found


PROTOCOLS: dict[str, Storage] = _discover()


def get(name: str) -> Storage:
    return PROTOCOLS[name]


def register(s: Storage) -> None:
    """A protocol from outside this package (a test's fixture, a plugin): everything that reads protocols
    (scenario validation, the checker, doctor, the index, the NAS probes and the timeline) sees it. It can
    have no options section: `storage.<name>` fields are made once, from this package's modules."""
    if s.spec is not None:
        raise TestbedError(f"protocol {s.name}: options (storage.{s.name}) need its module in testbed/storage/")
    PROTOCOLS[s.name] = s
    frames.register(s.for_checker())


def unregister(name: str) -> None:
    """Forget a protocol registered from outside (tests)."""
    PROTOCOLS.pop(name, None)
    frames.unregister(name)


def _parse_protocol(value: Any, source: str, path: str) -> str:
    """storage.protocol: one of the protocols registered now."""
    if not isinstance(value, str) or value not in PROTOCOLS:
        raise ConfigError(source, path, f"must be one of {', '.join(PROTOCOLS)}, not {value!r}")
    return str(value)


def _validate_storage(self: Any, source: str, path: str) -> None:
    if self.swap_mb < 16:
        raise ConfigError(source, f"{path}.swap_mb", "must be at least 16 MB")


# storage: {protocol, swap_mb, and one options section per protocol that has options}
StorageSpec = make_dataclass(
    "StorageSpec",
    [("protocol", Annotated[str, Parse(_parse_protocol)],
      field(default="nfs", metadata={"doc": f"how the client reaches its storage (testbed/storage/<protocol>.py): "
                                            f"one of {', '.join(PROTOCOLS)}"})),
     ("swap_mb", int, field(default=256, metadata={"doc": "the swap area's size (a swap workload), at least 16"})),
     *[(name, s.spec, field(default_factory=s.spec)) for name, s in PROTOCOLS.items() if s.spec is not None]],
    frozen=True,
    namespace={"validate": _validate_storage, "__module__": __name__,
               "role": property(lambda self: PROTOCOLS[self.protocol])},
)
StorageSpec.__doc__ = "The scenario's storage section; `role` is the protocol's Storage object."
