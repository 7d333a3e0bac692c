#!/usr/bin/env python
"""MPI scaling on one node: the same 2D surface with 1 rank × 1 thread, 1 rank × 2 threads and 2 ranks × 1 thread.

    python benchmarks/bench_mpi.py                  # ~2-3 minutes on a 2-core machine
    python benchmarks/bench_mpi.py --grid 12 --repeats 1   # quick look

Each configuration runs as its own process tree (``mpiexec -n 2`` for the 2-rank one) and times
the scheduling phase of :func:`landscape.surface.run_surface` (its ``run_with_progress`` call:
from the first chunk to the last result written; start-up, data loading and file creation are
reported separately). Inside it,
every rank also times its ``compute`` calls (writing the weights of a point + forward passes over
the evaluation samples). Printed:

* speed-up = T(1 rank × 1 thread) / T(config), efficiency = speed-up / cores used (ideal 1.0);
* overhead = 1 − (time in compute, summed over ranks) / (ranks × phase time): scheduling,
  messages, the writer, and ranks idle at the end (target < 5 %).

Each configuration runs ``--repeats`` times, interleaved; the best time is kept (the machine may
be shared). Results are checked to be equal across configurations.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "BENCH_MPI_RESULT "


# ---------------------------------------------------------------------------- one run (every rank)
def worker(args) -> None:
    import numpy as np
    import torch

    import landscape.driver as D
    import landscape.surface as S
    from landscape.parallel import configure_threads, world
    from landscape.problem import make_problem

    t_start = time.perf_counter()
    w = world()
    problem = make_problem(args.model, data=args.data, samples=args.samples, device="cpu", local_rank=w.local_rank)
    threads = configure_threads(w, problem.device)
    stats = {"compute_s": 0.0, "points": 0, "phase_s": 0.0}
    make_compute, run_with_progress = S.make_compute, D.run_with_progress

    def timed_make_compute(*a, **k):
        compute = make_compute(*a, **k)

        def timed(indices):
            t = time.perf_counter()
            out = compute(indices)
            stats["compute_s"] += time.perf_counter() - t
            stats["points"] += len(indices)
            return out

        timed.points_per_batch = getattr(compute, "points_per_batch", 1)  # run_surface reads the evaluator's K
        return timed

    def timed_run(*a, **k):
        w.barrier()  # every rank starts the clock together
        t = time.perf_counter()
        out = run_with_progress(*a, **k)  # ends with a barrier: the clock stops once every rank is done
        stats["phase_s"] = time.perf_counter() - t
        return out

    # run_surface (through the driver) calls these module globals: wrap them to time the scheduling phase and
    # the compute calls
    S.make_compute, D.run_with_progress = timed_make_compute, timed_run
    spec = S.SurfaceSpec(x=f"-1:1:{args.grid}", y=f"-1:1:{args.grid}", points_per_batch=args.points_per_batch,
                         flush_every=args.flush_every, chunk_size=args.chunk_size)
    res = S.run_surface(problem, spec, args.out, overwrite=True, progress=False, w=w)
    total = time.perf_counter() - t_start
    gathered = w.comm.gather(stats, root=0) if w.comm is not None else [stats]
    if w.is_root:
        import h5py

        with h5py.File(args.out, "r", locking=False) as f:
            loss = np.asarray(f["surfaces/train_loss"][()])
        print(MARK + json.dumps({
            "ranks": w.size, "threads": threads, "torch_threads": torch.get_num_threads(), "points": res.computed,
            "phase_s": max(s["phase_s"] for s in gathered), "compute_s": [s["compute_s"] for s in gathered],
            "points_per_rank": [s["points"] for s in gathered], "total_s": total, "loss": loss.tolist(),
        }), flush=True)


# ---------------------------------------------------------------------------- driver
def launch(ranks: int, threads: int, args, out: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["OMP_NUM_THREADS"] = str(threads)  # configure_threads honours it under MPI; torch reads it at start
    env.pop("LANDSCAPE_NUM_THREADS", None)
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")  # Open MPI in a root container
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--out", out, "--model", args.model,
           "--data", args.data, "--samples", str(args.samples), "--grid", str(args.grid),
           "--points-per-batch", str(args.points_per_batch), "--flush-every", str(args.flush_every)]
    if args.chunk_size:
        cmd += ["--chunk-size", str(args.chunk_size)]
    if ranks > 1:
        cmd = [shutil.which("mpiexec") or "mpiexec", *args.mpiexec_args.split(), "-n", str(ranks), *cmd]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith(MARK))
    r = json.loads(line[len(MARK):])
    r["process_wall_s"] = wall
    return r


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
    args = ap.parse_args()
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

    import numpy as np

    base = best[(1, 1)]
    ref = np.asarray(base["loss"])
    print()
    print("| config | phase (s) | speed-up vs 1×1 | efficiency | overhead | points per rank | start-up + setup (s) |")
    print("|---|---|---|---|---|---|---|")
    for ranks, threads in configs:
        r = best[(ranks, threads)]
        speedup = base["phase_s"] / r["phase_s"]
        eff = speedup / (ranks * threads)
        overhead = 1 - sum(r["compute_s"]) / (ranks * r["phase_s"])
        r.update(speedup=speedup, efficiency=eff, overhead=overhead)
        setup = r["process_wall_s"] - r["phase_s"]
        print(f"| {ranks} rank × {threads} thread | {r['phase_s']:.2f} | {speedup:.2f} | {eff:.2f} | "
              f"{100 * overhead:.1f} % | {'/'.join(map(str, r['points_per_rank']))} | {setup:.1f} |")
        np.testing.assert_allclose(np.asarray(r["loss"]), ref, rtol=1e-5, atol=1e-6)
    two = best[(2, 1)]
    per = ", ".join(f"rank {i}: {p} points, {1000 * c / max(1, p):.1f} ms/pt in compute, busy {c / two['phase_s']:.0%}"
                    for i, (p, c) in enumerate(zip(two["points_per_rank"], two["compute_s"])))
    print(f"\n2 ranks, per rank: {per}; 1 rank × 1 thread: {1000 * base['compute_s'][0] / base['points']:.1f} ms/point")
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
