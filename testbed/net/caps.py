"""What the host's kernel can do for our networks, asked without changing anything."""

from __future__ import annotations

import functools
import os
from pathlib import Path


@functools.cache
def netem_available() -> bool:
    """sch_netem loaded, built in, or present as a module for the running kernel."""
    if Path("/sys/module/sch_netem").exists():
        return True
    release = os.uname().release
    mods = Path("/lib/modules") / release
    for index in ("modules.builtin", "modules.dep"):
        try:
            if "sch_netem.ko" in (mods / index).read_text():
                return True
        except OSError:
            continue
    return False
