#!/usr/bin/env python
"""mpirun-ready entry point: ``python scripts/sharpness.py ...`` = ``landscape sharpness ...`` (rank 0 computes)."""

import sys

from landscape.cli import main

if __name__ == "__main__":
    sys.exit(main(["sharpness", *sys.argv[1:]]))
