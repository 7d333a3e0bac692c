"""Stochastic Lanczos quadrature on explicit matrices: a bulk plus three spikes (Papyan 2020, Fig. 15)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from landscape.curvature import (
    DensityResult,
    MatrixOperator,
    fraction_near_zero,
    gaussian_density,
    spectral_density,
)
from landscape.errors import LandscapeError
from tests.curvature_models import random_basis

N = 400
SPIKES = (8.0, 15.0, 25.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def _papyan(n=N, seed=0) -> tuple[torch.Tensor, np.ndarray]:
    """A Marchenko–Pastur-like bulk in [0, ~2] plus three outliers, in a random basis."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, 2 * n)) / np.sqrt(2 * n)
    bulk = np.linalg.eigvalsh(Z @ Z.T)[: n - len(SPIKES)]  # MP with ratio 1/2: support ≈ [0.09, 2.9]
    eigs = np.sort(np.concatenate([bulk, SPIKES]))
    return random_basis(eigs, seed), eigs


@pytest.fixture(scope="module")
def slq():
    A, eigs = _papyan()
    op = MatrixOperator(A)
    res = spectral_density(op, runs=10, steps=50, sigma=0.2, grid_points=3000, seed=0)
    return res, eigs, op


def test_density_integrates_to_one_and_costs_runs_times_steps(slq):
    res, _, op = slq
    assert isinstance(res, DensityResult)
    assert res.matvecs == 10 * 50 == op.matvecs
    assert res.nodes.shape == res.weights.shape == (10, 50)
    np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, atol=1e-12)  # each run's weights sum to 1
    assert np.trapezoid(res.density, res.grid) == pytest.approx(1.0, abs=1e-3)
    assert np.all(res.density >= 0)
    attrs = res.to_attrs()
    json.dumps(attrs)
    assert attrs["runs"] == 10 and attrs["steps"] == 50 and attrs["sigma"] == 0.2 and attrs["seed"] == 0


def test_spikes_are_nodes_and_peaks(slq):
    res, eigs, _ = slq
    for s in SPIKES:
        # outliers converge within a few Lanczos steps: every run has a node on each spike
        assert np.all(np.min(np.abs(res.nodes - s), axis=1) < 1e-8 * s)
        window = np.abs(res.grid - s) < 3 * res.sigma
        peak = res.grid[window][np.argmax(res.density[window])]
        assert abs(peak - s) < 0.25 * res.sigma
        # the peak stands far above the empty gaps around it
        gap = np.abs(res.grid - (s - 2.0)) < 0.05
        assert res.density[window].max() > 50 * res.density[gap].max()
        # its mass is ≈ 1/N (a random start's squared component along the spike, averaged over runs)
        mass = float(np.sum(res.weights[np.abs(res.nodes - s) < 1.0])) / res.runs
        assert 0.3 / N < mass < 3.0 / N


def test_density_matches_eigh_distribution(slq):
    """The quadrature's cumulative weights follow the true eigenvalue CDF (bulk resolved to node spacing)."""
    res, eigs, _ = slq
    nodes, weights = res.nodes.ravel(), res.weights.ravel() / res.runs
    for t in (0.3, 0.6, 1.0, 1.5, 2.0, 5.0, 12.0, 20.0):
        slq_cdf = float(weights[nodes <= t].sum())
        true_cdf = float(np.mean(eigs <= t))
        assert slq_cdf == pytest.approx(true_cdf, abs=0.06), t
    # the smoothed density agrees with the same Gaussian smoothing of the exact spectrum
    exact = gaussian_density(eigs[None, :], np.full((1, len(eigs)), 1.0 / len(eigs)), res.grid, res.sigma)
    assert np.trapezoid(np.abs(res.density - exact), res.grid) < 0.15


def test_fraction_near_zero():
    """A degenerate matrix: 2/3 of the eigenvalues exactly zero, the rest in [1, 2]."""
    eigs = np.concatenate([np.zeros(200), np.linspace(1.0, 2.0, 100)])
    A = random_basis(eigs, seed=1)
    res = spectral_density(A, runs=10, steps=30, seed=1)
    assert res.fraction_near_zero(0.5) == pytest.approx(2 / 3, abs=0.05)
    assert res.fraction_near_zero(0.25, relative=True) == pytest.approx(2 / 3, abs=0.05)
    # an exactly zero eigenspace gives a Ritz node at 0 (to rounding) in every run
    assert fraction_near_zero(res.nodes, res.weights, 1e-9) == pytest.approx(res.fraction_near_zero(0.5), abs=1e-12)
    assert fraction_near_zero(res.nodes, res.weights, 0.0) == 0.0
    assert fraction_near_zero(res.nodes, res.weights, 10.0) == pytest.approx(1.0, abs=1e-9)


def test_early_breakdown_pads_and_defaults():
    A = torch.diag(torch.tensor([1.0] * 10 + [3.0] * 10, dtype=torch.float64))
    res = spectral_density(A, runs=3, steps=8, seed=0)  # two distinct eigenvalues: breakdown after 2 steps
    assert np.isfinite(res.nodes).sum(axis=1).tolist() == [2, 2, 2]
    np.testing.assert_allclose(np.sort(res.nodes[:, :2], axis=1), [[1.0, 3.0]] * 3, atol=1e-10)
    assert res.matvecs == 6
    assert res.sigma == pytest.approx(0.02)  # default: 1% of the spread of the nodes
    assert len(res.grid) == 1000
    assert np.trapezoid(res.density, res.grid) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(LandscapeError):
        spectral_density(A, runs=0)
    with pytest.raises(LandscapeError):
        spectral_density(A, sigma=-1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_local_reorthogonalization_keeps_the_quadrature(seed):
    """SLQ's default recurrence stores no basis; its Gauss quadrature still matches vᵀAᵖv and full reorthogonalization.

    80 steps on a 400×400 matrix with outliers: the outliers converge early and the local recurrence produces
    ghost copies of them, yet the weights of the copies add up (Greenbaum 1989), so the moments Σ w τᵖ equal
    vᵀAᵖv/‖v‖² for p < 2·(steps that the recurrence resolves), and the smoothed densities agree.
    """
    from landscape.curvature import tridiagonal

    A, _ = _papyan(seed=seed)
    g = torch.Generator().manual_seed(10 + seed)
    v = (torch.randint(0, 2, (N,), generator=g) * 2 - 1).to(torch.float64)
    quad = {}
    for reorth in ("local", "full"):
        alpha, beta = tridiagonal(MatrixOperator(A), 80, v, reorth=reorth)
        tau, U = np.linalg.eigh(np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1))
        quad[reorth] = (tau, U[0] ** 2)
    u = (v / v.norm()).numpy()
    An = A.numpy()
    x = u.copy()
    for p in range(1, 13):
        x = An @ x
        exact = float(u @ x)
        for reorth, (tau, w) in quad.items():
            assert float(w @ tau**p) == pytest.approx(exact, rel=1e-9), (reorth, p)
    grid = np.linspace(-1, 27, 600)
    d_local = gaussian_density(quad["local"][0], quad["local"][1], grid, 0.3)
    d_full = gaussian_density(quad["full"][0], quad["full"][1], grid, 0.3)
    assert float(np.abs(d_local - d_full).sum() * (grid[1] - grid[0])) <= 1e-3


def test_slq_stores_no_basis(monkeypatch):
    """SLQ on a large operator never builds a Lanczos basis (its memory is a few vectors whatever the steps)."""
    import sys

    L = sys.modules["landscape.curvature.lanczos"]  # the package re-exports the function `lanczos` by that name

    def no_basis(*a, **k):
        raise AssertionError("SLQ built a basis")

    monkeypatch.setattr(L, "_Basis", no_basis)
    monkeypatch.setattr(sys.modules["landscape.curvature.density"], "SLQ_FULL_REORTH_BYTES", 0)  # as for a big model
    A, _ = _papyan()
    d = spectral_density(A, runs=2, steps=50, seed=0)
    assert d.matvecs == 100 and np.isfinite(d.density).all()
    with pytest.raises(LandscapeError, match="reorth"):
        L.tridiagonal(MatrixOperator(A), 5, torch.ones(N, dtype=torch.float64), reorth="some")
