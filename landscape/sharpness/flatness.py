"""Flatness σ (Jiang et al., ICLR 2020): the largest noise scale the loss (or accuracy) tolerates.

Example:
    >>> from landscape.problem import make_problem
    >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=32, device="cpu",
    ...                  model_args={"width": 4, "depth": 1})
    >>> m = flatness_sigma(p, target="loss", samples=2, iters=8)
    >>> m.name, 0 <= m.value <= m.params["bracket_hi"]  # the lower end of the last bisection bracket
    ('flatness_sigma', True)
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import LandscapeError
from ..objective import loss_acc_at, trainable
from ..params import Named
from ..problem import Problem
from ._base import Family, Metric, Option, _gen, _randn_like


def flatness_sigma(problem: Problem, *, magnitude_aware: bool = False, target: str | None = None,
                   threshold: float = 0.1, samples: int = 10, iters: int = 20, sigma_max: float = 1.0,
                   eps: float = 1e-3, seed: int = 0, world=None) -> Metric:
    """Jiang et al. (ICLR 2020): the largest σ with dev(σ) = E_u[L(θ+u)] − L(θ) ≤ τ (``target='loss'``) or
    acc(θ) − E_u[acc(θ+u)] ≤ τ (``target='acc'``, the paper's choice with τ = 0.1; default for
    classification), u ~ N(0, σ²I) or, ``magnitude_aware``, u_i ~ N(0, σ²θ_i² + ε²).

    The noise is drawn once (u = s(σ) ⊙ z with fixed seeded z in antithetic pairs ±z, common random
    numbers), so dev is a deterministic function of σ; σ_max is doubled until dev(σ_max) > τ (at most 30 times), then
    ``iters`` bisection steps on [0, σ_max] return the lower end of the final bracket.
    ``world``: every evaluation shares the batches over ranks (collective; the bisection then takes the
    same branches on every rank, as it compares allreduced values).
    """
    target = flatness_target(problem, target)
    theta = trainable(problem.model)
    g = _gen(seed)
    zs: list[Named] = []
    while len(zs) < samples:  # antithetic pairs (z, −z): the first-order term cancels exactly
        z = {k: _randn_like(v, g) for k, v in theta.items()}
        zs += [z, {k: -v for k, v in z.items()}]
    zs = zs[:samples]
    base_loss, base_acc = loss_acc_at(problem, theta, world=world)

    def dev(sigma: float) -> float:
        vals = []
        for z in zs:
            if magnitude_aware:
                pert = {k: theta[k] + torch.sqrt(sigma ** 2 * theta[k] ** 2 + eps ** 2) * z[k] for k in theta}
            else:
                pert = {k: theta[k] + sigma * z[k] for k in theta}
            loss, acc = loss_acc_at(problem, pert, world=world)
            vals.append(loss - base_loss if target == "loss" else base_acc - acc)
        return float(np.mean(vals))

    hi, lo = sigma_max, 0.0
    for _ in range(30):
        if dev(hi) > threshold:
            break
        lo, hi = hi, hi * 2
    else:
        return _flat_metric(magnitude_aware, float("inf"), target, threshold, samples, iters, eps, seed)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if dev(mid) > threshold:
            hi = mid
        else:
            lo = mid
    return _flat_metric(magnitude_aware, lo, target, threshold, samples, iters, eps, seed, hi=hi)


def flatness_target(problem: Problem, target: str | None) -> str:
    """The flatness target (``acc`` by default for classification, else ``loss``); a one-line error if unusable."""
    target = target or ("acc" if problem.classification else "loss")
    if target not in ("loss", "acc"):
        raise LandscapeError(f"flatness: `target` must be loss or acc, got {target!r}")
    if target == "acc" and not problem.classification:
        raise LandscapeError("flatness: target acc needs a classification problem; use target loss")
    return target


def _flat_metric(mag, value, target, threshold, samples, iters, eps, seed, hi=float("inf")) -> Metric:
    name = "flatness_sigma_magnitude" if mag else "flatness_sigma"
    prm = {"target": target, "threshold": threshold, "samples": samples, "iters": iters, "seed": seed,
           "bracket_hi": hi, "magnitude_aware": mag}
    if mag:
        prm["eps"] = eps
    return Metric(name, value, prm)


def _compute(problem: Problem, names, o: dict, world, say) -> dict[str, Metric]:
    out = {}
    for n in names:
        say(n)
        out[n] = flatness_sigma(problem, magnitude_aware=n.endswith("magnitude"), target=o["flat_target"],
                                threshold=o["flat_threshold"], samples=o["flat_samples"], iters=o["flat_iters"],
                                seed=o["seed"], world=world)
    return out


FAMILY = Family("flatness", ("flatness_sigma", "flatness_sigma_magnitude"), _compute, (
    Option("flat_target", None, "choice", "flatness σ criterion (default acc for classification, else loss)",
           choices=("acc", "loss")),
    Option("flat_threshold", 0.1, "float+"),
    Option("flat_samples", 10, "int+"),
    Option("flat_iters", 20, "int+", "bisection steps"),
))
