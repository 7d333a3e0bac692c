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

**Stopping rule** (``rtol``). With a relative tolerance the probes are drawn one at a time and the
estimator stops, within the budget of ``matvecs`` products (the cap), as soon as its own standard
error is at most ``rtol`` · |estimate| after at least ``MIN_SAMPLES`` (10) samples; the result's
95 % interval is estimate ± t₀.₉₇₅,ₙ₋₁ · stderr (Student's t over the n samples the stderr rests on).
Hutch++ keeps its sketch of ⌊m/3⌋ vectors and stops its residual phase early (at least 2⌊m/3⌋ + 10
products): with a sketch of 10 vectors instead of 33 on a spectrum of 10 outliers among 200
eigenvalues, the residual samples were so skewed that the 95 % interval held the trace in only 88 %
of 100 seeds (98 % with the full sketch), so the sketch is not shrunk.

**Choosing between them** (``method="auto"``). The s sketch probes of Hutch++ are Rademacher vectors
whose products A gᵢ are computed anyway, so gᵢᵀAgᵢ are s free Hutchinson samples (variance σ²_H).
After the sketch and a pilot of ``MIN_SAMPLES`` residual samples (variance σ²_R), the estimator whose
variance at the end of the budget m is smaller goes on: Hutch++ with σ²_R/(m − 2s), or Hutchinson with
σ²_H/(m − s − pilot), continuing from the sketch's samples (the products of the sketch's second half
and of the pilot are counted but not used). The sketch does not pay on a flat or indefinite spectrum,
where Σ|λ| ≫ |tr| and no few eigenvalues carry the Frobenius norm.

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
from ._base import generator, rademacher, seed_value
from .operators import as_operator

METHODS = ("auto", "hutch++", "hutchinson")
#: fewest samples a standard error (and so the stopping rule) rests on
MIN_SAMPLES = 10
#: the coverage of the reported interval
CONFIDENCE = 0.95


def t_quantile(p: float, dof: int) -> float:
    """Student's t quantile (Cornish–Fisher expansion around the normal one; < 1e-3 off for dof ≥ 3)."""
    if dof < 1:
        return float("nan")
    z = _normal_quantile(p)
    n = float(dof)
    z3, z5, z7 = z ** 3, z ** 5, z ** 7
    return float(z + (z3 + z) / (4 * n) + (5 * z5 + 16 * z3 + 3 * z) / (96 * n ** 2)
                 + (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * n ** 3))


def _normal_quantile(p: float) -> float:
    """Φ⁻¹(p) by bisection on erf (exact to 1e-12; called once per result)."""
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass
class TraceResult:
    """tr(A) ≈ ``estimate`` ± ``stderr``; ``samples`` are the Hutchinson terms (Hutch++: of the remainder).

    ``interval``: the 95 % interval estimate ± t·stderr (t: Student's, for the samples the stderr rests on);
    ``converged``: the stopping rule was met (always True for a fixed budget and for the exact trace);
    ``rtol``: the stopping rule's relative tolerance (None: the whole budget was spent).
    """

    estimate: float
    stderr: float
    method: str
    matvecs: int
    seed: int | None
    sketch_trace: float = 0.0  # Hutch++: tr(QᵀAQ)
    sketch_size: int = 0  # Hutch++: number of columns of S
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    rtol: float | None = None
    converged: bool = True

    @property
    def interval(self) -> tuple[float, float]:
        if self.stderr == 0.0:
            return (self.estimate, self.estimate)
        t = t_quantile(0.5 + CONFIDENCE / 2, len(self.samples) - 1)
        return (self.estimate - t * self.stderr, self.estimate + t * self.stderr)

    def to_attrs(self) -> dict:
        lo, hi = self.interval
        out: dict = dict(method=self.method, matvecs=int(self.matvecs), stderr=float(self.stderr),
                         samples=len(self.samples), interval=[float(lo), float(hi)], confidence=CONFIDENCE,
                         converged=bool(self.converged))
        if self.rtol is not None:
            out["rtol"] = float(self.rtol)
        if self.method == "hutch++":
            out.update(sketch_size=int(self.sketch_size), sketch_trace=float(self.sketch_trace))
        if self.seed is not None:
            out["seed"] = int(self.seed)
        return out


def _stderr(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def _met(vals: list[float], offset: float, rtol: float | None) -> bool:
    """The stopping rule: at least MIN_SAMPLES samples and stderr ≤ rtol · |offset + mean|."""
    if rtol is None or len(vals) < MIN_SAMPLES:
        return False
    x = np.asarray(vals)
    return _stderr(x) <= rtol * abs(offset + float(x.mean()))


def _exact(op, seed) -> TraceResult:
    start = op.matvecs
    total = 0.0
    for i in range(op.dim):
        e = torch.zeros(op.dim, dtype=torch.float64, device=op.device)
        e[i] = 1.0
        total += float(op.matvec_flat(e).to(torch.float64)[i])
    return TraceResult(total, 0.0, "exact", op.matvecs - start, seed_value(seed))


def _check(matvecs: int, rtol: float | None) -> None:
    if matvecs < 1:
        raise LandscapeError(f"matvecs must be at least 1, got {matvecs}")
    if rtol is not None and not (rtol > 0 and math.isfinite(rtol)):
        raise LandscapeError(f"rtol must be a positive number, got {rtol}")


def _hutchinson_from(op, gen, start: int, matvecs: int, rtol: float | None, vals: list[float]) -> list[float]:
    """Hutchinson samples appended to ``vals`` until the stopping rule or ``matvecs`` products since ``start``."""
    while op.matvecs - start < matvecs and not _met(vals, 0.0, rtol):
        g = rademacher(op.dim, gen, op.device)
        vals.append(float(g @ op.matvec_flat(g).to(torch.float64)))
    return vals


def hutchinson(op, matvecs: int = 100, seed: int | torch.Generator | None = 0,
               rtol: float | None = None) -> TraceResult:
    """Hutchinson's estimator with ``matvecs`` Rademacher probes, or fewer under the stopping rule ``rtol``
    (see the module docstring)."""
    op = as_operator(op)
    _check(matvecs, rtol)
    if matvecs >= op.dim:
        return _exact(op, seed)
    gen = generator(seed)
    start = op.matvecs
    vals = np.asarray(_hutchinson_from(op, gen, start, matvecs, rtol, []))
    return TraceResult(float(vals.mean()), _stderr(vals), "hutchinson", op.matvecs - start, seed_value(seed),
                       samples=vals, rtol=rtol, converged=rtol is None or _met(list(vals), 0.0, rtol))


def _switch(residual: list[float], plain: list[float], matvecs: int, s: int) -> bool:
    """Whether Hutchinson ends the budget with the smaller variance: σ²_H / (s + the products left) against
    Hutch++'s σ²_R / (matvecs − 2s) (the pilot's samples, being Hutch++'s, are lost on a switch)."""
    left = matvecs - 2 * s - len(residual)
    return float(np.var(plain, ddof=1)) / (s + left) < float(np.var(residual, ddof=1)) / (matvecs - 2 * s)


def hutchpp(op, matvecs: int = 99, seed: int | torch.Generator | None = 0, rtol: float | None = None,
            auto: bool = False) -> TraceResult:
    """Hutch++ with a budget of ``matvecs`` products (see the module docstring); below 3 it is Hutchinson.

    ``rtol``: stop once stderr ≤ rtol·|estimate| (the budget is then a cap). ``auto``: switch to
    Hutchinson when the sketch does not reduce the variance (decided after a pilot of ``MIN_SAMPLES`` residual samples).
    """
    op = as_operator(op)
    _check(matvecs, rtol)
    if matvecs < 3:
        return hutchinson(op, matvecs, seed, rtol)
    if matvecs >= op.dim:
        return _exact(op, seed)
    gen = generator(seed)
    start = op.matvecs
    s = matvecs // 3
    n, dev = op.dim, op.device
    S = rademacher(n, gen, dev, n=s)  # rows are the sketch vectors
    AS = torch.stack([op.matvec_flat(x).to(torch.float64) for x in S], dim=1)  # n × s
    plain = [float(v) for v in (S * AS.T).sum(1)]  # gᵢᵀAgᵢ: free Hutchinson samples
    Q, _ = torch.linalg.qr(AS)  # n × s, orthonormal columns
    AQ = torch.stack([op.matvec_flat(q).to(torch.float64) for q in Q.T], dim=1)
    t_sketch = float(torch.trace(Q.T @ AQ))
    vals: list[float] = []
    while op.matvecs - start < matvecs and not _met(vals, t_sketch, rtol):
        g = rademacher(n, gen, dev)
        g = g - Q @ (Q.T @ g)
        vals.append(float(g @ op.matvec_flat(g).to(torch.float64)))
        if auto and len(vals) == MIN_SAMPLES and len(plain) > 1 and _switch(vals, plain, matvecs, s):
            # the sketch did not reduce the variance enough: the rest of the budget on Hutchinson, from its s samples
            h = np.asarray(_hutchinson_from(op, gen, start, matvecs, rtol, plain))
            return TraceResult(float(h.mean()), _stderr(h), "hutchinson", op.matvecs - start, seed_value(seed),
                               samples=h, rtol=rtol, converged=rtol is None or _met(list(h), 0.0, rtol))
    x = np.asarray(vals)
    return TraceResult(t_sketch + float(x.mean()), _stderr(x), "hutch++", op.matvecs - start, seed_value(seed),
                       sketch_trace=t_sketch, sketch_size=s, samples=x, rtol=rtol,
                       converged=rtol is None or _met(vals, t_sketch, rtol))


def hessian_trace(problem, matvecs: int = 99, method: str = "hutch++", seed: int | torch.Generator | None = 0,
                  curvature: str = "hessian", rtol: float | None = None) -> TraceResult:
    """tr(H) of a Problem's loss Hessian (or of an operator/matrix) with at most ``matvecs`` products.

    ``method``: ``hutch++``, ``hutchinson`` or ``auto`` (Hutch++, switching to Hutchinson when its sketch
    does not reduce the variance). ``rtol``: stop once the standard error is at most ``rtol`` × |estimate|
    (None: spend the whole budget).

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
    if method == "hutchinson":
        return hutchinson(op, matvecs, seed, rtol)
    return hutchpp(op, matvecs, seed, rtol, auto=method == "auto")
