r"""Spectral density of a symmetric operator by stochastic Lanczos quadrature (SLQ).

The spectral density of A ∈ ℝ^{n×n} with eigenvalues λ₁..λ_n, smoothed by a Gaussian of width σ,
is φ(t) = (1/n) Σᵢ N(t; λᵢ, σ²) = E_v[vᵀ N(t; A, σ²) v] for a random unit v with E[vvᵀ] = I/n.
m Lanczos steps from v give T_m with eigenpairs (τ_k, u_k), and vᵀ f(A) v ≈ Σ_k u_k[0]² f(τ_k)
(Gauss quadrature, exact for polynomials of degree < 2m). So with n_v independent starts
(Ubaru, Chen, Saad 2017; Ghorbani, Krishnan, Xiao 2019; PyHessian):

.. math::  φ(t) ≈ \frac{1}{n_v} \sum_{l=1}^{n_v} \sum_{k=1}^{m} w_k^{(l)} N(t; τ_k^{(l)}, σ^2),
           \qquad w_k^{(l)} = (u_k^{(l)}[0])^2 .

The weights of each run sum to 1, so φ integrates to 1. Outliers converge within a few steps
and appear as spikes of mass ≈ 1/n each; the bulk is resolved to about the node spacing.
:meth:`DensityResult.fraction_near_zero` sums the quadrature weights of nodes within ε of zero:
the share of (near-)zero eigenvalues used as a degeneracy measure (Orhan & Pitkow 2018).

Example:
    >>> import torch
    >>> A = torch.diag(torch.cat([torch.zeros(90), torch.full((10,), 5.0)])).double()
    >>> d = spectral_density(A, runs=4, steps=10, sigma=0.1)
    >>> round(d.fraction_near_zero(0.5), 1), round(float(np.trapezoid(d.density, d.grid)), 3)
    (0.9, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import LandscapeError
from ._base import generator, rademacher, seed_value
from .lanczos import tridiagonal
from .operators import as_operator


@dataclass
class DensityResult:
    """A smoothed spectral density on a grid, with the quadrature nodes and weights it came from.

    ``nodes`` and ``weights`` are (runs, steps); a run that stopped early (an invariant Krylov space)
    is padded with NaN nodes of weight 0.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    sigma: float
    runs: int
    steps: int
    seed: int | None
    matvecs: int
    extra: dict = field(default_factory=dict, repr=False)

    def to_attrs(self) -> dict:
        out: dict = dict(method="slq", runs=int(self.runs), steps=int(self.steps), sigma=float(self.sigma),
                         matvecs=int(self.matvecs), grid_points=len(self.grid))
        if self.seed is not None:
            out["seed"] = int(self.seed)
        return out

    def fraction_near_zero(self, eps: float, relative: bool = False) -> float:
        """Estimated fraction of eigenvalues with |λ| < eps (``relative``: eps·max|λ|)."""
        return fraction_near_zero(self.nodes, self.weights, eps, relative=relative)


#: SLQ keeps a full-reorthogonalization basis only up to this size (bytes); beyond, the local recurrence
SLQ_FULL_REORTH_BYTES = 64 * 2**20


def gaussian_density(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    """φ(t) = (1/n_v) Σ_runs Σ_k w_k N(t; τ_k, σ²) on ``grid`` (NaN nodes are skipped)."""
    nodes = np.atleast_2d(np.asarray(nodes, dtype=np.float64))
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    ok = np.isfinite(nodes)
    tau, w = nodes[ok], weights[ok]
    grid = np.asarray(grid, dtype=np.float64)
    out = np.zeros_like(grid)
    for start in range(0, len(tau), 256):  # bounded memory: grid × 256 at a time
        t, ww = tau[start: start + 256], w[start: start + 256]
        z = (grid[:, None] - t[None, :]) / sigma
        out += (np.exp(-0.5 * z * z) * ww[None, :]).sum(axis=1)
    return out / (sigma * math.sqrt(2 * math.pi) * nodes.shape[0])


def fraction_near_zero(nodes: np.ndarray, weights: np.ndarray, eps: float, relative: bool = False) -> float:
    """(1/n_v) Σ_runs Σ_{k: |τ_k| < eps} w_k: the quadrature estimate of #{i: |λᵢ| < eps}/n.

    ``relative`` scales eps by the largest |τ|. Ritz nodes of a cluster at zero land within the
    cluster's spread, so eps should exceed the expected width of the near-zero bulk.
    """
    nodes = np.atleast_2d(np.asarray(nodes, dtype=np.float64))
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if relative:
        eps = eps * float(np.nanmax(np.abs(nodes)))
    near = np.isfinite(nodes) & (np.abs(np.nan_to_num(nodes, nan=np.inf)) < eps)
    return float((weights * near).sum() / nodes.shape[0])


def slq_nodes(op, runs: int = 5, steps: int = 60, seed: int | torch.Generator | None = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes τ and weights w, each (runs, steps), from ``runs`` Lanczos runs of ``steps`` steps."""
    op = as_operator(op)
    gen = generator(seed)
    m = min(int(steps), int(op.dim))
    nodes = np.full((runs, m), np.nan)
    weights = np.zeros((runs, m))
    for r in range(runs):
        v = rademacher(op.dim, gen, op.device)
        # a small basis costs nothing and keeps T_m exact (as before); a large one is not stored at all
        alpha, beta = tridiagonal(op, m, v, reorth="full" if m * op.dim * 8 <= SLQ_FULL_REORTH_BYTES else "local")
        T = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
        tau, U = np.linalg.eigh(T)
        nodes[r, : len(tau)] = tau
        weights[r, : len(tau)] = U[0, :] ** 2
    return nodes, weights


def spectral_density(problem, runs: int = 5, steps: int = 60, sigma: float | None = None, grid_points: int = 1000,
                     seed: int | torch.Generator | None = 0, grid: np.ndarray | None = None,
                     curvature: str = "hessian") -> DensityResult:
    """Gaussian-smoothed spectral density of a Problem's Hessian (or of an operator/matrix) by SLQ.

    Args:
        runs: n_v, the number of random (Rademacher, normalized) start vectors.
        steps: m, Lanczos steps per run (full reorthogonalization while the basis fits in 64 MiB, local beyond);
            costs runs·steps products.
        sigma: Gaussian width; None → 1% of the spread of the nodes (max τ − min τ).
        grid_points: size of the evenly spaced grid over [min τ − 5σ, max τ + 5σ] (unless ``grid``).
        seed: seed (or generator) of the start vectors.
    """
    if runs < 1 or steps < 1:
        raise LandscapeError(f"runs and steps must be at least 1, got runs={runs}, steps={steps}")
    op = as_operator(problem, curvature=curvature)
    start = op.matvecs
    nodes, weights = slq_nodes(op, runs, steps, seed)
    lo, hi = float(np.nanmin(nodes)), float(np.nanmax(nodes))
    if sigma is None:
        spread = hi - lo
        sigma = 0.01 * (spread if spread > 0 else max(abs(hi), 1.0))
    if sigma <= 0:
        raise LandscapeError(f"sigma must be positive, got {sigma}")
    if grid is None:
        grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, int(grid_points))
    grid = np.asarray(grid, dtype=np.float64)
    dens = gaussian_density(nodes, weights, grid, sigma)
    return DensityResult(grid=grid, density=dens, nodes=nodes, weights=weights, sigma=float(sigma), runs=int(runs),
                         steps=int(nodes.shape[1]), seed=seed_value(seed), matvecs=op.matvecs - start)
