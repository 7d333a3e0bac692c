"""Sharpness metrics of a trained model (science.md §3), each available alone.

Notation: θ the trainable parameters, L(θ) = (1/N) Σ_b Σ_{i∈b} ℓ_i(θ) the mean loss over the
problem's batches, g = ∇L(θ), H = ∇²L(θ).

=====================================  ========================================================
function                               metric(s)
=====================================  ========================================================
:func:`curvature_metrics`              λ_max, λ_min, tr H, λ_max / tr H, η·λ_max/2 (Cohen et al.)
:func:`eps_sharpness`                  [max_{y∈C_ε} L(θ+y) − L(θ)] / (1 + L(θ)) × 100,
                                       C_ε = {|y_i| ≤ ε(|θ_i| + 1)} (Keskar et al.)
:func:`worst_case_sharpness`           max_{‖δ⊙c⁻¹‖_p ≤ ρ} L_B(θ+δ) − L_B(θ), averaged over batches
                                       B of m examples; c = |θ| (adaptive) or 1 (standard), Auto-PGD
:func:`average_case_sharpness`         E_{δ~N(0, ρ² diag(c²))} L_B(θ+δ) − L_B(θ), same batching
:func:`flatness_sigma`                 largest σ with E_u dev(θ+u) ≤ τ, u ~ N(0, σ²I) or
                                       u_i ~ N(0, σ²θ_i² + ε²) (Jiang et al.), by bisection
:func:`gradient_path_metrics`          over η: range of L(θ−ηg), ‖g − ∇L(θ−ηg)‖,
                                       β_eff = max_η ‖g − ∇L(θ−ηg)‖/‖ηg‖ (Santurkar et al.)
:func:`directional_sharpness`          uᵀHu/‖u‖² next to gᵀu and cos(g, u) (Pan & Li)
=====================================  ========================================================

All metrics evaluate the network through :func:`torch.func.functional_call` with perturbed copies
of θ, so the model's own tensors are never written: its weights are exactly what they were before,
and the model stays in eval mode throughout (BatchNorm uses its running statistics; the mode is
forced to eval and put back afterwards). Every randomized metric takes a ``seed`` and draws from its
own :class:`torch.Generator` (worst-/average-case sharpness: one per example batch, seeded from the seed
and the batch's index).

Under MPI, pass ``world`` (:func:`landscape.parallel.world`) to :func:`compute_metrics` or to a metric:
the ranks share the batches out (batch i on rank i % size), add their partial sums up in float64
(``world.allreduce_sum``) and all get the single-process result; every rank must make the same calls.

Example:
    >>> from landscape.problem import make_problem
    >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=64, device="cpu")
    >>> m = eps_sharpness(p, eps=1e-3, steps=5)
    >>> m.name, m.value >= 0
    ('eps_sharpness', True)
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from . import curvature as C
from .batches import cat
from .errors import LandscapeError
from .params import Named
from .problem import Batch, Problem


# =========================================================================== results
@dataclass
class Metric:
    """One metric: its value (a float or an array), the parameters used, and optional extra arrays
    (``extras[name] = (array, attrs)``, stored beside it under /metrics)."""

    name: str
    value: float | np.ndarray
    params: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)

    def __float__(self) -> float:
        return float(np.asarray(self.value).reshape(-1)[0]) if np.size(self.value) else float("nan")


# =========================================================================== functional core
@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Force eval mode (BatchNorm on running statistics) and restore every module's flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, t in flags:
            m.training = t


def trainable(model: nn.Module) -> Named:
    """Detached copies of the trainable parameters θ (``requires_grad``), in registration order."""
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def _buffers(model: nn.Module) -> Named:
    return dict(model.named_buffers())


def _frozen(model: nn.Module, theta: Named) -> Named:
    """Parameters not in θ (frozen ones) plus buffers: passed unchanged to ``functional_call``."""
    out = {k: v for k, v in model.named_parameters() if k not in theta}
    out.update(_buffers(model))
    return out


def _forward(problem: Problem, theta: Named, x: Tensor) -> Tensor:
    return functional_call(problem.model, {**_frozen(problem.model, theta), **theta}, (x,))


def _n(batches: Sequence[Batch]) -> int:
    return sum(len(x) for x, _ in batches)


def _solo(world) -> bool:
    """Whether one process computes everything (no world, or a world of one rank)."""
    return world is None or world.size == 1


def _mine(batches: Sequence[Batch], world) -> Sequence[Batch]:
    """This rank's share of ``batches``: batch i on rank i % size (all of them when running alone)."""
    return batches if _solo(world) else batches[world.rank::world.size]


def loss_at(problem: Problem, theta: Named, batches: Sequence[Batch] | None = None, world=None) -> float:
    """L(θ) = (1/N) Σ_b ℓ_sum(b): mean loss over ``batches`` (default: the problem's) at weights θ.

    ``world`` (a :class:`~landscape.parallel.World`, or any object with ``rank``, ``size`` and
    ``allreduce_sum``): batch i is computed by rank i % size and the float64 sums are added up over
    the ranks (collective: every rank must call it); every rank gets the whole result.
    """
    batches = problem.batches if batches is None else batches
    total = torch.zeros((), dtype=torch.float64, device=problem.device)
    with torch.no_grad(), eval_mode(problem.model):
        for x, y in _mine(batches, world):
            total += problem.loss_sum(_forward(problem, theta, x), y).double()
    if not _solo(world):
        total = world.allreduce_sum(total.reshape(1))[0]
    return float(total) / _n(batches)


def loss_acc_at(problem: Problem, theta: Named, batches: Sequence[Batch] | None = None,
                world=None) -> tuple[float, float]:
    """Mean loss and accuracy (NaN for regression) at θ (``world``: batches shared out, as :func:`loss_at`)."""
    batches = problem.batches if batches is None else batches
    total = torch.zeros((), dtype=torch.float64, device=problem.device)
    correct = torch.zeros((), dtype=torch.float64, device=problem.device)
    with torch.no_grad(), eval_mode(problem.model):
        for x, y in _mine(batches, world):
            out = _forward(problem, theta, x)
            total += problem.loss_sum(out, y).double()
            if problem.classification:
                correct += problem.correct(out, y).double()
    if not _solo(world):
        total, correct = world.allreduce_sum(torch.stack([total, correct]))
    n = _n(batches)
    return float(total) / n, (float(correct) / n if problem.classification else float("nan"))


def loss_grad(problem: Problem, theta: Named, batches: Sequence[Batch] | None = None,
              world=None) -> tuple[float, Named]:
    """L(θ) and ∇L(θ) = Σ_b ∇ℓ_sum(b)/N (batch-size weighted; unused parameters get zeros).

    ``world``: each rank sums the gradients of its own batches (batch i on rank i % size) in float64,
    then one allreduce of [gradient, loss] gives every rank the whole result (in θ's dtypes).
    """
    batches = problem.batches if batches is None else batches
    n = _n(batches)
    keys = list(theta)
    leaves = [theta[k].detach().requires_grad_(True) for k in keys]
    solo = _solo(world)
    # alone: accumulate in θ's dtype, as always; under a world: in float64, so that only the order of
    # float64 additions differs from one process
    grads = [torch.zeros_like(t) if solo else torch.zeros_like(t, dtype=torch.float64) for t in leaves]
    total = 0.0
    with eval_mode(problem.model):
        for x, y in _mine(batches, world):
            loss = problem.loss_sum(_forward(problem, dict(zip(keys, leaves)), x), y) / n
            gs = torch.autograd.grad(loss, leaves, allow_unused=True)
            for acc, gb in zip(grads, gs):
                if gb is not None:
                    acc.add_(gb)
            total += float(loss.detach())
    if solo:
        return total, dict(zip(keys, grads))
    loss_part = torch.tensor([total], dtype=torch.float64, device=problem.device)
    flat = world.allreduce_sum(torch.cat([*(g.reshape(-1) for g in grads), loss_part]))
    out, pos = {}, 0
    for k, t in zip(keys, leaves):
        out[k] = flat[pos: pos + t.numel()].reshape(t.shape).to(t.dtype)
        pos += t.numel()
    return float(flat[-1]), out


def _dot(a: Named, b: Named) -> float:
    return float(sum((a[k].double() * b[k].double()).sum() for k in a))


def _norm(a: Named) -> float:
    return math.sqrt(max(_dot(a, a), 0.0))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _batch_gen(seed: int, index: int) -> torch.Generator:
    """The generator of example batch ``index``: seeded from (seed, index), so a batch draws the same numbers
    whichever rank computes it and however many batches came before it."""
    state = np.random.SeedSequence([int(seed) % 2 ** 64, int(index)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))


def _randn_like(t: Tensor, g: torch.Generator) -> Tensor:
    return torch.randn(t.shape, generator=g, dtype=torch.float64).to(device=t.device, dtype=t.dtype)


# =========================================================================== 1. curvature
def curvature_metrics(problem: Problem, *, lr: float | None = None, lanczos_steps: int = 100,
                      trace_matvecs: int = 30, trace_method: str = "hutch++", tol: float = 1e-4,
                      seed: int = 0, world=None) -> dict[str, Metric]:
    """λ_max, λ_min of H (Lanczos), tr H (Hutch++ / Hutchinson, with its standard error), λ_max/tr H and,
    given the step size η (``lr``), the edge-of-stability ratio η·λ_max/2 (Cohen et al. 2021: GD on a
    quadratic diverges along the top eigenvector when η·λ_max/2 > 1).

    Uses :mod:`landscape.curvature`: ``hessian_eigenpairs(which='both')`` (Lanczos with full
    reorthogonalization) and ``hessian_trace``. ``world``: products shared over ranks (collective).
    Lanczos runs until both λ_max and λ_min have a relative residual ‖Hv − λv‖ ≤ ``tol``·|λ| (the
    eigenvalue error is then at most about (tol·|λ|)²/gap), or ``lanczos_steps`` steps at most (the cap:
    then a warning, and ``converged=False`` in the stored parameters). Each eigenvalue's parameters hold
    its ``residual``, the ``matvecs`` spent and ``converged``.
    """
    with eval_mode(problem.model):
        # under a world one operator shares the batches out (batch i on rank i % size) and allreduces every
        # product, so Lanczos and Hutch++ run the same on every rank; alone, each builds its own, as always
        src = problem if _solo(world) else C.HessianOperator(problem, world=world)
        eig = C.hessian_eigenpairs(src, k=1, which="both", tol=tol, max_iter=max(lanczos_steps, 2), seed=seed,
                                   return_vectors=False)
        tres = C.hessian_trace(src, matvecs=trace_matvecs, method=trace_method, seed=seed)
    lmax = float(np.max(np.asarray(eig.eigenvalues, dtype=np.float64)))
    lmin = float(eig.smallest) if eig.smallest is not None else float("nan")
    tr, tr_err = float(tres.estimate), float(tres.stderr)
    params = {"seed": seed, "trace_matvecs": trace_matvecs, "backend": "landscape.curvature",
              "trace_method": trace_method, "tol": tol, "max_iter": lanczos_steps}
    lanczos = {**params, "matvecs": int(eig.matvecs), "iterations": int(eig.iterations),
               "stop_rule": "relative residual ≤ tol"}
    r_max = float(eig.residuals[0])
    r_min = float(eig.smallest_residual) if eig.smallest_residual is not None else float("nan")
    # each eigenvalue's own verdict (Lanczos stops when both meet the rule; at the cap one may still have)
    ok_max = bool(eig.converged) or r_max <= tol * abs(lmax)
    ok_min = bool(eig.converged) or r_min <= tol * abs(lmin)
    missed = [f"{n} (relative residual {r / max(abs(v), 1e-300):.2g})"
              for n, v, r, ok in (("lambda_max", lmax, r_max, ok_max), ("lambda_min", lmin, r_min, ok_min)) if not ok]
    if missed and (world is None or getattr(world, "rank", 0) == 0):
        import warnings

        warnings.warn(f"Lanczos stopped at its cap of {lanczos_steps} steps before {' and '.join(missed)} met the "
                      f"tolerance {tol:g}; raise --lanczos-steps for exact values", RuntimeWarning, stacklevel=2)
    out = {
        "lambda_max": Metric("lambda_max", lmax, {**lanczos, "residual": r_max, "converged": ok_max}),
        "lambda_min": Metric("lambda_min", lmin, {**lanczos, "residual": r_min, "converged": ok_min}),
        "trace": Metric("trace", tr, {**params, "stderr": tr_err}),
        "lambda_max_over_trace": Metric("lambda_max_over_trace", lmax / tr if tr else float("nan"), dict(params)),
    }
    if lr is not None:
        out["eos_ratio"] = Metric("eos_ratio", lr * lmax / 2.0, {**params, "lr": lr, "two_over_lr": 2.0 / lr})
    return out


# =========================================================================== 2. ε-sharpness
def eps_sharpness(problem: Problem, *, eps: float = 1e-3, steps: int = 10, step_size: float | None = None,
                  starts: int = 3, seed: int = 0, batches: Sequence[Batch] | None = None, world=None) -> Metric:
    """Keskar et al. (ICLR 2017): φ = [max_{y∈C_ε} L(θ+y) − L(θ)] / (1 + L(θ)) × 100 with the box
    C_ε = {|y_i| ≤ ε(|θ_i| + 1)}.

    Projected (sign) gradient ascent in the box from ``starts`` starting points: the corner along the
    gradient, y₀ = b ⊙ sign ∇L(θ) (the one-step attack), then uniform in C_ε/2 (seeded); each runs
    y ← Π_C(y + s·b ⊙ sign ∇L(θ+y)) with b = ε(|θ|+1) and s = ``step_size`` (default 2/steps, so a
    coordinate can cross the box once), and the best L seen over all starts is kept (the paper
    maximizes with L-BFGS-B). The maximum over the box is not certified: **the value is a lower bound**
    of φ (``lower_bound=True`` in its parameters; more starts or steps can only raise it). Default:
    3 starts × 10 steps (about 3× the gradients of one start; one start alone found 90–96 % of the
    best value a many-start search finds on a trained MLP). The reported L(θ+y) is re-evaluated at the
    best y with the accurate loss kernel, as L(θ). ``world``: losses and gradients shared over ranks
    (collective; the starts are drawn alike on every rank).
    """
    if starts < 1:
        raise LandscapeError(f"eps_sharpness: starts must be at least 1, got {starts}")
    theta = trainable(problem.model)
    bound = {k: eps * (v.abs() + 1) for k, v in theta.items()}
    s = 2.0 / steps if step_size is None else step_size
    g = _gen(seed)
    base = loss_at(problem, theta, batches, world)
    best, best_y = base, None
    for start in range(starts):
        if start == 0:
            _, grad0 = loss_grad(problem, theta, batches, world)
            y = {k: bound[k] * grad0[k].sign() for k in theta}
        else:
            y = {k: (torch.rand(v.shape, generator=g, dtype=torch.float64).to(v) * 2 - 1) * 0.5 * bound[k]
                 for k, v in theta.items()}
        for _ in range(steps + 1):
            pert = {k: theta[k] + y[k] for k in theta}
            val, grad = loss_grad(problem, pert, batches, world)
            if val > best:
                best, best_y = val, {k: t.clone() for k, t in y.items()}
            y = {k: torch.maximum(torch.minimum(y[k] + s * bound[k] * grad[k].sign(), bound[k]), -bound[k])
                 for k in y}
    if best_y is not None:  # (the ascent's values come from the autograd loss; L(θ) from the accurate kernel)
        best = max(base, loss_at(problem, {k: theta[k] + best_y[k] for k in theta}, batches, world))
    value = (best - base) / (1.0 + base) * 100.0
    return Metric("eps_sharpness", value, {"eps": eps, "steps": steps, "starts": starts, "step_size": s,
                                           "seed": seed, "base_loss": base, "max_loss": best, "lower_bound": True})


# =========================================================================== 3. adaptive sharpness
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
    nrm = _norm(gamma)
    if nrm <= rho:
        return gamma
    return {k: v * (rho / nrm) for k, v in gamma.items()}


def _ascent_dir(grad: Named, p: str) -> Named:
    if p == "linf":
        return {k: v.sign() for k, v in grad.items()}
    nrm = _norm(grad)
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
        raise LandscapeError(f"worst-case sharpness: p must be l2 or linf, got {p!r}")
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
    if _solo(world):
        return [one(j) for j in range(n)]
    vals = torch.zeros(n, dtype=torch.float64)
    for j in range(world.rank, n, world.size):
        vals[j] = one(j)
    return [float(v) for v in world.allreduce_sum(vals)]


def default_rho(p: str, adaptive: bool) -> float:
    return {("l2", True): 0.5, ("linf", True): 1e-3, ("l2", False): 0.05, ("linf", False): 5e-4}[(p, adaptive)]


def _se(vals: Sequence[float]) -> float:
    return float(np.std(vals, ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else float("nan")


# =========================================================================== 4. flatness σ
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
        raise LandscapeError(f"flatness: target must be loss or acc, got {target!r}")
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


# =========================================================================== 5. along the gradient
def gradient_path_metrics(problem: Problem, *, etas: Sequence[float] | None = None,
                          world=None) -> dict[str, Metric]:
    """Santurkar et al. (NeurIPS 2018), along the full-batch gradient step θ − ηg for η ∈ ``etas``
    (default 8 values in [0.05, 0.4]):

    * loss variation: max_η L(θ−ηg) − min_η L(θ−ηg) (the range, with L(θ−ηg) stored per η);
    * gradient predictiveness: ‖g − ∇L(θ−ηg)‖ per η; the scalar is its maximum over η;
    * effective β-smoothness: max_η ‖g − ∇L(θ−ηg)‖ / ‖ηg‖.
    On a quadratic ∇L(θ−ηg) = g − ηHg, so the predictiveness is exactly ‖H·ηg‖.
    ``world``: gradients shared over ranks (collective).
    """
    etas = list(np.linspace(0.05, 0.4, 8) if etas is None else etas)
    theta = trainable(problem.model)
    _, g = loss_grad(problem, theta, world=world)
    gn = _norm(g)
    losses, diffs, betas = [], [], []
    for eta in etas:
        moved = {k: theta[k] - eta * g[k] for k in theta}
        val, g2 = loss_grad(problem, moved, world=world)
        d = _norm({k: g[k] - g2[k] for k in g})
        losses.append(val)
        diffs.append(d)
        betas.append(d / (eta * gn) if gn > 0 else float("nan"))
    prm = {"etas": [float(e) for e in etas], "grad_norm": gn}
    eta_arr = np.asarray(etas, dtype=np.float64)
    return {
        "loss_variation": Metric("loss_variation", float(np.max(losses) - np.min(losses)), dict(prm),
                                 {"loss_along_gradient": (np.asarray(losses), {"eta": eta_arr})}),
        "gradient_predictiveness": Metric("gradient_predictiveness", float(np.max(diffs)), dict(prm),
                                          {"gradient_change": (np.asarray(diffs), {"eta": eta_arr})}),
        "beta_smoothness": Metric("beta_smoothness", float(np.nanmax(betas)), dict(prm)),
    }


# =========================================================================== 6. directional sharpness
def directional_sharpness(problem: Problem, direction: Named | None = None, *, label: str = "",
                          world=None) -> dict[str, Metric]:
    """Pan & Li (2023): uᵀHu/‖u‖² for an update direction u (default u = −g, the gradient-descent step),
    reported with the gradient correlation gᵀu and cos(g, u) = gᵀu/(‖g‖‖u‖).

    ``direction`` names (a subset of) the trainable parameters; missing ones are zero. ``world``: the
    gradient and the Hessian-vector product shared over ranks (collective).
    """
    theta = trainable(problem.model)
    _, g = loss_grad(problem, theta, world=world)
    if direction is None:
        u = {k: -v for k, v in g.items()}
        label = label or "negative gradient"
    else:
        unknown = [k for k in direction if k not in theta]
        if unknown:
            raise LandscapeError(f"directional sharpness: the direction names tensors the model does not train: "
                                 f"{', '.join(unknown[:3])}")
        u = {k: direction[k].to(device=v.device, dtype=v.dtype) if k in direction else torch.zeros_like(v)
             for k, v in theta.items()}
    un = direction_norm(u)
    with eval_mode(problem.model):
        if _solo(world):
            hu = C.hvp(problem, u, params=theta)
        else:
            hu = C.HessianOperator(problem, params=theta, cache=False, world=world).matvec(u)
    gu = _dot(g, u)
    prm = {"direction": label or "given", "direction_norm": un, "grad_norm": _norm(g)}
    return {
        "directional_sharpness": Metric("directional_sharpness", _dot(u, hu) / un ** 2, dict(prm)),
        "gradient_correlation": Metric("gradient_correlation", gu, {**prm, "cosine": gu / (un * _norm(g) + 1e-300)}),
    }


# =========================================================================== all of them
GROUPS: dict[str, tuple[str, ...]] = {
    "curvature": ("lambda_max", "lambda_min", "trace", "lambda_max_over_trace", "eos_ratio"),
    "eps": ("eps_sharpness",),
    "worst": ("worst_adaptive_l2", "worst_adaptive_linf", "worst_standard_l2", "worst_standard_linf"),
    "average": ("avg_adaptive", "avg_standard"),
    "flatness": ("flatness_sigma", "flatness_sigma_magnitude"),
    "gradient_path": ("loss_variation", "gradient_predictiveness", "beta_smoothness"),
    "directional": ("directional_sharpness", "gradient_correlation"),
    "layerwise": ("layerwise",),
}
ALL_METRICS: tuple[str, ...] = tuple(n for names in GROUPS.values() for n in names)


def parse_metrics(text: str | Sequence[str]) -> list[str]:
    """``all``, group names (curvature, eps, worst, average, flatness, gradient_path, directional,
    layerwise) and metric names, comma separated → ordered unique metric names."""
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    out: list[str] = []
    for it in items:
        names = ALL_METRICS if it == "all" else GROUPS.get(it, (it,) if it in ALL_METRICS else None)
        if names is None:
            raise LandscapeError(f"--metrics: unknown metric {it!r}; choose all, a group "
                                 f"({', '.join(GROUPS)}) or a name ({', '.join(ALL_METRICS)})")
        out.extend(n for n in names if n not in out)
    if not out:
        raise LandscapeError(f"--metrics {text!r} names no metric; choose all, a group ({', '.join(GROUPS)}) or a "
                             f"name ({', '.join(ALL_METRICS)})")
    return out


def direction_norm(u: Named) -> float:
    """‖u‖ of a direction for directional sharpness; a one-line error if it is zero."""
    un = _norm(u)
    if un == 0:
        raise LandscapeError("directional sharpness: the direction is zero (are the two checkpoints identical?)")
    return un


def compute_metrics(problem: Problem, metrics: str | Sequence[str] = "all", *, lr: float | None = None,
                    seed: int = 0, eps: float = 1e-3, eps_steps: int = 10, eps_starts: int = 3,
                    rho: float | None = None,
                    m: int = 128, max_examples: int | None = 1024, apgd_steps: int = 20, avg_samples: int = 10,
                    flat_target: str | None = None, flat_threshold: float = 0.1, flat_samples: int = 10,
                    flat_iters: int = 20, etas: Sequence[float] | None = None, direction: Named | None = None,
                    direction_label: str = "", lanczos_steps: int = 100, trace_matvecs: int = 30, tol: float = 1e-4,
                    progress=None, world=None) -> dict[str, Metric]:
    """Every requested metric (names as in :func:`parse_metrics`; ``layerwise`` is skipped here, see
    :func:`landscape.layerwise.layerwise`). ``eos_ratio`` is computed only when ``lr`` is given.

    ``world`` (a :class:`~landscape.parallel.World` or any object with ``rank``, ``size`` and
    ``allreduce_sum``): every rank computes its share (data batches i on rank i % size, example batches of
    worst-/average-case sharpness j on rank j % size) and gets the same results as one process, up to the
    order of float64 additions. Collective: every rank must call it with the same arguments."""
    names = parse_metrics(metrics)
    out: dict[str, Metric] = {}
    say = progress or (lambda s: None)

    def want(group: str) -> list[str]:
        return [n for n in GROUPS[group] if n in names]

    if want("curvature"):
        say("curvature")
        res = curvature_metrics(problem, lr=lr, lanczos_steps=lanczos_steps, trace_matvecs=trace_matvecs, seed=seed,
                                tol=tol, world=world)
        out.update({k: v for k, v in res.items() if k in names})
    if want("eps"):
        say("eps-sharpness")
        out["eps_sharpness"] = eps_sharpness(problem, eps=eps, steps=eps_steps, starts=eps_starts, seed=seed,
                                             world=world)
    for n in want("worst"):
        say(n)
        _, kind, p = n.split("_")
        out[n] = worst_case_sharpness(problem, p=p, adaptive=kind == "adaptive",
                                      rho=rho, m=m, max_examples=max_examples, steps=apgd_steps, seed=seed,
                                      world=world)
    for n in want("average"):
        say(n)
        out[n] = average_case_sharpness(problem, adaptive=n.endswith("adaptive"), rho=rho, m=m,
                                        max_examples=max_examples, samples=avg_samples, seed=seed, world=world)
    for n in want("flatness"):
        say(n)
        out[n] = flatness_sigma(problem, magnitude_aware=n.endswith("magnitude"), target=flat_target,
                                threshold=flat_threshold, samples=flat_samples, iters=flat_iters, seed=seed,
                                world=world)
    if want("gradient_path"):
        say("gradient path")
        out.update({k: v for k, v in gradient_path_metrics(problem, etas=etas, world=world).items() if k in names})
    if want("directional"):
        say("directional sharpness")
        res = directional_sharpness(problem, direction, label=direction_label, world=world)
        out.update({k: v for k, v in res.items() if k in names})
    return out


# =========================================================================== output
def format_value(v) -> str:
    if np.size(v) != 1:
        return f"<array {np.shape(v)}>"
    x = float(np.asarray(v).reshape(-1)[0])
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.6g}"


def format_table(metrics: dict[str, Metric]) -> str:
    """A plain-text table: metric, value, the main parameters."""
    keys = ("rho", "p", "eps", "m", "steps", "starts", "lr", "target", "threshold", "direction", "stderr", "backend",
            "residual")
    rows = []
    for name, met in metrics.items():
        prm = ", ".join(f"{k}={format_value(met.params[k]) if not isinstance(met.params[k], str) else met.params[k]}"
                        for k in keys if k in met.params and met.params[k] is not None)
        if met.params.get("lower_bound"):
            prm = "lower bound of the maximum, " + prm
        if met.params.get("converged") is False:
            prm += ", NOT converged (raise --lanczos-steps)"
        rows.append((name, format_value(met.value), prm))
    w0 = max([len("metric")] + [len(r[0]) for r in rows])
    w1 = max([len("value")] + [len(r[1]) for r in rows])
    lines = [f"{'metric':<{w0}}  {'value':>{w1}}  parameters", f"{'-' * w0}  {'-' * w1}  {'-' * 10}"]
    lines += [f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def _jsonable(v):
    if isinstance(v, np.ndarray | Tensor):
        return np.asarray(v.detach().cpu() if isinstance(v, Tensor) else v).tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _set_attrs(obj, params: dict) -> None:
    for k, v in params.items():
        if v is None:
            continue
        if isinstance(v, bool | int | float | str):
            obj.attrs[k] = v
        elif isinstance(v, np.ndarray) and v.dtype.kind in "fiu":
            obj.attrs[k] = v
        else:
            obj.attrs[k] = json.dumps(_jsonable(v) if not isinstance(v, list | tuple | dict) else
                                      json.loads(json.dumps(v, default=_jsonable)))


def write_groups(f, metrics: dict[str, Metric] | None = None, layer=None) -> None:
    """Write /metrics/<name> (and extras) and /layerwise/<quantity> into an open h5py file, replacing
    datasets of the same name."""
    def put(path: str, data, attrs: dict) -> None:
        if path in f:
            del f[path]
        ds = f.create_dataset(path, data=np.asarray(data, dtype=np.float64))
        _set_attrs(ds, attrs)

    for name, met in (metrics or {}).items():
        put(f"metrics/{name}", met.value, met.params)
        for ename, (arr, eattrs) in met.extras.items():
            put(f"metrics/{ename}", arr, {**eattrs, "of": name})
    if layer is not None:
        layer.write(f)


def save_results(path: str, metrics: dict[str, Metric] | None = None, layer=None, *, command: str = "",
                 config: dict | None = None, model_fingerprint: str = "", data_fingerprint: str = "",
                 provenance: dict | None = None) -> str:
    """Store metrics (and a :class:`landscape.layerwise.LayerwiseResult`) in ``path``.

    An existing landscape file (e.g. a surface) gets /metrics and /layerwise added in place (under the
    writer lock; datasets of the same name are replaced) -- if it was made from the same model, data, loss
    and samples (``provenance``, see :func:`landscape.store.check_provenance`); otherwise a new
    ``kind="sharpness"`` file is created atomically. Returns ``"added"`` or ``"created"``.
    """
    from .store import base_attrs, update_file

    attrs = base_attrs(command, config or {}, model_fingerprint, data_fingerprint, kind="sharpness")
    parts = " and ".join((["/metrics"] if metrics else []) + (["/layerwise"] if layer is not None else [])) or "metrics"
    target = update_file(path, "sharpness", attrs, provenance=provenance, adding=parts, need=_size(metrics, layer))
    with target as f:
        write_groups(f, metrics, layer)
        if not target.created:
            f.attrs["metrics_command"] = command
    return "created" if target.created else "added"


def _size(metrics: dict[str, Metric] | None, layer) -> int:
    """About how many bytes :func:`write_groups` adds (for the free-space check)."""
    n = sum(8 * (np.size(m.value) + sum(np.size(a) for a, _ in m.extras.values())) for m in (metrics or {}).values())
    return n + (1 << 16) * (1 if layer is not None else 0)
