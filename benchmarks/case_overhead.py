#!/usr/bin/env python3
"""A case's time, cold boots vs ready snapshots side by side: median seconds per phase, ready times, case wall /
workload wall and cases per hour (`testbed bench case [FILE] --runs N`; a matrix file runs each of its cases)."""
import sys

from testbed.cli import main

sys.exit(main(["bench", "case", *sys.argv[1:]]))
