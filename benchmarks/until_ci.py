#!/usr/bin/env python3
"""Case-minutes an adaptive matrix run (`testbed matrix FILE --until-ci W`) saved against fixed repeats of
the same cells, read from the run's folders. Same as `testbed bench until-ci RUN`."""
import sys

from testbed.cli import main

sys.exit(main(["bench", "until-ci", *sys.argv[1:]]))
