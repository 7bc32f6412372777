"""The storage-path helper processes of a guest (iscsid, charon, udhcpc, rpc daemons ...): their
memory lock, swap, resident set and OOM protection, read at attach and again at a stall."""

from __future__ import annotations

from typing import Any

from testbed.errors import GuestError
from testbed.vm.machine import VM

# For each name given (a prefix of the process name, as the kernel shows it), every matching
# process: its pid and name, its VmLck/VmSwap/VmRSS lines and its oom_score_adj.
SCRIPT = ('for n in "$@"; do for p in $(pgrep "^$n"); do echo "pid $p $(cat /proc/$p/comm)";'
          " grep -E '^(VmLck|VmSwap|VmRSS):' /proc/$p/status; echo \"oom_score_adj $(cat /proc/$p/oom_score_adj)\";"
          " done; done")


def parse(text: str) -> list[dict[str, Any]]:
    """`pid 312 iscsid` / `VmLck:  13800 kB` / `oom_score_adj -1000` blocks -> one dict per process."""
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "pid" and parts[1].isdigit():
            out.append({"pid": int(parts[1]), "name": parts[2]})
        elif out and len(parts) >= 2 and parts[0].rstrip(":") in ("VmLck", "VmSwap", "VmRSS") and parts[1].isdigit():
            out[-1][f"{parts[0].rstrip(':')}_kB"] = int(parts[1])
        elif out and len(parts) == 2 and parts[0] == "oom_score_adj" and parts[1].lstrip("-").isdigit():
            out[-1]["oom_score_adj"] = int(parts[1])
    seen: set[int] = set()  # a process matched by two names is listed once
    return [p for p in out if not (p["pid"] in seen or seen.add(p["pid"]))]


def states(vm: VM, names: tuple[str, ...], timeout: float = 5) -> list[dict[str, Any]] | str:
    """The helpers' states, or why they could not be read (a starved guest may not start `sh`)."""
    names = tuple(n.replace(".", "\\.") for n in names if n != "tb-work")  # the workload is not a helper
    if not names:
        return []
    try:
        res = vm.sh(SCRIPT, timeout, check=False, args=list(names))
    except GuestError as e:
        return f"not readable: {e}"
    return parse(res.stdout)
