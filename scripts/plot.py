#!/usr/bin/env python
"""Entry point: ``python scripts/plot.py FILE.h5 ...`` = ``landscape plot FILE.h5 ...`` (under mpirun only
rank 0 draws)."""

import sys

from landscape.cli import main

if __name__ == "__main__":
    sys.exit(main(["plot", *sys.argv[1:]]))
