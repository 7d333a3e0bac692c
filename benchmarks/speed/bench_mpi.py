#!/usr/bin/env python
"""MPI scaling on one node: the same 2D surface with 1 rank × 1 thread, 1 rank × 2 threads and 2 ranks × 1 thread.

    python benchmarks/speed/bench_mpi.py                  # ~2-3 minutes on a 2-core machine
    python benchmarks/speed/bench_mpi.py --grid 12 --repeats 1   # quick look
    python benchmarks/speed/bench_mpi.py --smoke                 # smallest run: does it work (~20 s)

Each configuration runs as its own process tree (``mpiexec -n 2`` for the 2-rank one) and times
the scheduling phase of :func:`landscape.surface.run_surface` (``SurfaceResult.phases["points"]``:
from the first chunk to the last result written; start-up, data loading and file creation are
reported separately). Inside it, every rank also times the forward passes of its model over the
evaluation samples (forward hooks on the model). Printed:

* speed-up = T(1 rank × 1 thread) / T(config), efficiency = speed-up / cores used (ideal 1.0);
* overhead = 1 − (time in forward passes, summed over ranks) / (ranks × phase time): writing the
  weights of each point, scheduling, messages, the writer, and ranks idle at the end (target < 5 %).

Each configuration runs ``--repeats`` times, interleaved; the best time is kept (the machine may
be shared). Results are checked to be equal across configurations.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: _common
import h5py
import numpy as np
import torch
from _common import parse_args, run_marked

from landscape.parallel import configure_threads, world
from landscape.problem import make_problem
from landscape.surface import SurfaceSpec, run_surface

MARK = "BENCH_MPI_RESULT "


# ---------------------------------------------------------------------------- one run (every rank)
def worker(args) -> None:
    w = world()
    t_start = time.perf_counter()
    problem = make_problem(args.model, data=args.data, samples=args.samples, device="cpu", local_rank=w.local_rank)
    threads = configure_threads(w, problem.device)
    stats = {"compute_s": 0.0, "forwards": 0}
    started: list[float] = []

    # the time in the model's forward passes, from its own hooks (the public surface of the evaluators:
    # nothing inside landscape is patched)
    def before(module, inputs):
        started.append(time.perf_counter())

    def after(module, inputs, output):
        stats["compute_s"] += time.perf_counter() - started.pop()
        stats["forwards"] += 1

    problem.model.register_forward_pre_hook(before)
    problem.model.register_forward_hook(after)
    spec = SurfaceSpec(x=f"-1:1:{args.grid}", y=f"-1:1:{args.grid}", points_per_batch=args.points_per_batch,
                       flush_every=args.flush_every, chunk_size=args.chunk_size)
    w.barrier()
    res = run_surface(problem, spec, args.out, overwrite=True, progress=False, w=w)
    stats["phase_s"] = res.phases["points"]  # the scheduling phase: first chunk to last result written
    total = time.perf_counter() - t_start
    gathered = w.comm.gather(stats, root=0) if w.comm is not None else [stats]
    if w.is_root:
        with h5py.File(args.out, "r", locking=False) as f:
            loss = np.asarray(f["surfaces/train_loss"][()])
        print(MARK + json.dumps({
            "ranks": w.size, "threads": threads, "torch_threads": torch.get_num_threads(), "points": res.computed,
            "phase_s": max(s["phase_s"] for s in gathered), "compute_s": [s["compute_s"] for s in gathered],
            "forwards_per_rank": [s["forwards"] for s in gathered], "total_s": total, "loss": loss.tolist(),
        }), flush=True)


# ---------------------------------------------------------------------------- driver
def launch(ranks: int, threads: int, args, out: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--out", out, "--model", args.model,
           "--data", args.data, "--samples", str(args.samples), "--grid", str(args.grid),
           "--points-per-batch", str(args.points_per_batch), "--flush-every", str(args.flush_every)]
    if args.chunk_size:
        cmd += ["--chunk-size", str(args.chunk_size)]
    # OMP_NUM_THREADS: configure_threads honours it under MPI; torch reads it at start
    return run_marked(cmd, MARK, ranks if ranks > 1 else 0, args.mpiexec_args, OMP_NUM_THREADS=threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="zoo:cnn")
    ap.add_argument("--data", default="zoo:digits")
    ap.add_argument("--samples", type=int, default=1797)
    ap.add_argument("--grid", type=int, default=20, help="GRID×GRID points")
    ap.add_argument("--points-per-batch", default="1")
    ap.add_argument("--chunk-size", type=int, default=None, help="default: auto (about 8 chunks per rank)")
    ap.add_argument("--flush-every", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--mpiexec-args", default="", help="extra launcher options, e.g. '--bind-to core'")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = parse_args(ap, samples=64, grid=3, repeats=1)
    if args.worker:
        worker(args)
        return

    configs = [(1, 1), (1, 2), (2, 1)]  # (ranks, threads per rank)
    cores = len(os.sched_getaffinity(0))
    print(f"bench_mpi: {args.model} on {args.data} ({args.samples} samples), {args.grid}×{args.grid} grid, "
          f"points-per-batch {args.points_per_batch}, {cores} cores, best of {args.repeats}", flush=True)
    best: dict[tuple[int, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for ranks, threads in configs:
                r = launch(ranks, threads, args, os.path.join(tmp, f"r{ranks}t{threads}.h5"))
                print(f"  run {rep + 1}: {ranks} rank(s) × {r['threads']} thread(s): phase {r['phase_s']:.2f} s, "
                      f"process {r['process_wall_s']:.1f} s", flush=True)
                if (ranks, threads) not in best or r["phase_s"] < best[(ranks, threads)]["phase_s"]:
                    best[(ranks, threads)] = r

    base = best[(1, 1)]
    ref = np.asarray(base["loss"])
    print()
    print("| config | phase (s) | speed-up vs 1×1 | efficiency | overhead | forward passes per rank "
          "| start-up + setup (s) |")
    print("|---|---|---|---|---|---|---|")
    for ranks, threads in configs:
        r = best[(ranks, threads)]
        speedup = base["phase_s"] / r["phase_s"]
        eff = speedup / (ranks * threads)
        overhead = 1 - sum(r["compute_s"]) / (ranks * r["phase_s"])
        r.update(speedup=speedup, efficiency=eff, overhead=overhead)
        setup = r["process_wall_s"] - r["phase_s"]
        print(f"| {ranks} rank × {threads} thread | {r['phase_s']:.2f} | {speedup:.2f} | {eff:.2f} | "
              f"{100 * overhead:.1f} % | {'/'.join(map(str, r['forwards_per_rank']))} | {setup:.1f} |")
        np.testing.assert_allclose(np.asarray(r["loss"]), ref, rtol=1e-5, atol=1e-6)
    two = best[(2, 1)]
    per = ", ".join(f"rank {i}: {n} forward passes, {1000 * c / max(1, n):.2f} ms each, busy {c / two['phase_s']:.0%}"
                    for i, (n, c) in enumerate(zip(two["forwards_per_rank"], two["compute_s"])))
    one = 1000 * base["compute_s"][0] / max(1, base["forwards_per_rank"][0])
    print(f"\n2 ranks, per rank: {per}; 1 rank × 1 thread: {one:.2f} ms per forward pass")
    print()
    print(f"2 ranks × 1 thread: speed-up {two['speedup']:.2f} (ideal 2), parallel efficiency {two['efficiency']:.2f} "
          f"(target ≥ 0.85: {'PASS' if two['efficiency'] >= 0.85 else 'MISS'}), "
          f"scheduling overhead {100 * two['overhead']:.1f} % (target < 5 %: "
          f"{'PASS' if two['overhead'] < 0.05 else 'MISS'})")
    print(f"1 rank × 2 threads: speed-up {best[(1, 2)]['speedup']:.2f}, efficiency {best[(1, 2)]['efficiency']:.2f}; "
          f"2 ranks vs 1 rank × 2 threads: {best[(1, 2)]['phase_s'] / two['phase_s']:.2f}× faster")
    print("surfaces equal across configurations (rtol 1e-5)")


if __name__ == "__main__":
    main()
