#!/usr/bin/env python
"""The scheduler at many ranks, with a fixed-duration stand-in for the evaluator.

    python benchmarks/speed/bench_scheduler.py                          # 2..64 ranks, ~5-10 minutes on 2 cores
    python benchmarks/speed/bench_scheduler.py --ranks 2,4 --point-ms 10 # quick look
    python benchmarks/speed/bench_scheduler.py --smoke                    # smallest run: does it work

Every rank runs the real :func:`landscape.parallel.run_points` (the protocol the surface command
uses), but ``compute`` only sleeps ``--point-ms`` per point and returns one float64 per metric
(``--metrics``, 2 like a surface's loss and accuracy). Sleeping ranks need no CPU, so oversubscribing
a 2-core machine with 64 processes measures the messages, the pickling and rank 0's loop -- not
the forward passes. For each rank count R it runs ``--points-per-rank`` × R points (so the ideal
time is the same for every R) and prints:

* efficiency = (points × point time) / (R × phase time), where the phase runs from a common start
  (a barrier) to the last result received by rank 0;
* busy = (time the ranks actually spent in the stand-in, summed) / (R × phase time): on a loaded
  machine a sleep of 10 ms often lasts longer (late wake-ups: "oversleep" = measured / asked), which
  lowers the efficiency without being the protocol's fault; 1 − busy is the scheduler's share
  (messages, rank 0's loop, the tail);
* rank 0's messages per second = (chunks sent out + results received + stop messages) / phase time,
  and rank 0's CPU seconds per message (its process CPU time over the phase, less nothing: its own
  "compute" sleeps) -- the per-message cost the model in benchmarks/README.md uses;
* the tail = time from the first rank to finish its last point to the last one (wall clock of
  each rank, one machine);
* points per rank (min/max) and chunks handed out.

Each configuration is its own ``mpiexec -n R`` process tree. ``--chunk-size 0`` is the scheduler's
own default (about 8 chunks per rank, 1-64 points); give a list (``--chunk-size 0,1``) to run each.
The start-up (importing torch on R ranks) is not timed. On a machine shared with other jobs the
sleeping ranks still wake late when the cores are busy: the efficiency is then a lower bound.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: _common
import numpy as np
from _common import parse_args, run_marked

from landscape.parallel import auto_chunk_size, run_points, world

MARK = "BENCH_SCHED_RESULT "


# ---------------------------------------------------------------------------- one run (every rank)
def worker(args) -> None:
    w = world()
    n = args.points_per_rank * w.size
    dt = args.point_ms / 1000.0
    names = [f"m{i}" for i in range(args.metrics)]
    stats = {"points": 0, "chunks": 0, "last_end": 0.0, "compute_s": 0.0}

    def compute(indices: np.ndarray) -> dict[str, np.ndarray]:
        t = time.perf_counter()
        time.sleep(dt * len(indices))  # the stand-in: a fixed time per point, no CPU
        stats["compute_s"] += time.perf_counter() - t  # more than asked when a busy machine wakes us late
        stats["points"] += len(indices)
        stats["chunks"] += 1
        stats["last_end"] = time.time()
        return {k: np.zeros(len(indices)) for k in names}

    received = np.zeros(n, dtype=np.int64)

    def sink(indices: np.ndarray, values: dict) -> None:
        received[indices] += 1

    chunk = args.chunk_size or auto_chunk_size(n, w.size)
    todo = np.arange(n, dtype=np.int64) if w.is_root else None
    w.barrier()
    t0, c0 = time.time(), time.process_time()
    run_points(w, todo, compute, sink if w.is_root else None, chunk_size=chunk)  # ends with a barrier
    phase = time.time() - t0
    cpu = time.process_time() - c0
    gathered = w.comm.gather(stats, root=0) if w.comm is not None else [stats]
    if w.is_root:
        if not (received == 1).all():
            sys.exit(f"bench_scheduler: {int((received != 1).sum())} points not received exactly once")
        ends = [s["last_end"] for s in gathered if s["points"]]
        worker_chunks = sum(s["chunks"] for s in gathered[1:])
        messages = 2 * worker_chunks + (w.size - 1)  # each worker chunk: out + result back; one stop per worker
        # phase measured to after the final barrier: rank 0's last result is in by then
        print(MARK + json.dumps({
            "ranks": w.size, "points": n, "chunk": chunk, "phase_s": phase, "root_cpu_s": cpu,
            "messages": messages, "chunks": sum(s["chunks"] for s in gathered),
            "tail_s": max(ends) - min(ends), "end_s": max(ends) - t0,
            "points_per_rank": [s["points"] for s in gathered],
            "compute_s": sum(s["compute_s"] for s in gathered),
        }), flush=True)


# ---------------------------------------------------------------------------- driver
def launch(ranks: int, chunk: int, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--point-ms", str(args.point_ms),
           "--points-per-rank", str(args.points_per_rank), "--metrics", str(args.metrics),
           "--chunk-size", str(chunk)]
    return run_marked(cmd, MARK, ranks, args.mpiexec_args, args.timeout, OMP_NUM_THREADS=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", default="2,4,8,16,32,64", help="comma-separated rank counts")
    ap.add_argument("--point-ms", type=float, default=10.0, help="the stand-in's time per point (ms)")
    ap.add_argument("--points-per-rank", type=int, default=100, help="points = this × ranks (same ideal time)")
    ap.add_argument("--chunk-size", default="0", help="comma-separated; 0 = the scheduler's default")
    ap.add_argument("--metrics", type=int, default=2, help="float64 values per point sent back")
    ap.add_argument("--repeats", type=int, default=1, help="runs per configuration; the fastest is kept")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per mpiexec run")
    ap.add_argument("--mpiexec-args", default="", help="extra launcher options")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parse_args(ap, ranks="2", point_ms=1.0, points_per_rank=10)
    if args.worker:
        args.chunk_size = int(args.chunk_size)
        worker(args)
        return
    ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
    chunks = [int(c) for c in args.chunk_size.split(",") if c.strip()]
    if any(r < 2 for r in ranks) or any(c < 0 for c in chunks):
        sys.exit("bench_scheduler: --ranks must be >= 2 and --chunk-size >= 0 (0 = default)")
    print(f"bench_scheduler: {args.point_ms:g} ms per point (sleep), {args.points_per_rank} points per rank, "
          f"{args.metrics} metrics, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"best of {args.repeats}", flush=True)
    rows = []
    for chunk in chunks:
        for r in ranks:
            best = None
            for _ in range(args.repeats):
                res = launch(r, chunk, args)
                if best is None or res["phase_s"] < best["phase_s"]:
                    best = res
            ideal = best["points"] * args.point_ms / 1000.0 / r
            best.update(ideal_s=ideal, efficiency=ideal / best["phase_s"],
                        busy=best["compute_s"] / (r * best["phase_s"]),
                        oversleep=best["compute_s"] / (best["points"] * args.point_ms / 1000.0),
                        msgs_per_s=best["messages"] / best["phase_s"],
                        cpu_per_msg_us=1e6 * best["root_cpu_s"] / max(1, best["messages"]),
                        load=os.getloadavg()[0])
            rows.append(best)
            print(f"  {r} ranks, chunk {best['chunk']}: phase {best['phase_s']:.2f} s (ideal {ideal:.2f}), "
                  f"efficiency {best['efficiency']:.2f}, busy {best['busy']:.2f}, "
                  f"process {best['process_wall_s']:.1f} s", flush=True)
    print()
    print("| ranks | chunk | points | phase (s) | ideal (s) | efficiency | busy | oversleep | rank 0 msgs/s "
          "| rank 0 CPU/msg (µs) | tail (ms) | points/rank min–max | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for b in rows:
        ppr = b["points_per_rank"]
        print(f"| {b['ranks']} | {b['chunk']} | {b['points']} | {b['phase_s']:.2f} | {b['ideal_s']:.2f} | "
              f"{b['efficiency']:.2f} | {b['busy']:.2f} | {b['oversleep']:.2f} | "
              f"{b['msgs_per_s']:.0f} | {b['cpu_per_msg_us']:.0f} | {1000 * b['tail_s']:.0f} | "
              f"{min(ppr)}–{max(ppr)} | {b['load']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
