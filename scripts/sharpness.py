#!/usr/bin/env python
"""mpirun-ready entry point: ``python scripts/sharpness.py ...`` = ``landscape sharpness ...`` (every rank computes
its share of the batches and gets the single-process values; rank 0 writes and prints)."""

import sys

from landscape.cli import main

if __name__ == "__main__":
    sys.exit(main(["sharpness", *sys.argv[1:]]))
