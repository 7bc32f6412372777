"""Evidence at a stall: sysrq `w` (blocked tasks) and `m` (memory) through QMP send-key, which needs
nothing from guest userspace, and the console text that follows, saved beside the verdict."""

from __future__ import annotations

import time
from pathlib import Path

from testbed.errors import GuestError
from testbed.store.history import History
from testbed.vm.machine import VM


def sysrq_dump(vm: VM, keys: str, out: Path, history: History, settle_s: float = 4.0) -> bool:
    """Send Alt+SysRq+<key> for each key, wait for the console, save what it printed. True if saved."""
    console = vm.spec.console
    start = console.stat().st_size if console.exists() else 0
    sent = []
    for key in keys:
        try:
            vm.qmp.sysrq(key)
            sent.append(key)
            history.add("evidence", "sysrq", vm=vm.name, key=key)
        except GuestError as e:
            history.add("evidence", "sysrq-failed", vm=vm.name, key=key, error=str(e))
        time.sleep(settle_s)
    if not sent or not console.exists():
        return False
    with open(console, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    out.write_text(text)
    history.add("evidence", "console-excerpt", vm=vm.name, file=out.name, bytes=len(text),
                blocked_tasks="Show Blocked State" in text)
    return bool(text.strip())
