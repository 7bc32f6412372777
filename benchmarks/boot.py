#!/usr/bin/env python3
"""Boot the client 5 times: median and max boot-to-ready, and the warm image build time.

Same as `testbed bench boot`. Target under TCG: median <= 6 s at 128 MB; with real KVM <= 1.5 s.
"""
import sys

from testbed.cli import main

sys.exit(main(["bench", "boot", *sys.argv[1:]]))
