#!/usr/bin/env python
"""mpirun-ready entry point: ``python scripts/track.py ...`` = ``landscape track ...`` (each rank computes whole
checkpoints of the series; rank 0 writes and prints)."""

import sys

from landscape.cli import main

if __name__ == "__main__":
    sys.exit(main(["track", *sys.argv[1:]]))
