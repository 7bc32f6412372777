"""Run tags: every resource we create carries `tb<6 hex>` so cleanup can find ours and only ours."""

from __future__ import annotations

import re
import secrets

TAG_RE = re.compile(r"^tb[0-9a-f]{6}$")
# Network namespaces of ours: the run's (its tag) and its hosted nodes' (<tag>-<node>: a netns NAS, a traffic host)
NETNS_RE = re.compile(r"^tb[0-9a-f]{6}(-[a-z0-9]{1,16})?$")
# QEMU -name of ours: tb<6 hex>-<role>
QEMU_NAME_RE = re.compile(r"^tb[0-9a-f]{6}-[a-z0-9-]+$")


def new_tag() -> str:
    return "tb" + secrets.token_hex(3)


def vm_name(tag: str, role: str) -> str:
    return f"{tag}-{role}"


def link_name(tag: str, suffix: str) -> str:
    """Interface names are at most 15 characters: tb123abc + '-' + up to 6."""
    name = f"{tag}-{suffix}"
    if len(name) > 15:
        raise ValueError(f"interface name {name!r} is longer than 15 characters")
    return name
