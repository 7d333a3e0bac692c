#!/usr/bin/env python
"""Layer-wise conditioning with and without BatchNorm (Huang, Qin, Liu, Zhu, Shao, ECCV 2020, in small).

A 10-layer plain MLP (9 hidden Linear → ReLU layers of width 64, then the output layer; no biases, so
Σ_x holds only the activations) and the same net with BatchNorm after every hidden Linear, on all 1,797
digits. For every layer :func:`landscape.layerwise.layerwise` gives λ_max of the K-FAC factors
Σ_x = E[xxᵀ] and Σ_δ = E[δδᵀ] (empirical Fisher), at initialization and after a short SGD run. BatchNorm
is evaluated in eval mode, with its running statistics estimated on the training data first (at
initialization they are 0/1, which would make eval-mode BN the identity).

Check (the paper's finding): in the plain net the values fall by orders of magnitude with depth (Σ_x,
forward) or towards the input (Σ_δ, backward), while BatchNorm keeps each within about one order.

    python benchmarks/paper/conditioning_study.py [--readme benchmarks/README.md]
    python benchmarks/paper/conditioning_study.py --smoke    # smallest run: does it work
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
from torch import nn

from landscape.layerwise import layerwise
from landscape.problem import load_data, make_problem


def build(bn: bool, depth: int, width: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    d = 64
    for _ in range(depth - 1):
        layers.append(nn.Linear(d, width, bias=False))
        if bn:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.ReLU())
        d = width
    layers.append(nn.Linear(d, 10, bias=False))
    return nn.Sequential(*layers)


@torch.no_grad()
def estimate_bn(net: nn.Module, X: torch.Tensor) -> None:
    """Running statistics = exact statistics of the whole training set (cumulative average)."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d)]
    if not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    net(X)
    net.eval()


def train(net: nn.Module, X, y, steps: int, lr: float, batch: int, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(X), (batch,), generator=g)
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(net(X[idx]), y[idx])
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        return float(nn.functional.cross_entropy(net(X), y))


def measure(net: nn.Module, X, y) -> dict:
    estimate_bn(net, X)
    prob = make_problem(net, data=(X, y), batch_size=512, device="cpu")
    r = layerwise(prob)
    return {"x": r.quantities["sigma_x_lambda_max"], "d": r.quantities["sigma_delta_lambda_max"],
            "kappa": r.quantities["kron_kappa_p90"]}


def orders(v: np.ndarray) -> float:
    v = np.asarray(v, dtype=float)
    return float(np.log10(v.max() / v.min()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, default=10, help="Linear layers (depth-1 hidden + output)")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300, help="SGD steps of the short training")
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--readme", help="append the markdown section to this file")
    a = parse_args(ap, depth=3, width=8, steps=5)
    X, y = load_data("zoo:digits")
    t0 = time.perf_counter()
    res, losses = {}, {}
    for bn in (False, True):
        net = build(bn, a.depth, a.width, a.seed)
        res[(bn, "init")] = measure(net, X, y)
        losses[bn] = train(net, X, y, a.steps, a.lr, a.batch, a.seed)
        res[(bn, "trained")] = measure(net, X, y)
    secs = time.perf_counter() - t0
    lines = ["## Layer-wise conditioning", "",
             f"{a.depth}-layer MLP (width {a.width}, ReLU, no biases) on all 1,797 digits, plain vs BatchNorm after "
             f"every hidden Linear; λ_max of the K-FAC factors per layer from `landscape.layerwise` (empirical "
             f"Fisher, BN in eval mode with running statistics estimated on the data) at initialization and after "
             f"{a.steps} SGD steps (lr {a.lr}, momentum 0.9, batch {a.batch}; final train loss plain "
             f"{losses[False]:.3f}, BN {losses[True]:.3f}). `python benchmarks/paper/conditioning_study.py`, "
             f"{secs:.0f} s.", ""]
    for phase in ("init", "trained"):
        lines += [f"**{'At initialization' if phase == 'init' else 'After training'}**", "",
                  "| layer | plain λ_max(Σ_x) | BN λ_max(Σ_x) | plain λ_max(Σ_δ) | BN λ_max(Σ_δ) | plain κ_p90(F) "
                  "| BN κ_p90(F) |", "|---|---|---|---|---|---|---|"]
        p, b = res[(False, phase)], res[(True, phase)]
        for i in range(len(p["x"])):
            lines.append(f"| {i + 1} | {p['x'][i]:.3g} | {b['x'][i]:.3g} | {p['d'][i]:.3g} | {b['d'][i]:.3g} | "
                         f"{p['kappa'][i]:.3g} | {b['kappa'][i]:.3g} |")
        lines.append("")
    lines += ["Spread across depth, log10(max/min) over layers (orders of magnitude):", "",
              "| | plain Σ_x | BN Σ_x | plain Σ_δ | BN Σ_δ |", "|---|---|---|---|---|"]
    checks = []
    for phase in ("init", "trained"):
        p, b = res[(False, phase)], res[(True, phase)]
        o = [orders(p["x"]), orders(b["x"]), orders(p["d"]), orders(b["d"])]
        lines.append(f"| {phase} | " + " | ".join(f"{v:.2f}" for v in o) + " |")
        for name, po, bo, bo_rest in (("Σ_x", o[0], o[1], orders(b["x"][1:])), ("Σ_δ", o[2], o[3], orders(b["d"][1:]))):
            ok = po >= 2 and bo <= 1
            checks.append(f"- {phase}, {name}: plain spans {po:.1f} orders, BN {bo:.1f} (layers 2+: {bo_rest:.1f}) → "
                          f"{'PASS' if ok else 'not met'}")
    lines += ["", "Check (plain falls by ≥ 2 orders of magnitude across depth, BN stays within 1 order):", "",
              *checks]
    write_section(lines, a.readme)


if __name__ == "__main__":
    main()
