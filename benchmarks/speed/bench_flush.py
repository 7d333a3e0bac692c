#!/usr/bin/env python
"""Flush cost: time to write 10 new points into a 51² surface file and into a 201³ volume file.

    python benchmarks/bench_flush.py          # ~30 s

Each file is made by :func:`landscape.store.create_surface_file` (the layout ``landscape surface`` writes:
two metrics and the done mask, chunked) and filled by :class:`landscape.store.GridStore` as a run does
(each new value written as raw bytes at its place in the file, the mask last).
A flush of ``--points`` new random points (values, then the mask) is timed ``--repeats`` times on each
file (fresh points each time, the two files interleaved); the fastest is compared (the machine may be
shared; the median is shown too). The target: the 201³ flush within 2× the 51² one,
i.e. a flush costs in proportion to the points it adds, not to the grid. For scale, the last two columns
are the earlier designs: one HDF5 point-selection write per dataset through a file reopened at each flush
(it reads and rewrites every chunk a point falls in), and a rewrite of every dataset whole.
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
from landscape.store import GridStore, create_surface_file, write_points  # noqa: E402

METRICS = ["train_loss", "train_acc"]


def make_file(path: str, shape: tuple[int, ...]) -> GridStore:
    coords = tuple(np.linspace(-1, 1, n) for n in shape)
    center = {"w": torch.zeros(4)}
    dirs = Directions(center, [{"w": torch.ones(4)} for _ in shape], "weights", [{} for _ in shape])
    lock = create_surface_file(path, attrs={}, identity={}, coords=coords, directions=dirs, metrics=METRICS)
    return GridStore(path, [f"surfaces/{m}" for m in METRICS], "surfaces/done", shape, flush_every=1e9, lock=lock)


def new_points(rng: np.random.Generator, done: np.ndarray, k: int) -> np.ndarray:
    """``k`` random points not done yet, drawn in O(k) (no pass over the grid between two timed flushes: a scan
    of an 8M-point mask would leave the caches cold for the flush that follows, a cost no run pays)."""
    out: list[int] = []
    while len(out) < k:
        i = int(rng.integers(0, done.size))
        if not done[i] and i not in out:
            out.append(i)
    return np.asarray(out, dtype=np.int64)


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


def hdf5_points(path: str, idx: np.ndarray) -> float:
    """The previous flush: the file reopened, one HDF5 point-selection write per dataset (values, then mask)."""
    t = time.perf_counter()
    with h5py.File(path, "r+", locking=False) as f:
        for m in METRICS:
            write_points(f[f"surfaces/{m}"], idx, np.ones(len(idx)))
        f.flush()
        write_points(f["surfaces/done"], idx, np.ones(len(idx), np.uint8))
    return time.perf_counter() - t


def os_floor(path: str, rng: np.random.Generator, words: int) -> float:
    """The operating system's share: ``words`` 8-byte writes at random places of the file, each putting back the
    bytes that are there (the file is unchanged), through a descriptor like the run's."""
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDWR)
    try:
        offs = rng.integers(0, size - 8, words)
        data = [os.pread(fd, 8, int(o)) for o in offs]
        t = time.perf_counter()
        for o, d in zip(offs, data):
            os.pwrite(fd, d, int(o))
        return time.perf_counter() - t
    finally:
        os.close(fd)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args(argv)
    k = args.points
    rows = []
    shapes = ((51, 51), (201, 201, 201))
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, "x".join(map(str, shape)) + ".h5") for shape in shapes]
        stores = [make_file(path, shape) for path, shape in zip(paths, shapes)]
        rng = np.random.default_rng(0)
        times = [{"random": [], "run": [], "floor": []} for _ in shapes]
        cursor = [0 for _ in shapes]
        for _ in range(args.repeats):  # interleaved: both grids see the same moments of a shared machine
            for j, (store, path, ts) in enumerate(zip(stores, paths, times)):
                for kind in ("random", "run"):
                    if kind == "random":
                        idx = new_points(rng, store.done, k)
                    else:  # the next k points of the run's order (a run flushes whole chunks of its todo list)
                        idx = []
                        while len(idx) < k:
                            if not store.done[cursor[j]]:
                                idx.append(cursor[j])
                            cursor[j] += 1
                        idx = np.asarray(idx, dtype=np.int64)
                    store.add(idx, {m: rng.normal(size=k) for m in METRICS})
                    t = time.perf_counter()
                    store.flush()
                    ts[kind].append(time.perf_counter() - t)
                ts["floor"].append(os_floor(path, rng, 3 * k))
        for store, path, shape, ts in zip(stores, paths, shapes, times):
            store.close()
            n = int(np.prod(shape))
            with h5py.File(path, "r", locking=False) as f:
                assert int(np.asarray(f["surfaces/done"][()]).sum()) == 2 * k * args.repeats
                chunks = f["surfaces/train_loss"].chunks
            pts = min(hdf5_points(path, rng.integers(0, n, k)) for _ in range(args.repeats))
            old = min(full_rewrite(path, rng.integers(0, n, k), shape) for _ in range(3))
            rows.append(dict(shape=shape, n=n, chunks=chunks, size=os.path.getsize(path), pts=pts, old=old,
                             **{kind: (min(v), float(np.median(v))) for kind, v in ts.items()}))
    print(f"| grid | points | chunk | file (MB) | flush of {k} random new points, best / median (ms) "
          f"| flush of {k} new points in a run's order, best (ms) | OS floor: {3 * k} random 8-byte pwrites (ms) "
          "| before: HDF5 point writes, file reopened (ms) | before that: whole-dataset rewrite (ms) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        layout = "×".join(map(str, r["chunks"])) if r["chunks"] else "contiguous"
        print(f"| {'×'.join(map(str, r['shape']))} | {r['n']:,} | {layout} | {r['size'] / 2**20:.1f} | "
              f"{1e3 * r['random'][0]:.2f} / {1e3 * r['random'][1]:.2f} | {1e3 * r['run'][0]:.2f} | "
              f"{1e3 * r['floor'][0]:.2f} | {1e3 * r['pts']:.2f} | {1e3 * r['old']:.1f} |")
    small, big = rows
    ratio = big["random"][0] / small["random"][0]
    own = (big["random"][0] - big["floor"][0]) / max(small["random"][0] - small["floor"][0], 1e-9)
    print(f"\nflush time 201³ ÷ 51², best: random points {ratio:.2f} (target ≤ 2: {'PASS' if ratio <= 2 else 'MISS'}), "
          f"median {big['random'][1] / small['random'][1]:.2f}; in a run's order "
          f"{big['run'][0] / small['run'][0]:.2f}; the OS floor alone {big['floor'][0] / small['floor'][0]:.2f}; "
          f"flush minus floor {own:.2f}; before: HDF5 point writes {big['pts'] / small['pts']:.2f}, "
          f"whole rewrite {big['old'] / small['old']:.0f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
