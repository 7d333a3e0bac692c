"""Worst- and average-case (adaptive) m-sharpness (Andriushchenko et al., ICML 2023).

Worst case: max_{‖δ⊙c⁻¹‖_p ≤ ρ} L_B(θ+δ) − L_B(θ) by Auto-PGD, average case: E_{δ~N(0, ρ² diag(c²))} L_B(θ+δ) −
L_B(θ), both averaged over batches B of m examples; c = |θ| (adaptive) or 1 (standard).

Example:
    >>> from landscape.problem import make_problem
    >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=32, device="cpu",
    ...                  model_args={"width": 4, "depth": 1})
    >>> m = average_case_sharpness(p, m=16, samples=2)
    >>> m.name, m.params["n_batches"]
    ('avg_adaptive', 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .. import params as P
from ..batches import cat
from ..errors import LandscapeError
from ..objective import eval_mode, loss_at, loss_grad, shard, solo, trainable
from ..params import Named
from ..problem import Batch, Problem
from ._base import Family, Metric, Option, _batch_gen, _gen, _randn_like


def _example_batches(problem: Problem, m: int, max_examples: int | None, seed: int) -> list[Batch]:
    """The problem's examples regrouped into batches of ``m`` (seeded shuffle; at most ``max_examples``)."""
    X = cat([x for x, _ in problem.batches])
    Y = torch.cat([y for _, y in problem.batches])
    n = len(X)
    perm = torch.randperm(n, generator=_gen(seed)).to(X.device)
    if max_examples is not None:
        perm = perm[: min(n, max_examples)]
    m = max(1, min(m, len(perm)))
    return [(X[perm[i: i + m]], Y[perm[i: i + m]]) for i in range(0, len(perm) - m + 1, m)]


def _scale(theta: Named, adaptive: bool, c_eps: float = 0.0) -> Named:
    return {k: (v.abs() + c_eps) if adaptive else torch.ones_like(v) for k, v in theta.items()}


def _project(gamma: Named, p: str, rho: float) -> Named:
    if p == "linf":
        return {k: v.clamp(-rho, rho) for k, v in gamma.items()}
    nrm = P.norm(gamma)
    if nrm <= rho:
        return gamma
    return {k: v * (rho / nrm) for k, v in gamma.items()}


def _ascent_dir(grad: Named, p: str) -> Named:
    if p == "linf":
        return {k: v.sign() for k, v in grad.items()}
    nrm = P.norm(grad)
    return {k: v / (nrm + 1e-30) for k, v in grad.items()}


def _apgd(problem: Problem, theta: Named, c: Named, batch: Batch, *, p: str, rho: float, steps: int,
          momentum: float = 0.75, rand_init: bool = False, g: torch.Generator | None = None) -> float:
    """Auto-PGD (Croce & Hein 2020, as used by Andriushchenko et al.) for max_{‖γ‖_p ≤ ρ} L_B(θ + c⊙γ).

    Step η₀ = 2ρ, momentum α = 0.75: z = Π(x_k + η ∇̂), x_{k+1} = Π(x_k + α(z − x_k) + (1−α)(x_k − x_{k−1}));
    at checkpoints (22%, 19%, ... of the budget) η is halved and the iterate reset to the best point when
    fewer than 75% of the steps since the last checkpoint increased the loss (or nothing improved).
    Returns max L_B(θ+δ) found (the starting value included).
    """
    batches = [batch]

    def f(gamma: Named) -> tuple[float, Named]:
        val, gr = loss_grad(problem, {k: theta[k] + c[k] * gamma[k] for k in theta}, batches)
        return val, {k: gr[k] * c[k] for k in gr}  # chain rule: ∂/∂γ = c ⊙ ∇L

    if rand_init and g is not None:
        x = _project({k: _randn_like(v, g) * rho * 1e-3 for k, v in theta.items()}, p, rho)
    else:
        x = {k: torch.zeros_like(v) for k, v in theta.items()}
    # checkpoints w_j of Croce & Hein: p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)
    pj = [0.0, 0.22]
    while pj[-1] < 1:
        pj.append(pj[-1] + max(pj[-1] - pj[-2] - 0.03, 0.06))
    checkpoints = sorted({int(math.ceil(q * steps)) for q in pj[1:] if q <= 1})
    eta = 2.0 * rho
    fx, gx = f(x)
    f_best, x_best, g_best = fx, x, gx
    x_prev = x
    n_inc, last_ck, eta_at_last, fbest_at_last = 0, 0, eta, f_best
    for k in range(steps):
        d = _ascent_dir(gx, p)
        z = _project({kk: x[kk] + eta * d[kk] for kk in x}, p, rho)
        if k == 0:
            x_new = z
        else:
            x_new = _project({kk: x[kk] + momentum * (z[kk] - x[kk]) + (1 - momentum) * (x[kk] - x_prev[kk])
                              for kk in x}, p, rho)
        f_new, g_new = f(x_new)
        if f_new > fx:
            n_inc += 1
        x_prev, x, fx, gx = x, x_new, f_new, g_new
        if f_new > f_best:
            f_best, x_best, g_best = f_new, x_new, g_new
        if k + 1 in checkpoints:
            span = k + 1 - last_ck
            if n_inc < 0.75 * span or (eta == eta_at_last and f_best == fbest_at_last):
                eta_at_last = eta
                eta /= 2.0
                x, fx, gx, x_prev = x_best, f_best, g_best, x_best
            else:
                eta_at_last = eta
            n_inc, last_ck, fbest_at_last = 0, k + 1, f_best
    return f_best


def worst_case_sharpness(problem: Problem, *, p: str = "l2", adaptive: bool = True, rho: float | None = None,
                         m: int = 128, max_examples: int | None = 1024, steps: int = 20, c_eps: float = 0.0,
                         seed: int = 0, world=None) -> Metric:
    """Andriushchenko et al. (ICML 2023): S = (1/|𝔅|) Σ_{B∈𝔅} [max_{‖δ⊙c⁻¹‖_p ≤ ρ} L_B(θ+δ) − L_B(θ)] over
    batches B of m examples (m-sharpness), c = |θ| (+c_eps) when ``adaptive`` else 1, p ∈ {l2, linf},
    each maximum by Auto-PGD (:func:`_apgd`).

    Default ρ: adaptive ℓ2 0.5, adaptive ℓ∞ 1e-3, standard ℓ2 0.05, standard ℓ∞ 5e-4.
    ``world``: the example batches are shared out (batch j on rank j % size, see :func:`_per_batch`).
    """
    if p not in ("l2", "linf"):
        raise LandscapeError(f"worst-case sharpness: `p` must be l2 or linf, got {p!r}")
    rho = default_rho(p, adaptive) if rho is None else rho
    theta = trainable(problem.model)
    c = _scale(theta, adaptive, c_eps)
    batches = _example_batches(problem, m, max_examples, seed)

    def one(j: int) -> float:  # one example batch, computed by one process
        base = loss_at(problem, theta, [batches[j]])
        return _apgd(problem, theta, c, batches[j], p=p, rho=rho, steps=steps, g=_batch_gen(seed, j)) - base

    with eval_mode(problem.model):
        vals = _per_batch(len(batches), one, world)
    name = f"worst_{'adaptive' if adaptive else 'standard'}_{p}"
    return Metric(name, float(np.mean(vals)), {"p": p, "adaptive": adaptive, "rho": rho, "m": len(batches[0][0]),
                                                "n_batches": len(batches), "steps": steps, "c_eps": c_eps,
                                                "method": "auto-pgd", "seed": seed, "stderr": _se(vals)})


def average_case_sharpness(problem: Problem, *, adaptive: bool = True, rho: float | None = None, m: int = 128,
                           max_examples: int | None = 1024, samples: int = 10, c_eps: float = 0.0,
                           seed: int = 0, world=None) -> Metric:
    """Andriushchenko et al.: (1/|𝔅|) Σ_B E_{δ~N(0, ρ² diag(c²))} L_B(θ+δ) − L_B(θ), Monte Carlo with
    ``samples`` draws per batch; c = |θ| (adaptive) or 1. Default ρ: 0.1 adaptive, 0.01 standard.

    Batch j draws from its own generator, seeded from (``seed``, j) (:func:`_batch_gen`), so the draws do not
    depend on how many processes share the batches (``world``: batch j on rank j % size)."""
    rho = (0.1 if adaptive else 0.01) if rho is None else rho
    theta = trainable(problem.model)
    c = _scale(theta, adaptive, c_eps)
    batches = _example_batches(problem, m, max_examples, seed)

    def one(j: int) -> float:  # one example batch, computed by one process, with its own generator
        b, g = batches[j], _batch_gen(seed, j)
        base = loss_at(problem, theta, [b])
        draws = [loss_at(problem, {k: theta[k] + rho * c[k] * _randn_like(v, g) for k, v in theta.items()}, [b])
                 for _ in range(samples)]
        return float(np.mean(draws)) - base

    vals = _per_batch(len(batches), one, world)
    name = f"avg_{'adaptive' if adaptive else 'standard'}"
    return Metric(name, float(np.mean(vals)), {"adaptive": adaptive, "rho": rho, "m": len(batches[0][0]),
                                                "n_batches": len(batches), "samples": samples, "c_eps": c_eps,
                                                "seed": seed, "stderr": _se(vals)})


def _per_batch(n: int, one, world) -> list[float]:
    """``[one(j) for j in range(n)]``; under a world batch j is computed by rank j % size alone and the
    values are gathered by one float64 allreduce (every other entry is an exact zero), so every rank gets
    the single-process list bit for bit. ``one`` must not use collectives."""
    if solo(world):
        return [one(j) for j in range(n)]
    vals = torch.zeros(n, dtype=torch.float64)
    for j in shard(range(n), world):
        vals[j] = one(j)
    return [float(v) for v in world.allreduce_sum(vals)]


def default_rho(p: str, adaptive: bool) -> float:
    return {("l2", True): 0.5, ("linf", True): 1e-3, ("l2", False): 0.05, ("linf", False): 5e-4}[(p, adaptive)]


def _se(vals: Sequence[float]) -> float:
    return float(np.std(vals, ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else float("nan")


def _worst(problem: Problem, names, o: dict, world, say) -> dict[str, Metric]:
    out = {}
    for n in names:
        say(n)
        _, kind, p = n.split("_")
        out[n] = worst_case_sharpness(problem, p=p, adaptive=kind == "adaptive", rho=o["rho"], m=o["m"],
                                      max_examples=o["max_examples"], steps=o["apgd_steps"], seed=o["seed"],
                                      world=world)
    return out


def _average(problem: Problem, names, o: dict, world, say) -> dict[str, Metric]:
    out = {}
    for n in names:
        say(n)
        out[n] = average_case_sharpness(problem, adaptive=n.endswith("adaptive"), rho=o["rho"], m=o["m"],
                                        max_examples=o["max_examples"], samples=o["avg_samples"], seed=o["seed"],
                                        world=world)
    return out


WORST = Family("worst", ("worst_adaptive_l2", "worst_adaptive_linf", "worst_standard_l2", "worst_standard_linf"),
               _worst, (
    Option("rho", None, "float+", "radius of worst-/average-case sharpness (default per kind: adaptive ℓ2 0.5, "
           "ℓ∞ 1e-3; standard ℓ2 0.05, ℓ∞ 5e-4; average adaptive 0.1, standard 0.01)"),
    Option("m", 128, "int+", "examples per batch (m-sharpness)"),
    Option("max_examples", 1024, "int+", "examples used by worst-/average-case sharpness (seeded subset)"),
    Option("apgd_steps", 20, "int+", "Auto-PGD steps per batch"),
))
AVERAGE = Family("average", ("avg_adaptive", "avg_standard"), _average, (
    "rho", "m", "max_examples",
    Option("avg_samples", 10, "int+", "Gaussian draws per batch for average-case sharpness"),
))
