#!/usr/bin/env python
"""mpirun-ready entry point: ``mpiexec -n 4 python scripts/interpolate.py ...`` = ``landscape interpolate ...``."""

import sys

from landscape.cli import main

if __name__ == "__main__":
    sys.exit(main(["interpolate", *sys.argv[1:]]))
