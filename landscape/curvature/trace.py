r"""Stochastic trace estimation: Hutchinson and Hutch++, with a fixed budget of operator products.

**Hutchinson.** For Rademacher g (±1 entries) E[gᵀAg] = tr(A), so with m products

.. math::  \widehat{tr} = \frac1m \sum_{i=1}^m g_iᵀ A g_i, \qquad
           \mathrm{se} = \frac{s}{\sqrt m},\ s^2 = \frac{1}{m-1}\sum_i (g_iᵀAg_i - \widehat{tr})^2 .

Its variance is 2(‖A‖_F² − Σᵢ A_ii²): large when a few eigenvalues dominate, as for a network's
Hessian (a bulk near zero and a handful of outliers).

**Hutch++** (Meyer, Musco, Musco, Woodruff, SOSA 2021). Split the m products in three: s = ⌊m/3⌋
for A S (S: n×s Rademacher), Q = orth(AS) (QR in float64); s for AQ, giving tr(QᵀAQ) exactly; the
remaining r = m − 2s on Hutchinson for the deflated remainder:

.. math::  \widehat{tr} = tr(QᵀAQ) + \frac1r \sum_{i=1}^r g_iᵀ(I-QQᵀ)A(I-QQᵀ)g_i .

Q captures the outlying eigenvalues, so the remainder's variance 2‖(I−QQᵀ)A(I−QQᵀ)‖_F² is small.
*Standard error of Hutch++:* given S (hence Q), tr(QᵀAQ) is a fixed number and the only randomness
left is in the r residual samples xᵢ = gᵢᵀ(I−QQᵀ)A(I−QQᵀ)gᵢ, i.i.d. with mean tr((I−QQᵀ)A(I−QQᵀ));
the reported stderr is their sample standard deviation over √r, i.e. the stderr of the residual
Hutchinson part (conditional on the sketch; the estimator is unbiased whatever S is).

With a budget m ≥ dim the trace is computed exactly from the unit vectors (stderr 0).

Example:
    >>> import torch
    >>> A = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
    >>> r = hutchinson(A, matvecs=10)
    >>> r.estimate == 5050.0, r.stderr == 0.0  # Rademacher is exact on a diagonal matrix
    (True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import LandscapeError
from ._base import as_operator, generator, rademacher, seed_value

METHODS = ("hutch++", "hutchinson")


@dataclass
class TraceResult:
    """tr(A) ≈ ``estimate`` ± ``stderr``; ``samples`` are the Hutchinson terms (Hutch++: of the remainder)."""

    estimate: float
    stderr: float
    method: str
    matvecs: int
    seed: int | None
    sketch_trace: float = 0.0  # Hutch++: tr(QᵀAQ)
    sketch_size: int = 0  # Hutch++: number of columns of S
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def to_attrs(self) -> dict:
        out: dict = dict(method=self.method, matvecs=int(self.matvecs), stderr=float(self.stderr),
                         samples=len(self.samples))
        if self.method == "hutch++":
            out.update(sketch_size=int(self.sketch_size), sketch_trace=float(self.sketch_trace))
        if self.seed is not None:
            out["seed"] = int(self.seed)
        return out


def _stderr(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def _exact(op, seed) -> TraceResult:
    start = op.matvecs
    total = 0.0
    for i in range(op.dim):
        e = torch.zeros(op.dim, dtype=torch.float64, device=op.device)
        e[i] = 1.0
        total += float(op.matvec_flat(e).to(torch.float64)[i])
    return TraceResult(total, 0.0, "exact", op.matvecs - start, seed_value(seed))


def hutchinson(op, matvecs: int = 100, seed: int | torch.Generator | None = 0) -> TraceResult:
    """Hutchinson's estimator with ``matvecs`` Rademacher probes (see the module docstring)."""
    op = as_operator(op)
    if matvecs < 1:
        raise LandscapeError(f"matvecs must be at least 1, got {matvecs}")
    if matvecs >= op.dim:
        return _exact(op, seed)
    gen = generator(seed)
    start = op.matvecs
    vals = np.empty(matvecs)
    for i in range(matvecs):
        g = rademacher(op.dim, gen, op.device)
        vals[i] = float(g @ op.matvec_flat(g).to(torch.float64))
    return TraceResult(float(vals.mean()), _stderr(vals), "hutchinson", op.matvecs - start, seed_value(seed),
                       samples=vals)


def hutchpp(op, matvecs: int = 99, seed: int | torch.Generator | None = 0) -> TraceResult:
    """Hutch++ with a budget of ``matvecs`` products (see the module docstring); below 3 it is Hutchinson."""
    op = as_operator(op)
    if matvecs < 3:
        res = hutchinson(op, matvecs, seed)
        return res
    if matvecs >= op.dim:
        return _exact(op, seed)
    gen = generator(seed)
    start = op.matvecs
    s = matvecs // 3
    r = matvecs - 2 * s
    n, dev = op.dim, op.device
    # Streamed: each sketch probe is drawn when it is used (the same draws as one s × n block) and A Q is
    # never stored (tr(QᵀAQ) = Σ qᵢᵀ A qᵢ), so the sketch holds 2·s vectors (AS, then Q), not 4·s.
    AS = torch.empty(n, s, dtype=torch.float64, device=dev)
    for j in range(s):
        AS[:, j] = op.matvec_flat(rademacher(n, gen, dev)).to(torch.float64)
    Q, _ = torch.linalg.qr(AS)  # n × s, orthonormal columns
    del AS
    t_sketch = float(sum(float(q @ op.matvec_flat(q).to(torch.float64)) for q in Q.T))
    vals = np.empty(r)
    for i in range(r):
        g = rademacher(n, gen, dev)
        g = g - Q @ (Q.T @ g)
        vals[i] = float(g @ op.matvec_flat(g).to(torch.float64))
    return TraceResult(t_sketch + float(vals.mean()), _stderr(vals), "hutch++", op.matvecs - start, seed_value(seed),
                       sketch_trace=t_sketch, sketch_size=s, samples=vals)


def hessian_trace(problem, matvecs: int = 99, method: str = "hutch++", seed: int | torch.Generator | None = 0,
                  curvature: str = "hessian") -> TraceResult:
    """tr(H) of a Problem's loss Hessian (or of an operator/matrix) with ``matvecs`` products.

    Example:
        >>> from landscape.problem import make_problem
        >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=64, device="cpu",
        ...                  model_args={"width": 8, "depth": 1})
        >>> t = hessian_trace(p, matvecs=9, method="hutch++")
        >>> t.matvecs, t.sketch_size, t.stderr > 0
        (9, 3, True)
    """
    if method not in METHODS:
        raise LandscapeError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    op = as_operator(problem, curvature=curvature)
    return hutchpp(op, matvecs, seed) if method == "hutch++" else hutchinson(op, matvecs, seed)
