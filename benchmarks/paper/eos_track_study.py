#!/usr/bin/env python
"""Edge of stability with ``landscape track`` (Cohen, Kaur, Li, Kolter, Talwalkar, ICLR 2021), end to end.

What a user would run: ``landscape train`` (full-batch gradient descent on all 1,797 digits, tanh MLP of
depth 2 and width 64, mean squared error, no momentum) saving a checkpoint every ``--every`` steps, then
``landscape track --lr η --metrics eigen`` over those checkpoints. Cohen et al.'s finding: λ_max rises
(progressive sharpening) until it reaches ≈ 2/η and then hovers there. The late-phase λ_max (mean over the
second half of the steps) is printed next to 2/η, and the EoS figure of each run is written to ``--out``.

    python benchmarks/paper/eos_track_study.py                  # η = 1.0 (1000 steps) and 0.5 (2000 steps), ~2 min
    python benchmarks/paper/eos_track_study.py --readme benchmarks/README.md
    python benchmarks/paper/eos_track_study.py --smoke --out /tmp/eos   # smallest run: does it work
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: _common
import numpy as np
from _common import parse_args, write_section

from landscape.problem import make_problem
from landscape.results import open_result
from landscape.track import TrackSpec, run_track
from landscape.train import train

MODEL_ARGS = {"width": 64, "depth": 2, "act": "tanh"}


def run(lr: float, steps: int, every: int, out: str, seed: int) -> dict:
    folder = os.path.join(out, f"gd_lr{lr:g}")
    t0 = time.perf_counter()
    train("zoo:mlp", "zoo:digits", model_args=MODEL_ARGS, optimizer="sgd", lr=lr, momentum=0.0, steps=steps,
          batch_size=1797, loss="mse", save_every=every, seed=seed, out_dir=folder, log=None)
    t_train = time.perf_counter() - t0
    prob = make_problem("zoo:mlp", data="zoo:digits", model_args=MODEL_ARGS, loss="mse", batch_size=1797,
                        device="cpu", seed=seed)
    path = os.path.join(out, f"track_lr{lr:g}.h5")
    res = run_track(prob, os.path.join(folder, "ckpt_*.pt"), TrackSpec(metrics="eigen", top_k=1, lr=lr,
                                                                       max_iter=20, seed=seed),
                    path, overwrite=True, progress=False)
    from landscape.plot.track import plot_track

    figs = plot_track(open_result(path), out)
    return {"lr": lr, "steps": res.steps, "lam": res.values["lambda_max"], "loss": res.values["train_loss"],
            "late": res.late_phase(), "train_s": t_train, "track_s": res.seconds, "figure": figs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="1.0:1000,0.5:2000", help="η:steps pairs")
    ap.add_argument("--every", type=int, default=50, help="checkpoint every this many steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join("outputs", "eos_track"))
    ap.add_argument("--readme", help="append the markdown section to this file")
    a = parse_args(ap, runs="1.0:10", every=10)
    os.makedirs(a.out, exist_ok=True)
    results = []
    for item in a.runs.split(","):
        lr, steps = item.split(":")
        results.append(run(float(lr), int(steps), a.every, a.out, a.seed))
    lines = ["## Edge of stability with `landscape track`", "",
             "Full-batch GD (`landscape train --optimizer sgd --momentum 0 --batch-size 1797 --loss mse`) on all "
             "1,797 digits, tanh MLP (depth 2, width 64), float32, a checkpoint every "
             f"{a.every} steps; `landscape track --lr η --metrics eigen --top-k 1` over the checkpoints "
             "(`python benchmarks/paper/eos_track_study.py`).", ""]
    for r in results:
        idx = np.linspace(0, len(r["steps"]) - 1, min(len(r["steps"]), 11)).round().astype(int)
        lines += [f"η = {r['lr']:g}: " + ", ".join(f"step {int(r['steps'][i])}: {r['lam'][i]:.3f}" for i in idx), ""]
    lines += ["| η | steps | 2/η | late-phase λ_max (mean, 2nd half) | λ_max·η/2 | within 10 % | train s | track s |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        ratio = r["late"] * r["lr"] / 2
        lines.append(f"| {r['lr']:g} | {int(r['steps'][-1])} | {2 / r['lr']:.3g} | {r['late']:.3f} | {ratio:.3f} | "
                     f"{'yes' if abs(ratio - 1) <= 0.1 else 'no'} | {r['train_s']:.0f} | {r['track_s']:.0f} |")
    lines += ["", "Figures: " + ", ".join(r["figure"] for r in results)]
    write_section(lines, a.readme)


if __name__ == "__main__":
    main()
