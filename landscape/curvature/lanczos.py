r"""Extreme eigenpairs of a symmetric operator: Lanczos with full reorthogonalization, and power iteration.

**Lanczos.** From a unit start q₁, m steps build an orthonormal basis Q_m = [q₁ … q_m] of the
Krylov space span{q₁, Aq₁, …, A^{m−1}q₁} and a tridiagonal T_m = Q_mᵀ A Q_m (diagonal α_j,
off-diagonal β_j) with

.. math::  A Q_m = Q_m T_m + β_m q_{m+1} e_mᵀ .

An eigenpair (θ_i, u_i) of T_m gives the Ritz pair (θ_i, y_i = Q_m u_i) whose residual is known
without another product: ‖A y_i − θ_i y_i‖ = |β_m · u_i[m]|. Iteration stops when every wanted
Ritz pair has r_i ≤ tol·|θ_i| (or ``atol``), or after ``max_iter`` steps. Each new vector is
orthogonalized against the whole basis twice (classical Gram–Schmidt, twice is enough), which
keeps Q_m orthonormal to machine precision: no spurious copies of converged eigenvalues, so the
top-k come out right with about as many products as the plain recurrence. The basis is kept in
float64 whatever the model's dtype (``basis_dtype=torch.float32`` halves it), in blocks of 16
vectors: about m·P·8 bytes for m steps. For an operator on a GPU it lives in pinned host memory
(``basis="auto"``), so the GPU holds a few vectors whatever m; Gram–Schmidt then runs on the CPU.
Stochastic Lanczos quadrature needs no basis at all (:func:`tridiagonal`).
On breakdown (β ≈ 0: an invariant subspace) the run continues from a fresh random vector
orthogonal to the basis, so repeated eigenvalues are found too (convergence is judged after at
least one step of the new block).

**Power iteration with deflation** (PyHessian, Yao et al. 2020): v ← Hv/‖Hv‖ after projecting out
the eigenvectors already found, until the residual ‖Hv − λv‖ ≤ ``tol``·|λ| (the rule Lanczos uses,
and what ``converged`` reports), or with ``rule="change"`` until the Rayleigh quotient changes by less
than ``tol`` relative (PyHessian's rule, 1e-3 there: it stops with residuals ~1e-2·|λ|). It converges
like (λ₂/λ₁)^t and finds the eigenvalue of largest magnitude:
the baseline Lanczos is measured against.

Example:
    >>> import torch
    >>> from landscape.curvature import MatrixOperator
    >>> A = torch.diag(torch.arange(1.0, 51.0, dtype=torch.float64))
    >>> res = lanczos(MatrixOperator(A), k=3, which="both", tol=1e-8)
    >>> res.eigenvalues.round(6).tolist(), round(res.smallest, 6)
    ([50.0, 49.0, 48.0], 1.0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import LandscapeError
from ._base import gaussian, generator, seed_value
from .operators import as_operator

WHICH = ("LA", "SA", "both")
METHODS = ("lanczos", "power")


@dataclass
class EigenResult:
    """Extreme eigenpairs of a symmetric operator.

    Attributes:
        eigenvalues: float64 (k,), descending (the k largest for ``LA``/``both``, the k smallest for ``SA``).
        eigenvectors: unit vectors matching ``eigenvalues`` -- parameter-shaped named dicts for a
            Problem's operator, flat tensors for a bare operator -- or None if not requested.
        residuals: ‖A y − λ y‖ for each pair (Lanczos: the Ritz estimate |β_m u[m]|; power: computed).
        smallest, smallest_vector, smallest_residual: the smallest eigenpair (``SA``/``both``).
        matvecs: operator products spent; iterations: Lanczos steps (power: total steps).
        converged: every wanted pair met the stopping rule ``rule``.
        rule: ``"residual"``: ‖Ay − λy‖ ≤ max(tol·|λ|, atol) for every wanted pair (Lanczos, and power
            iteration by default); ``"change"``: PyHessian's relative change of the Rayleigh quotient
            (``power_iteration(rule="change")``, a baseline: it stops long before the residual is small).
        ritz_values: all Ritz values of the last T_m (Lanczos), ascending.
    """

    eigenvalues: np.ndarray
    eigenvectors: list[Any] | None
    residuals: np.ndarray
    matvecs: int
    iterations: int
    converged: bool
    method: str
    which: str
    tol: float
    max_iter: int
    seed: int | None
    smallest: float | None = None
    smallest_vector: Any | None = None
    smallest_residual: float | None = None
    ritz_values: np.ndarray | None = field(default=None, repr=False)
    rule: str = "residual"

    def to_attrs(self) -> dict:
        """JSON-able description of how the result was computed (for the HDF5 attributes)."""
        out: dict = dict(method=self.method, which=self.which, tol=float(self.tol), max_iter=int(self.max_iter),
                         iterations=int(self.iterations), matvecs=int(self.matvecs), converged=bool(self.converged),
                         k=len(self.eigenvalues), residuals=[float(r) for r in self.residuals],
                         stop_rule=self.rule)
        if self.seed is not None:
            out["seed"] = int(self.seed)
        if self.smallest is not None:
            out["smallest"] = float(self.smallest)
            out["smallest_residual"] = float(self.smallest_residual if self.smallest_residual is not None else np.nan)
        return out


def _shape(op, vec: Tensor) -> Any:
    """A float64 unit vector as the operator's own kind of vector (named dict when it has ``unflatten``)."""
    unflatten = getattr(op, "unflatten", None)
    return unflatten(vec) if callable(unflatten) else vec.to(op.dtype)


def _wanted(n_ritz: int, k: int, which: str) -> list[int] | None:
    """Indices (into ascending Ritz values) of the wanted pairs, or None when there are too few yet."""
    if n_ritz < k:
        return None
    top = list(range(n_ritz - 1, n_ritz - 1 - k, -1))
    if which == "LA":
        return top
    if which == "SA":
        return list(range(k))
    return top + ([0] if 0 not in top else [])


BASIS_STORAGE = ("auto", "device", "host")


def _f64(B: Tensor) -> Tensor:
    """A basis block in float64 (a temporary of one block when the basis is kept in float32)."""
    return B if B.dtype == torch.float64 else B.to(torch.float64)


class _Basis:
    """Orthonormal Lanczos vectors, stored in blocks so memory grows with the steps taken.

    ``orthogonalize`` is classical Gram–Schmidt applied twice ("twice is enough"): all inner
    products with the basis first, then one update, each as a matrix-vector product per block.

    ``storage="host"`` keeps the blocks in CPU memory (pinned when the operator is on a GPU) and does
    the Gram–Schmidt there: the device then holds O(1) vectors whatever the number of steps, at the
    cost of one device→host and one host→device copy of a vector per step. ``dtype`` float32 halves
    the basis (inner products and updates are still accumulated in float64, so orthogonality holds
    to about 1e-7, which the second Gram–Schmidt pass keeps from growing).
    """

    def __init__(self, n: int, device: torch.device, block: int = 16, storage: str = "device",
                 dtype: torch.dtype = torch.float64):
        self.n, self.device, self.block = n, torch.device(device), block
        self.host = storage == "host" and self.device.type != "cpu"
        self.where = torch.device("cpu") if self.host else self.device
        self.pin = self.host and torch.cuda.is_available()
        self.dtype = dtype
        self.blocks: list[Tensor] = []
        self.size = 0

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        return sum(B.numel() * B.element_size() for B in self.blocks)

    def append(self, q: Tensor) -> None:
        j = self.size % self.block
        if j == 0:
            B = torch.empty(self.block, self.n, dtype=self.dtype, device=self.where)
            self.blocks.append(B.pin_memory() if self.pin else B)
        self.blocks[-1][j] = q.to(self.where)
        self.size += 1

    def __getitem__(self, i: int) -> Tensor:
        """q_i in float64 on the operator's device."""
        return self.blocks[i // self.block][i % self.block].to(device=self.device, dtype=torch.float64)

    def _parts(self) -> list[Tensor]:
        rem = self.size - (len(self.blocks) - 1) * self.block
        return self.blocks[:-1] + [self.blocks[-1][:rem]] if self.blocks else []

    def orthogonalize(self, w: Tensor) -> Tensor:
        parts = self._parts()
        w = w.to(self.where, torch.float64)
        for _ in range(2):
            coefs = [_f64(B) @ w for B in parts]
            for B, c in zip(parts, coefs):
                w = w - _f64(B).T @ c
        return w.to(self.device)

    def combine(self, coefs: Tensor) -> Tensor:
        """Σ_j coefs[j] q_j (float64, on the operator's device)."""
        out = torch.zeros(self.n, dtype=torch.float64, device=self.where)
        coefs = coefs.to(self.where, torch.float64)
        for b, B in enumerate(self._parts()):
            out += _f64(B).T @ coefs[b * self.block: b * self.block + B.shape[0]]
        return out.to(self.device)


def lanczos(op, k: int = 1, which: str = "LA", tol: float = 1e-6, max_iter: int = 100,
            seed: int | torch.Generator | None = 0, return_vectors: bool = True, atol: float = 0.0,
            v0: Tensor | None = None, callback: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
            basis: str = "auto", basis_dtype: torch.dtype = torch.float64) -> EigenResult:
    """Top-k (``LA``), bottom-k (``SA``) or top-k and the smallest (``both``) eigenpairs by Lanczos.

    Args:
        op: a symmetric operator (``matvec_flat``, ``dim``), a Problem (its Hessian) or a matrix.
        k: number of extreme eigenpairs.
        which: ``LA`` largest algebraic, ``SA`` smallest algebraic, ``both``.
        tol: stop when every wanted Ritz pair has ‖Ay − θy‖ ≤ max(tol·|θ|, atol).
        max_iter: most Lanczos steps (= operator products); capped at the dimension.
        seed: seed (or generator) of the Gaussian start vector (ignored when ``v0`` is given).
        return_vectors: form the Ritz vectors Q_m u_i (one small matrix product, no extra matvec).
        callback: called after every step with (steps so far, Ritz values ascending, their residual
            estimates) -- for progress reports and convergence studies.
        basis: where the Lanczos vectors are kept: ``device`` (with the operator), ``host`` (CPU memory,
            pinned; the device then holds O(1) vectors), ``auto`` = host for a GPU operator, else device.
        basis_dtype: float64 (default) or float32 (half the memory; eigenvalues to ~1e-7 relative).

    Example:
        >>> import torch
        >>> A = torch.diag(torch.tensor([5.0, -2.0, 1.0, 3.0], dtype=torch.float64))
        >>> r = lanczos(A, k=2, which="LA")
        >>> r.eigenvalues.round(8).tolist(), r.matvecs <= 4
        ([5.0, 3.0], True)
    """
    if which not in WHICH:
        raise LandscapeError(f"which must be one of {', '.join(WHICH)}, got {which!r}")
    if basis not in BASIS_STORAGE:
        raise LandscapeError(f"basis must be one of {', '.join(BASIS_STORAGE)}, got {basis!r}")
    if basis_dtype not in (torch.float64, torch.float32):
        raise LandscapeError(f"basis_dtype must be torch.float64 or torch.float32, got {basis_dtype}")
    op = as_operator(op)
    n = int(op.dim)
    if k < 1 or k > n:
        raise LandscapeError(f"k must be between 1 and the dimension {n} (the number of parameters), got {k}")
    steps = max(min(int(max_iter), n), 1)
    gen = generator(seed)
    dev = op.device
    start_matvecs = op.matvecs
    storage = basis if basis != "auto" else ("host" if torch.device(dev).type == "cuda" else "device")
    Q = _Basis(n, dev, storage=storage, dtype=basis_dtype)
    q = (v0.to(device=dev, dtype=torch.float64).reshape(-1) if v0 is not None else gaussian(n, gen, dev))
    Q.append(q / q.norm())
    alphas: list[float] = []
    betas: list[float] = []
    anorm = 0.0
    theta = np.zeros(0)
    U = np.zeros((0, 0))
    res = np.zeros(0)
    idx: list[int] | None = None
    converged = False
    beta = 0.0
    m = 0
    for j in range(steps):
        w = op.matvec_flat(Q[j]).to(torch.float64)
        alpha = float(w @ Q[j])
        alphas.append(alpha)
        m = j + 1
        w = Q.orthogonalize(w)
        beta = float(w.norm())
        T = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        theta, U = np.linalg.eigh(T)
        anorm = max(anorm, float(np.abs(theta).max()))
        res = np.abs(beta * U[-1, :])
        if callback is not None:
            callback(m, theta, res)
        idx = _wanted(m, k, which)
        breakdown = beta <= 1e-12 * max(anorm, np.finfo(float).tiny)
        if m == n:  # the whole space: T is A in another basis
            converged = idx is not None
            break
        # At a breakdown every Ritz pair is exact, but copies of a repeated eigenvalue can only be
        # found in a new Krylov space: restart orthogonally and judge convergence from there.
        if not breakdown and idx is not None and all(res[i] <= max(tol * abs(theta[i]), atol) for i in idx):
            converged = True
            break
        if m == steps:
            break
        if breakdown:
            r = Q.orthogonalize(gaussian(n, gen, dev))
            if float(r.norm()) <= 1e-8:
                converged = idx is not None
                break
            betas.append(0.0)
            Q.append(r / r.norm())
            beta = 0.0
            continue
        betas.append(beta)
        Q.append(w / beta)
    if idx is None:  # fewer Ritz values than k (breakdown on a tiny space): take what there is
        idx = _wanted(m, min(k, m), which) or list(range(m))
    top = idx[:k]  # for `both`, idx ends with the smallest Ritz value (index 0) when it is not in the top
    order = sorted(top, key=lambda i: -theta[i])
    vectors = None
    Ut = torch.as_tensor(U, dtype=torch.float64, device=dev)

    def ritz(i: int) -> Tensor:
        y = Q.combine(Ut[:, i])
        return y / y.norm()

    if return_vectors:
        vectors = [_shape(op, ritz(i)) for i in order]
    out = EigenResult(
        eigenvalues=np.asarray([theta[i] for i in order], dtype=np.float64),
        eigenvectors=vectors, residuals=np.asarray([res[i] for i in order], dtype=np.float64),
        matvecs=op.matvecs - start_matvecs, iterations=m, converged=converged, method="lanczos", which=which,
        tol=float(tol), max_iter=int(max_iter), seed=seed_value(seed), ritz_values=np.asarray(theta))
    if which in ("SA", "both"):
        i0 = 0  # the smallest Ritz value
        out.smallest = float(theta[i0])
        out.smallest_residual = float(res[i0])
        if return_vectors:
            out.smallest_vector = _shape(op, ritz(i0))
    return out


def tridiagonal(op, steps: int, v0: Tensor, reorth: str = "local") -> tuple[np.ndarray, np.ndarray]:
    """α (m,) and β (m−1,) of T_m from ``steps`` Lanczos steps from ``v0``.

    ``reorth="local"`` (default): the three-term recurrence w = A q_j − β_{j−1} q_{j−1}, with w
    re-orthogonalized (twice) against q_j and q_{j−1} only, so memory is four vectors whatever
    ``steps`` (no basis is stored). In floating point the vectors then lose global orthogonality once
    a Ritz value converges, and T_m gains copies ("ghosts") of converged eigenvalues; the Gauss
    quadrature Σ_k u_k[0]² f(τ_k) that stochastic Lanczos quadrature needs stays accurate all the
    same (Greenbaum 1989; Paige 1980: the copies share the weight of the eigenvalue they copy).
    ``reorth="full"``: Gram–Schmidt (twice) against every previous vector, m·P·8 bytes of basis.

    Stops early (m < steps) at breakdown: the Krylov space is then invariant and the Gauss
    quadrature of T_m is exact for ``v0`` -- no restart, unlike :func:`lanczos`. Used by stochastic
    Lanczos quadrature (:mod:`landscape.curvature.density`).
    """
    if reorth not in ("local", "full"):
        raise LandscapeError(f"reorth must be 'local' or 'full', got {reorth!r}")
    op = as_operator(op)
    n = int(op.dim)
    steps = max(min(int(steps), n), 1)
    dev = op.device
    q = v0.to(device=dev, dtype=torch.float64).reshape(-1)
    q = q / q.norm()
    Q = _Basis(n, dev) if reorth == "full" else None
    if Q is not None:
        Q.append(q)
    q_prev: Tensor | None = None
    alphas: list[float] = []
    betas: list[float] = []
    anorm = 0.0
    for j in range(steps):
        w = op.matvec_flat(q).to(torch.float64)
        alpha = float(w @ q)
        alphas.append(alpha)
        anorm = max(anorm, abs(alpha), *(betas[-1:]))
        if j + 1 == steps:
            break
        if Q is not None:
            w = Q.orthogonalize(w)
        else:
            for _ in range(2):  # against the last two vectors, twice: the recurrence's own terms, cleanly
                w = w - (w @ q) * q
                if q_prev is not None:
                    w = w - (w @ q_prev) * q_prev
        beta = float(w.norm())
        if beta <= 1e-12 * max(anorm, np.finfo(float).tiny):
            break
        betas.append(beta)
        q_prev, q = q, w / beta
        if Q is not None:
            Q.append(q)
    return np.asarray(alphas), np.asarray(betas)


def power_iteration(op, k: int = 1, tol: float = 1e-3, max_iter: int = 100, seed: int | torch.Generator | None = 0,
                    return_vectors: bool = True, shift: float = 0.0, rule: str = "residual") -> EigenResult:
    """PyHessian's power iteration with deflation: the k eigenvalues of largest magnitude of A − shift·I.

    For each i ≤ k: a Gaussian unit start; repeat v ← (A − shift)v/‖(A − shift)v‖ after projecting
    out the eigenvectors already found, until the stopping rule holds or ``max_iter`` steps (per
    eigenpair). ``rule="residual"`` (default, the rule ``converged`` reports): ‖Av − λv‖ ≤ ``tol``·|λ|,
    as Lanczos; ``rule="change"``: the Rayleigh quotient μ changes by less than ``tol``·(|μ| + 1e-6)
    (PyHessian's rule, kept as a baseline: it stops with residuals far above ``tol``·|λ|). Reported
    eigenvalues are μ + shift (descending); residuals ‖Av − λv‖ are exact for the vector whose
    Rayleigh quotient is reported.

    Example:
        >>> import torch
        >>> A = torch.diag(torch.tensor([4.0, 1.0, 0.5], dtype=torch.float64))
        >>> r = power_iteration(A, k=1, tol=1e-8, max_iter=200)
        >>> round(float(r.eigenvalues[0]), 6)
        4.0
    """
    if rule not in ("residual", "change"):
        raise LandscapeError(f"rule must be 'residual' or 'change', got {rule!r}")
    op = as_operator(op)
    n = int(op.dim)
    if k < 1 or k > n:
        raise LandscapeError(f"k must be between 1 and the dimension {n} (the number of parameters), got {k}")
    gen = generator(seed)
    dev = op.device
    start_matvecs = op.matvecs
    found: list[Tensor] = []
    vals, resids = [], []
    iterations, converged = 0, True
    for _ in range(k):
        v = gaussian(n, gen, dev)
        v = v / v.norm()
        mu_prev = None
        ok = False
        mu, resid = 0.0, float("nan")
        for _ in range(max_iter):
            if found:
                B = torch.stack(found)
                v = v - B.T @ (B @ v)
            v = v / v.norm()
            hv = op.matvec_flat(v).to(torch.float64) - shift * v
            iterations += 1
            mu = float(hv @ v)
            resid = float((hv - mu * v).norm())
            if rule == "residual" and resid <= tol * abs(mu + shift):
                ok = True
                break
            if rule == "change" and mu_prev is not None and abs(mu - mu_prev) / (abs(mu_prev) + 1e-6) < tol:
                ok = True
                break
            mu_prev = mu
            nrm = hv.norm()
            if float(nrm) == 0.0:  # v is in the null space: eigenvalue `shift` (residual 0)
                ok = True
                break
            v_next = hv / nrm
            if float((v_next - v).norm()) == 0.0:  # a fixed point: an exact eigenvector up to rounding
                ok = rule == "change" or resid <= max(tol * abs(mu + shift), 1e-12 * float(nrm))
                break
            v = v_next
        converged &= ok
        found.append(v)
        vals.append(mu + shift)
        resids.append(resid)
    order = sorted(range(k), key=lambda i: -vals[i])
    return EigenResult(
        eigenvalues=np.asarray([vals[i] for i in order], dtype=np.float64),
        eigenvectors=[_shape(op, found[i]) for i in order] if return_vectors else None,
        residuals=np.asarray([resids[i] for i in order], dtype=np.float64), matvecs=op.matvecs - start_matvecs,
        iterations=iterations, converged=bool(converged), method="power", which="LA", tol=float(tol),
        max_iter=int(max_iter), seed=seed_value(seed), rule=rule)


def _power_eigenpairs(op, k: int, which: str, tol: float, max_iter: int, seed, return_vectors: bool) -> EigenResult:
    """Power iteration for LA/SA/both: the bottom end by iterating on A − λ₁I (λ₁ from a first run)."""
    gen = generator(seed)
    start = op.matvecs
    top = power_iteration(op, k=k if which != "SA" else 1, tol=tol, max_iter=max_iter, seed=gen,
                          return_vectors=return_vectors or which == "SA")
    if which == "LA":
        top.seed = seed_value(seed)
        return top
    shift = float(top.eigenvalues[0])
    low = power_iteration(op, k=k if which == "SA" else 1, tol=tol, max_iter=max_iter, seed=gen,
                          return_vectors=return_vectors, shift=shift)
    base = low if which == "SA" else top
    out = EigenResult(eigenvalues=base.eigenvalues, eigenvectors=base.eigenvectors if return_vectors else None,
                      residuals=base.residuals, matvecs=op.matvecs - start, iterations=top.iterations + low.iterations,
                      converged=top.converged and low.converged, method="power", which=which, tol=float(tol),
                      max_iter=int(max_iter), seed=seed_value(seed), rule=top.rule)
    out.smallest = float(low.eigenvalues[-1])
    out.smallest_residual = float(low.residuals[-1])
    if return_vectors and low.eigenvectors:
        out.smallest_vector = low.eigenvectors[-1]
    return out


def hessian_eigenpairs(problem, k: int = 1, which: str = "LA", tol: float = 1e-6, max_iter: int = 100,
                       seed: int | torch.Generator | None = 0, method: str = "lanczos", return_vectors: bool = True,
                       curvature: str = "hessian") -> EigenResult:
    """Extreme eigenpairs of the loss Hessian of a Problem (or of any symmetric operator/matrix).

    ``method='lanczos'`` (default; see :func:`lanczos`) or ``'power'`` (PyHessian's baseline, see
    :func:`power_iteration`, with the same relative-residual rule: ``converged`` means ‖Hv − λv‖ ≤
    ``tol``·|λ| for every wanted pair, for either method). ``curvature='ggn'``
    uses the Gauss–Newton matrix of a Problem instead of its Hessian. Eigenvectors of a Problem's
    operator are parameter-shaped named dicts of unit norm.

    Example:
        >>> from landscape.problem import make_problem
        >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=64, device="cpu",
        ...                  model_args={"width": 8, "depth": 1})
        >>> eig = hessian_eigenpairs(p, k=2, which="both", tol=1e-4)
        >>> bool(eig.eigenvalues[0] >= eig.eigenvalues[1] >= eig.smallest), sorted(eig.eigenvectors[0])[:1]
        (True, ['1.bias'])
    """
    if method not in METHODS:
        raise LandscapeError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if which not in WHICH:
        raise LandscapeError(f"which must be one of {', '.join(WHICH)}, got {which!r}")
    op = as_operator(problem, curvature=curvature)
    if method == "lanczos":
        return lanczos(op, k=k, which=which, tol=tol, max_iter=max_iter, seed=seed, return_vectors=return_vectors)
    return _power_eigenpairs(op, k, which, tol, max_iter, seed, return_vectors)


def smallest_eigenvalue(problem, tol: float = 1e-6, max_iter: int = 100, seed: int | torch.Generator | None = 0,
                        method: str = "lanczos") -> float:
    """λ_min of the Hessian (or operator): ``hessian_eigenpairs(..., which='SA').smallest``."""
    res = hessian_eigenpairs(problem, k=1, which="SA", tol=tol, max_iter=max_iter, seed=seed, method=method,
                             return_vectors=False)
    assert res.smallest is not None
    return res.smallest
