"""What each protocol tells the checker about itself. The protocol modules (testbed/storage/<name>.py)
declare it and the protocol registry registers it when it loads; the checker reads it here and names no
protocol of its own:
- the stack-frame classes of the protocol's kernel code (a blocked task inside them waits on the storage),
- what its waits go to as a mechanism sentence says it (its RPC layer, "block device"),
- the client daemons its path depends on, by their kernel names (prefixes, as pgrep matches them).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FrameClass:
    name: str  # the class a blocked task gets (the protocol's own name for its layer)
    frames: tuple[str, ...]  # regular expressions a whole frame name must match
    describes: str


@dataclass(frozen=True)
class ProtocolFrames:
    protocol: str
    storage_kind: str  # what the waits go to, in a mechanism's sentence
    classes: tuple[FrameClass, ...] = ()
    helpers: tuple[str, ...] = ()  # client daemons on the path, by kernel name


@dataclass(frozen=True)
class HelperLock:
    """What a protocol's client daemon had locked at attach and how the OOM killer sees it (attach facts'
    `helper_locks`): a daemon the path needs must be memory-locked (VmLck > 0) and not OOM-killable."""

    name: str
    vmlck_kb: int | None
    oom_score_adj: int | None

    @property
    def locked(self) -> bool:
        return isinstance(self.vmlck_kb, int) and self.vmlck_kb > 0

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "vmlck_kb": self.vmlck_kb, "oom_score_adj": self.oom_score_adj}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> HelperLock:
        kb, adj = d.get("vmlck_kb"), d.get("oom_score_adj")
        return cls(str(d.get("name")), kb if isinstance(kb, int) else None, adj if isinstance(adj, int) else None)


_REGISTRY: dict[str, ProtocolFrames] = {}


def register(p: ProtocolFrames) -> None:
    _REGISTRY[p.protocol] = p


def unregister(protocol: str) -> None:
    _REGISTRY.pop(protocol, None)


def protocols() -> tuple[ProtocolFrames, ...]:
    return tuple(_REGISTRY.values())


def frame_classes() -> tuple[FrameClass, ...]:
    return tuple(c for p in _REGISTRY.values() for c in p.classes)


def kind_of_class(name: str) -> str | None:
    return next((p.storage_kind for p in _REGISTRY.values() for c in p.classes if c.name == name), None)


def kind_of_protocol(protocol: str) -> str | None:
    p = _REGISTRY.get(protocol.lower())
    return p.storage_kind if p else None


def helpers() -> tuple[str, ...]:
    return tuple(h for p in _REGISTRY.values() for h in p.helpers)
