#!/usr/bin/env python
"""Flush cost: time to write 10 new points into a 51² surface file and into a 201³ volume file.

    python benchmarks/bench_flush.py          # ~30 s

Each file is made by :func:`landscape.store.create_surface_file` (the layout ``landscape surface`` writes:
two metrics and the done mask, chunked) and filled by :class:`landscape.store.GridStore` as a run does.
A flush of ``--points`` new random points (values, then the mask) is timed ``--repeats`` times on each
file (fresh points each time, the two files interleaved); the fastest is compared (the machine may be
shared; the median is shown too). The target: the 201³ flush within 2× the 51² one,
i.e. a flush costs in proportion to the points it adds, not to the grid. For scale, the last column is
the time of the previous design, which rewrote every dataset whole at each flush.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: _common
import _common  # noqa: E402, F401 - puts this repository first on sys.path

from landscape.directions import Directions  # noqa: E402
from landscape.store import GridStore, create_surface_file  # noqa: E402

METRICS = ["train_loss", "train_acc"]


def make_file(path: str, shape: tuple[int, ...]) -> GridStore:
    coords = tuple(np.linspace(-1, 1, n) for n in shape)
    center = {"w": torch.zeros(4)}
    dirs = Directions(center, [{"w": torch.ones(4)} for _ in shape], "weights", [{} for _ in shape])
    lock = create_surface_file(path, attrs={}, identity={}, coords=coords, directions=dirs, metrics=METRICS)
    return GridStore(path, [f"surfaces/{m}" for m in METRICS], "surfaces/done", shape, flush_every=1e9, lock=lock)


def full_rewrite(path: str, idx: np.ndarray, shape: tuple[int, ...]) -> float:
    """The previous flush: read every dataset whole, set the points, write it whole (values, then mask)."""
    t = time.perf_counter()
    with h5py.File(path, "r+", locking=False) as f:
        for m in METRICS:
            ds = f[f"surfaces/{m}"]
            flat = np.asarray(ds[()]).reshape(-1)
            flat[idx] = 1.0
            ds[...] = flat.reshape(shape)
        f.flush()
        done = np.asarray(f["surfaces/done"][()]).reshape(-1)
        done[idx] = 1
        f["surfaces/done"][...] = done.reshape(shape)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args(argv)
    rows = []
    shapes = ((51, 51), (201, 201, 201))
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, "x".join(map(str, shape)) + ".h5") for shape in shapes]
        stores = [make_file(path, shape) for path, shape in zip(paths, shapes)]
        rng = np.random.default_rng(0)
        times: list[list[float]] = [[] for _ in shapes]
        for _ in range(args.repeats):  # interleaved: both grids see the same moments of a shared machine
            for store, ts in zip(stores, times):
                idx = rng.choice(np.flatnonzero(~store.done), size=args.points, replace=False)
                store.add(idx, {m: rng.normal(size=args.points) for m in METRICS})
                t = time.perf_counter()
                store.flush()
                ts.append(time.perf_counter() - t)
        for store, path, shape, ts in zip(stores, paths, shapes, times):
            store.close()
            n = int(np.prod(shape))
            with h5py.File(path, "r", locking=False) as f:
                assert int(np.asarray(f["surfaces/done"][()]).sum()) == args.points * args.repeats
                chunks = f["surfaces/train_loss"].chunks
            old = min(full_rewrite(path, rng.integers(0, n, args.points), shape) for _ in range(3))
            rows.append((shape, n, chunks, min(ts), float(np.median(ts)), old, os.path.getsize(path)))
    print(f"| grid | points | chunk | file (MB) | flush of {args.points} new points, best (ms) | median (ms) "
          "| whole-dataset rewrite, best of 3 (ms) |")
    print("|---|---|---|---|---|---|---|")
    for shape, n, chunks, best, med, old, size in rows:
        layout = "×".join(map(str, chunks)) if chunks else "contiguous"
        print(f"| {'×'.join(map(str, shape))} | {n:,} | {layout} | {size / 2**20:.1f} | "
              f"{1e3 * best:.2f} | {1e3 * med:.2f} | {1e3 * old:.1f} |")
    ratio, ratio_med = rows[1][3] / rows[0][3], rows[1][4] / rows[0][4]
    print(f"\nflush time 201³ ÷ 51² = {ratio:.2f} best, {ratio_med:.2f} median (target ≤ 2: "
          f"{'PASS' if ratio <= 2 else 'MISS'}); the whole-dataset rewrite: {rows[1][5] / rows[0][5]:.0f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
