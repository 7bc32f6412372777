#!/usr/bin/env python3
"""100 short cases (scenarios/soak.yaml) back to back in one testbed process: after each, nothing of ours
may remain (namespaces, taps, QEMU, nftables, containers, mounts, runtime folders, helper processes), and
open files, threads, RSS and the host's available memory must stay flat. Same as `testbed bench soak`.
"""
import sys

from testbed.cli import main

sys.exit(main(["bench", "soak", *sys.argv[1:]]))
