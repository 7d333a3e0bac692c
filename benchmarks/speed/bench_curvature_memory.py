#!/usr/bin/env python
"""Curvature memory: does ``landscape hessian --density`` hold memory that grows with the SLQ steps?

    python benchmarks/speed/bench_curvature_memory.py            # ~1-3 minutes on 2 cores
    python benchmarks/speed/bench_curvature_memory.py --smoke    # smallest run: does it work

Runs ``landscape hessian --density --density-steps S`` for S = 10 and S = 80 (``--steps``) on an MLP of
≥ 2M parameters (``--width``, ``--depth``), each as its own process, and reads each process's peak
resident memory (``ru_maxrss`` from ``wait4``). The difference is what the 70 extra Lanczos steps
hold; the target is ≤ 8 vectors of float32 (8·P·4 bytes), printed as a ratio. A Lanczos basis kept
for SLQ would be 70·P·8 bytes more (shown for scale). Everything else (the model, the data, the
Hessian's cached graph, the top-k Lanczos run) is the same in both runs and cancels.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: _common
from _common import parse_args, peak_rss


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--steps", default="10,80", help="two --density-steps values: small,large")
    ap.add_argument("--runs", type=int, default=2, help="--density-runs")
    args = parse_args(ap, argv, width=32, depth=2, samples=16, steps="3,6", runs=1)
    small, large = (int(s) for s in args.steps.split(","))
    model_args = f"width={args.width},depth={args.depth}"
    from landscape.problem import load_model

    P = sum(p.numel() for p in load_model("zoo:mlp", model_args).parameters())
    rss = {}
    with tempfile.TemporaryDirectory() as tmp:
        for steps in (small, large):
            out = os.path.join(tmp, f"h{steps}.h5")
            cmd = [sys.executable, "-m", "landscape.cli", "hessian", "--model", "zoo:mlp", "--model-args", model_args,
                   "--data", "zoo:digits", "--samples", str(args.samples), "--device", "cpu", "--top-k", "1",
                   "--density", "--density-runs", str(args.runs), "--density-steps", str(steps), "--out", out]
            rss[steps], _ = peak_rss(cmd)
            print(f"  --density-steps {steps}: peak RSS {rss[steps] / 2**20:.1f} MiB", flush=True)
    diff = rss[large] - rss[small]
    budget = 8 * P * 4
    print()
    print(f"| model | P | peak RSS, {small} steps (MiB) | peak RSS, {large} steps (MiB) | difference (MiB) "
          f"| 8·P·4 (MiB) | ratio | a stored basis would add (MiB) |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| zoo:mlp {model_args} | {P:,} | {rss[small] / 2**20:.1f} | {rss[large] / 2**20:.1f} | "
          f"{diff / 2**20:.1f} | {budget / 2**20:.1f} | {diff / budget:.3f} | {(large - small) * P * 8 / 2**20:.0f} |")
    ok = P >= 2_000_000 and diff <= budget
    print(f"\nextra memory of {large} vs {small} SLQ steps ÷ 8·P·4 = {diff / budget:.3f} (target ≤ 1, P ≥ 2M: "
          f"{'PASS' if ok else 'MISS'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
