#!/usr/bin/env python
"""Monotonic linear interpolation (Lucas et al., ICML 2021) on the zoo MLP and scikit-learn's digits.

For each optimizer setting (SGD lr 0.1 momentum 0.9; Adam lr 1e-3; Adam lr 1e-2), with and without
BatchNorm, and several seeds: train with ``landscape.train.train`` from the seeded initialization θ₀
to θ_T, evaluate the training loss along θ_α = (1−α)θ₀ + αθ_T for α on a grid over [0, 1] with
``landscape.paths.evaluate_path`` (BatchNorm statistics re-estimated at every α), and
print per setting the fraction of non-monotonic runs (largest bump Δ > 1e-3), the mean Δ, the mean
number of bumps, the mean relative distance ‖θ_T − θ₀‖/‖θ₀‖ and the final training loss, as a
Markdown table (benchmarks/README.md, "Monotonic linear interpolation").

    python benchmarks/paper/mli_study.py [--seeds 5] [--epochs 20] [--alphas 51]
    python benchmarks/paper/mli_study.py --smoke    # smallest run: does it work
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: _common
import numpy as np
import torch
from _common import parse_args

from landscape.paths import endpoint_states, evaluate_path, param_distance, path_summary
from landscape.problem import load_data, make_problem
from landscape.train import train

SETTINGS = [("SGD", "sgd", 0.1, 0.9), ("Adam", "adam", 1e-3, 0.0), ("Adam", "adam", 1e-2, 0.0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--alphas", type=int, default=51)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--tolerance", type=float, default=1e-3)
    args = parse_args(ap, seeds=1, epochs=1, alphas=5, width=8)
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead (and fight other processes)
    t0 = time.perf_counter()
    X, y = load_data("zoo:digits:train")
    alphas = np.linspace(0.0, 1.0, args.alphas)
    rows = []
    for bn in (False, True):
        margs = {"width": args.width, "depth": args.depth, "bn": bn}
        problem = make_problem("zoo:mlp", data=(X, y), model_args=margs, batch_size=512, device="cpu")
        for label, opt, lr, mom in SETTINGS:
            deltas, bumps, rel, final, nonmono = [], [], [], [], 0
            for seed in range(args.seeds):
                with tempfile.TemporaryDirectory() as d:
                    r = train("zoo:mlp", (X, y), model_args=margs, optimizer=opt, lr=lr, momentum=mom,
                              epochs=args.epochs, batch_size=64, seed=seed, out_dir=d, log=None)
                    path = evaluate_path(problem, r.init, r.final, alphas)
                    s = path_summary(alphas, path["train_loss"], args.tolerance)
                    t_init = endpoint_states(problem.model, r.init)
                    t_final = endpoint_states(problem.model, r.final)
                    rel.append(param_distance(problem.model, t_init, t_final)[1])
                deltas.append(s["max_bump"])
                bumps.append(s["n_bumps"])
                nonmono += not s["monotonic"]
                final.append(r.final_loss)
            rows.append((label, lr, bn, nonmono / args.seeds, float(np.mean(deltas)), float(np.max(deltas)),
                         float(np.mean(bumps)), float(np.mean(rel)), float(np.mean(final))))
            print(f"  {label} lr={lr:g} bn={bn}: {nonmono}/{args.seeds} non-monotonic, mean Δ {np.mean(deltas):.3g}",
                  flush=True)
    print(f"\nzoo MLP (width {args.width}, depth {args.depth}) on digits (1,437 training images), {args.epochs} "
          f"epochs of batch 64, {args.seeds} seeds, α ∈ [0, 1] with {args.alphas} points, tolerance "
          f"{args.tolerance:g}; {time.perf_counter() - t0:.0f} s\n")
    print("| optimizer | lr | BatchNorm | non-monotonic | mean Δ | max Δ | mean bumps | ‖θ_T−θ₀‖/‖θ₀‖ "
          "| final train loss |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, lr, bn, frac, md, xd, nb, rd, fl in rows:
        print(f"| {label} | {lr:g} | {'yes' if bn else 'no'} | {frac:.0%} | {md:.3g} | {xd:.3g} | {nb:.1f} | "
              f"{rd:.3g} | {fl:.3g} |")


if __name__ == "__main__":
    main()
