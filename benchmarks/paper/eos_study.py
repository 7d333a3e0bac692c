#!/usr/bin/env python
"""Edge of stability in small (Cohen, Kaur, Li, Kolter, Talwalkar, ICLR 2021).

Full-batch gradient descent on all 1,797 digits with a tanh MLP and squared loss, at two step sizes η.
Every ``--every`` steps the sharpness λ_max of the training loss is measured with
:func:`landscape.sharpness.curvature_metrics` (Lanczos on Hessian-vector products). Cohen et al.'s finding:
λ_max rises (progressive sharpening) until it reaches ≈ 2/η and then hovers there while the loss keeps
falling non-monotonically. The late-phase λ_max is printed next to 2/η.

    python benchmarks/paper/eos_study.py                   # ~1 min on 2 cores (η = 0.5 and 1.0)
    python benchmarks/paper/eos_study.py --readme benchmarks/README.md   # also append the table there
    python benchmarks/paper/eos_study.py --smoke     # smallest run: does it work
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: _common
import numpy as np
import torch
from _common import parse_args, write_section

from landscape.problem import load_data, make_problem
from landscape.sharpness import curvature_metrics
from landscape.zoo.models import MLP


def run(lr: float, steps: int, every: int, width: int, depth: int, seed: int) -> dict:
    torch.manual_seed(seed)
    net = MLP(width=width, depth=depth, act="tanh").double()
    X, Y = load_data("zoo:digits")
    prob = make_problem(net, data=(X.double(), Y), loss="mse", batch_size=len(X), device="cpu", seed=seed)
    x, y = prob.batches[0]
    params = [p for p in net.parameters()]
    hist = []
    t0 = time.perf_counter()
    for step in range(steps + 1):
        if step % every == 0:
            lam = curvature_metrics(prob, lr=lr, lanczos_steps=20, trace_matvecs=2, seed=seed)["lambda_max"].value
            with torch.no_grad():
                loss = float(prob.loss_sum(net(x), y)) / len(x)
            hist.append((step, loss, lam))
        if step == steps:
            break
        net.zero_grad(set_to_none=True)
        loss_t = prob.loss_sum(net(x), y) / len(x)
        loss_t.backward()
        with torch.no_grad():
            for p in params:
                p.add_(p.grad, alpha=-lr)
    late = [h[2] for h in hist if h[0] >= steps // 2]
    return {"lr": lr, "hist": hist, "late_mean": float(np.mean(late)), "late_max": float(np.max(late)),
            "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lrs", default="0.5,1.0", help="GD step sizes η")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--every", type=int, default=200)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--readme", help="append the markdown section to this file")
    a = parse_args(ap, lrs="1.0", steps=20, every=10, width=8)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = [run(float(lr), a.steps, a.every, a.width, a.depth, a.seed) for lr in a.lrs.split(",")]
    lines = ["## Edge of stability", "",
             f"Full-batch GD on all 1,797 digits, tanh MLP (depth {a.depth}, width {a.width}), squared loss, "
             f"float64, {a.steps} steps; λ_max measured with `landscape.sharpness.curvature_metrics` every "
             f"{a.every} steps (`python benchmarks/paper/eos_study.py`). Cohen et al. (2021): λ_max rises to ≈ 2/η "
             "and stays there.", ""]
    head = "| step | " + " | ".join(f"loss (η={r['lr']:g}) | λ_max (η={r['lr']:g})" for r in results) + " |"
    lines += [head, "|" + "---|" * (1 + 2 * len(results))]
    for i, (step, _, _) in enumerate(results[0]["hist"]):
        cells = " | ".join(f"{r['hist'][i][1]:.4f} | {r['hist'][i][2]:.3f}" for r in results)
        lines.append(f"| {step} | {cells} |")
    lines += ["", "| η | 2/η | late-phase λ_max (mean, 2nd half) | late max | λ_max·η/2 | seconds |",
              "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['lr']:g} | {2 / r['lr']:.3g} | {r['late_mean']:.3f} | {r['late_max']:.3f} | "
                     f"{r['late_mean'] * r['lr'] / 2:.3f} | {r['seconds']:.0f} |")
    write_section(lines, a.readme)


if __name__ == "__main__":
    main()
