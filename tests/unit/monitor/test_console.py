from pathlib import Path

from testbed.store.history import History
from testbed.monitor.console import ConsoleWatcher, scan_line

# Lines as the Debian 6.1 kernel prints them.
OOM = "[  812.331040] Out of memory: Killed process 231 (tb-work) total-vm:201000kB, anon-rss:61000kB, file-rss:0kB"
HUNG = "[  960.120000] INFO: task kswapd0:35 blocked for more than 120 seconds."
ALLOC = "[  700.000001] kworker/u2:1: page allocation failure: order:0, mode:0xa20(GFP_ATOMIC), nodemask=(null)"
SWAPERR = "[  333.1] Write-error on swap-device (0:45:1672)"


def test_patterns() -> None:
    assert [n for n, _ in scan_line(OOM)] == ["oom-kill"]
    assert scan_line(OOM)[0][1].groups() == ("231", "tb-work")
    assert [n for n, _ in scan_line(HUNG)] == ["hung-task"]
    assert [n for n, _ in scan_line(ALLOC)] == ["alloc-failure"]
    assert [n for n, _ in scan_line(SWAPERR)] == ["swap-write-error"]
    assert scan_line("[    1.0] virtio_net virtio1 eth0: renamed") == []


def test_watcher_reads_only_complete_new_lines(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    h = History(None)
    w = ConsoleWatcher("client", log, h)
    log.write_text("boot\n" + OOM + "\n" + SWAPERR[:10])
    w.poll()
    assert [e.name for e in h.events] == ["oom-kill"]
    with open(log, "a") as f:
        f.write(SWAPERR[10:] + "\n")
    w.poll()
    assert [e.name for e in h.events] == ["oom-kill", "swap-write-error"]
    w.poll()
    assert len(h.events) == 2


def test_tx_watchdog_is_a_finding() -> None:
    # the NAS's console during ipsec-ikev2.yaml, 2026-11-27: its NIC stopped sending
    line = "[  269.157040] virtio_net virtio2 eth0: NETDEV WATCHDOG: CPU: 0: transmit queue 0 timed out 30208 ms"
    assert [n for n, _ in scan_line(line)] == ["tx-timeout"]
    assert scan_line("[  269.157376] virtio_net virtio2 eth0: TX timeout on queue: 0, sq: output.0") == []
