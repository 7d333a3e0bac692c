"""Curvature metrics: λ_max, λ_min, tr H, λ_max / tr H and the edge-of-stability ratio η·λ_max/2 (Cohen et al.).

Example:
    >>> from landscape.problem import make_problem
    >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=32, device="cpu",
    ...                  model_args={"width": 4, "depth": 1})
    >>> m = curvature_metrics(p, lr=0.1, lanczos_steps=80, trace_matvecs=4, tol=1e-3)
    >>> m["lambda_max"].value >= m["lambda_min"].value, sorted(m)[0]
    (True, 'eos_ratio')
"""

from __future__ import annotations

import warnings

import numpy as np

from .. import curvature as C
from ..objective import eval_mode, solo
from ..problem import Problem
from ._base import Family, Metric, Option


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
        src = problem if solo(world) else C.HessianOperator(problem, world=world)
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
        warnings.warn(f"Lanczos stopped at its cap of {lanczos_steps} steps before {' and '.join(missed)} met the "
                      f"tolerance {tol:g}; raise `lanczos_steps` for exact values", RuntimeWarning, stacklevel=2)
    out = {
        "lambda_max": Metric("lambda_max", lmax, {**lanczos, "residual": r_max, "converged": ok_max}),
        "lambda_min": Metric("lambda_min", lmin, {**lanczos, "residual": r_min, "converged": ok_min}),
        "trace": Metric("trace", tr, {**params, "stderr": tr_err}),
        "lambda_max_over_trace": Metric("lambda_max_over_trace", lmax / tr if tr else float("nan"), dict(params)),
    }
    if lr is not None:
        out["eos_ratio"] = Metric("eos_ratio", lr * lmax / 2.0, {**params, "lr": lr, "two_over_lr": 2.0 / lr})
    return out


def _compute(problem: Problem, names, o: dict, world, say) -> dict[str, Metric]:
    say("curvature")
    res = curvature_metrics(problem, lr=o["lr"], lanczos_steps=o["lanczos_steps"], trace_matvecs=o["trace_matvecs"],
                            seed=o["seed"], tol=o["tol"], world=world)
    return {k: v for k, v in res.items() if k in names}


FAMILY = Family("curvature", ("lambda_max", "lambda_min", "trace", "lambda_max_over_trace", "eos_ratio"), _compute, (
    Option("lr", None, "float+", "training step size η: adds the edge-of-stability ratio η·λmax/2", "ETA"),
    Option("lanczos_steps", 100, "int+", "most Lanczos steps for λmax/λmin (a cap: Lanczos stops earlier at --tol; "
           "at the cap it warns and stores converged=False)"),
    Option("tol", 1e-4, "float+", "relative residual tolerance of λmax/λmin: stop when both have ‖Hv − λv‖ ≤ "
           "tol·|λ| (stored with each: residual, matvecs, converged)"),
    Option("trace_matvecs", 30, "int+"),
))
