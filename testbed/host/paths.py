"""Where the testbed keeps things: recipes (in the repo), the image cache, runtime sockets, results."""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The checkout holding images/, scenarios/ and topologies/ (override: TESTBED_HOME)."""
    env = os.environ.get("TESTBED_HOME")
    return Path(env) if env else Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """Built guest images and probe answers; survives between runs (override: TESTBED_CACHE)."""
    env = os.environ.get("TESTBED_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "netswap-testbed"


def runtime_dir() -> Path:
    """Per-run sockets and copy-on-write overlays; short paths because unix sockets need them."""
    return Path(os.environ.get("TESTBED_RUNTIME", "/run/netswap-testbed"))


def data_dir() -> Path:
    """Large per-run files that must be on disk, not in a tmpfs (a netns NAS's exports), one folder per
    run tag (override: TESTBED_DATA)."""
    return Path(os.environ.get("TESTBED_DATA", "/var/tmp/netswap-testbed"))


def results_dir() -> Path:
    return Path(os.environ.get("TESTBED_RESULTS", repo_root() / "results"))
