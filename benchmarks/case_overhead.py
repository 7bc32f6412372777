#!/usr/bin/env python3
"""Runs the shipped NFS scenario 3 times: median of case wall time / workload wall time (target <= 1.5),
and swap MB/s beside iperf3 MB/s over the same client-NAS path. Same as `testbed bench case`."""
import sys

from testbed.cli import main

sys.exit(main(["bench", "case", *sys.argv[1:]]))
