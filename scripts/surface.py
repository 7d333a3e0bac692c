#!/usr/bin/env python
"""mpirun-ready entry point: ``mpiexec -n 4 python scripts/surface.py ...`` = ``landscape surface ...``."""

import sys

from landscape.cli import main

if __name__ == "__main__":
    sys.exit(main(["surface", *sys.argv[1:]]))
