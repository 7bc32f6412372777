#!/usr/bin/env python3
"""Time to write the HTML report of a 300-case run built from copies of the committed case folders.
Same as `testbed bench html --cases 300`."""
import sys

from testbed.cli import main

sys.exit(main(["bench", "html", *sys.argv[1:]]))
