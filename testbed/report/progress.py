"""Live progress on the terminal: phases with elapsed time and the workload's percentage (rich),
or nothing but the verdict line (`--quiet`, `--json`)."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.table import Table

VERDICT_STYLE = {"recovered": "green", "unknown": "yellow"}


class Ui:
    """Progress reporter; `quiet` keeps only the verdict line."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.console = Console(file=stream or sys.stderr, highlight=False, soft_wrap=True)
        self.t0 = time.monotonic()
        self._last_pct = -1
        self._last_print = 0.0

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self.t0:7.1f}s]"

    def phase(self, case: str, name: str, detail: str = "") -> None:
        if not self.quiet:
            self.console.print(f"{self._stamp()} {case}: [bold]{name}[/bold] {detail}".rstrip())

    def note(self, case: str, msg: str) -> None:
        if not self.quiet:
            self.console.print(f"{self._stamp()} {case}: {msg}")

    def progress(self, case: str, done: int, total: int, detail: str = "") -> None:
        if self.quiet:
            return
        if not total:  # a command workload: no end is known, its progress is said every 10 s
            now = time.monotonic()
            if now - self._last_print > 10:
                self._last_print = now
                self.console.print(f"{self._stamp()} {case}: workload {detail}".rstrip())
            return
        pct = int(100 * done / total)
        now = time.monotonic()
        # a line per 5 % or per 10 s: readable in a CI log, alive on a terminal
        if pct // 5 != self._last_pct // 5 or now - self._last_print > 10:
            self._last_pct, self._last_print = pct, now
            self.console.print(f"{self._stamp()} {case}: workload {pct:3d}% ({done}/{total} pages) {detail}".rstrip())

    def verdict(self, case: str, verdict: str, expected: str | None, ok: bool, reasons: list[str], path: str) -> None:
        style = VERDICT_STYLE.get(verdict, "red")
        exp = f" (expected {expected})" if expected else ""
        mark = "ok" if ok else "FAIL"
        self.console.print(f"{case}: verdict [{style}]{verdict}[/{style}]{exp} {mark} - {'; '.join(reasons[:2])}",
                           soft_wrap=True)
        if not self.quiet:
            self.console.print(f"  evidence: {path}", soft_wrap=True)


def summary_table(cases: list[dict], stream=None) -> None:
    """One row per case: verdict and the figures that tell cases apart."""
    t = Table(title="cases", show_lines=False)
    for col in ("case", "verdict", "expected", "wall s", "swap out MB", "net tx MB", "dirty peak", "wb peak",
                "PFMemallocDrop", "allocstall", "recover s"):
        t.add_column(col, justify="left" if col in ("case", "verdict", "expected") else "right")
    for c in cases:
        f = c.get("figures", {})

        def v(key: str) -> str:
            x = f.get(key)
            return "-" if x is None else str(x)

        style = VERDICT_STYLE.get(c["verdict"], "red")
        t.add_row(c["case"], f"[{style}]{c['verdict']}[/{style}]", c.get("expected") or "", v("case_wall_s"),
                  v("swap_out_mb"), v("net_tx_mb"), v("nr_dirty_peak"), v("nr_writeback_peak"),
                  v("pfmemalloc_drop_peak"), v("allocstall"), v("time_to_recover_s"))
    Console(file=stream or sys.stderr, highlight=False, width=160).print(t)
