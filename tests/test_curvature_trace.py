"""Hutchinson and Hutch++: convergence with the budget over many seeds, honest standard errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from landscape.curvature import HessianOperator, MatrixOperator, hessian_trace, hutchinson, hutchpp
from landscape.errors import LandscapeError
from landscape.problem import Problem
from tests.curvature_models import random_basis

pytestmark = pytest.mark.usefixtures("one_thread")


SEEDS = range(40)
BUDGETS = (9, 36, 144)


def _outlier_matrix(n=200, seed=0) -> tuple[torch.Tensor, float]:
    """A bulk of small eigenvalues (both signs) and ten outliers, in a random basis."""
    rng = np.random.default_rng(seed)
    eigs = np.concatenate([rng.normal(0.2, 0.3, n - 10), np.linspace(20.0, 60.0, 10)])
    return random_basis(eigs, seed), float(eigs.sum())


@pytest.fixture(scope="module")
def errors():
    """|estimate − tr| and |estimate − tr| / stderr for every method, budget and seed."""
    A, tr = _outlier_matrix()
    op = MatrixOperator(A)
    out = {}
    for name, fn in (("hutchinson", hutchinson), ("hutch++", hutchpp)):
        for m in BUDGETS:
            res = [fn(op, matvecs=m, seed=s) for s in SEEDS]
            assert all(r.matvecs == m for r in res)
            err = np.array([abs(r.estimate - tr) for r in res])
            z = np.array([abs(r.estimate - tr) / r.stderr for r in res])
            out[name, m] = (err, z)
    return out


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_error_decreases_with_budget(errors, method):
    mean_err = [errors[method, m][0].mean() for m in BUDGETS]
    assert mean_err[0] > mean_err[1] > mean_err[2]
    # Hutchinson's error ∝ 1/√m (×4 budget → ÷2); Hutch++'s falls at least as fast
    assert mean_err[2] < 0.7 * mean_err[0] / 2


def test_hutchpp_beats_hutchinson_on_outliers(errors):
    for m in BUDGETS[1:]:
        assert errors["hutch++", m][0].mean() < 0.5 * errors["hutchinson", m][0].mean()


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_stderr_covers_the_truth(errors, method):
    for m in BUDGETS:
        z = errors[method, m][1]
        assert np.mean(z <= 3.0) >= 0.85, (method, m, z)
        assert np.median(z) < 1.5  # not absurdly conservative either: |N(0,1)| has median 0.67


def test_hutchpp_parts_and_attrs():
    A, tr = _outlier_matrix(n=100)
    res = hutchpp(A, matvecs=30, seed=1)
    assert res.sketch_size == 10 and len(res.samples) == 10 and res.matvecs == 30
    assert res.estimate == pytest.approx(res.sketch_trace + res.samples.mean())
    assert res.stderr == pytest.approx(res.samples.std(ddof=1) / np.sqrt(10))
    attrs = res.to_attrs()
    json.dumps(attrs)
    assert attrs["method"] == "hutch++" and attrs["seed"] == 1 and attrs["matvecs"] == 30
    again = hessian_trace(A, matvecs=30, method="hutch++", seed=1)
    assert again.estimate == res.estimate  # seeded
    assert hutchpp(A, matvecs=2).method == "hutchinson"  # below 3 products there is no sketch


def test_exact_cases():
    d = torch.arange(1.0, 41.0, dtype=torch.float64)
    res = hutchinson(torch.diag(d), matvecs=5)
    assert res.estimate == pytest.approx(float(d.sum()), rel=1e-12)  # Rademacher: exact on a diagonal
    A, tr = _outlier_matrix(n=30)
    for method in ("hutch++", "hutchinson"):
        full = hessian_trace(A, matvecs=30, method=method)
        assert full.method == "exact" and full.stderr == 0.0 and full.estimate == pytest.approx(tr, rel=1e-12)
    with pytest.raises(LandscapeError):
        hessian_trace(A, method="xtrace")
    with pytest.raises(LandscapeError):
        hutchinson(A, matvecs=0)


def test_trace_of_a_network_hessian():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3)).double().eval()
    X = torch.randn(40, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    prob = Problem(model=model, loss="cross_entropy", splits={"train": [(X[:25], y[:25]), (X[25:], y[25:])]},
                   device=torch.device("cpu"))
    op = HessianOperator(prob)
    tr = float(torch.trace(op.to_dense()))
    zs = []
    for seed in range(4):
        res = hessian_trace(prob, matvecs=30, seed=seed)
        zs.append(abs(res.estimate - tr) / res.stderr)
    assert np.median(zs) < 3.0


# ------------------------------------------------------------------ the stopping rule (--trace-rtol)
CAL_SEEDS = range(200)


def _tanh_problem(seed=0) -> Problem:
    """A small tanh MLP (134 parameters, more than the budget) at random weights: an indefinite Hessian."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 10), nn.Tanh(), nn.Linear(10, 4)).double().eval()
    X = torch.randn(60, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (60,), generator=g)
    return Problem(model=model, loss="cross_entropy", splits={"train": [(X[:32], y[:32]), (X[32:], y[32:])]},
                   device=torch.device("cpu"))


@pytest.fixture(scope="module")
def dense_tanh():
    from tests.curvature_models import dense_hessian

    prob = _tanh_problem()
    H = dense_hessian(prob)  # the float64 reference (torch.func.hessian over all the data)
    return prob, H, float(torch.trace(H))


def test_operator_and_dense_reference_give_the_same_estimates(dense_tanh):
    """The many-seed runs below use the dense Hessian; the Problem's operator gives the same numbers."""
    prob, H, _ = dense_tanh
    for method in ("hutchinson", "auto"):
        a = hessian_trace(prob, matvecs=60, method=method, seed=3, rtol=0.05)
        b = hessian_trace(MatrixOperator(H), matvecs=60, method=method, seed=3, rtol=0.05)
        assert a.matvecs == b.matvecs and a.method == b.method
        assert a.estimate == pytest.approx(b.estimate, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("method", ["hutchinson", "hutch++", "auto"])
@pytest.mark.parametrize("rtol", [0.02, 0.2])
def test_stopping_rule_interval_is_calibrated(dense_tanh, method, rtol):
    """Over 200 seeds the true trace lies in the reported 95 % interval at about the stated rate (≥ 90 %: a
    binomial standard deviation is 1.5 %), and the rule stops only when stderr ≤ rtol·|estimate|."""
    _, H, tr = dense_tanh
    op = MatrixOperator(H)
    res = [hessian_trace(op, matvecs=99, method=method, seed=s, rtol=rtol) for s in CAL_SEEDS]
    inside = [r.interval[0] <= tr <= r.interval[1] for r in res]
    assert np.mean(inside) >= 0.90, (method, rtol, np.mean(inside))
    assert np.mean(inside) <= 0.995 or rtol == 0.02  # not vacuous: a loose rule stops early, intervals are finite
    for r in res:
        assert r.matvecs <= 99
        if r.converged:
            assert r.stderr <= rtol * abs(r.estimate) + 1e-15 and len(r.samples) >= 10
        else:
            assert r.matvecs == 99


def test_stopping_rule_saves_products_and_stays_calibrated_on_outliers():
    """Where the estimate converges fast (Hutchinson at a loose tolerance) the rule stops well before the cap."""
    A, tr = _outlier_matrix()
    res = [hutchinson(A, matvecs=99, seed=s, rtol=0.2) for s in range(100)]
    assert np.mean([r.matvecs for r in res]) < 40
    assert all(r.converged for r in res)
    assert np.mean([r.interval[0] <= tr <= r.interval[1] for r in res]) >= 0.9


def test_auto_takes_hutchinson_when_the_sketch_does_not_pay():
    """A flat indefinite spectrum (Σ|λ| ≫ |tr|): the sketch removes little, auto continues as Hutchinson and is
    at least as accurate as Hutch++ over seeds; with outliers auto keeps Hutch++."""
    rng = np.random.default_rng(1)
    eigs = rng.choice([-1.0, 1.0], 200) * rng.uniform(0.5, 1.5, 200)
    A, tr = random_basis(eigs, 2), float(eigs.sum())
    auto = [hessian_trace(A, matvecs=99, method="auto", seed=s) for s in range(40)]
    plus = [hutchpp(A, matvecs=99, seed=s) for s in range(40)]
    assert np.mean([r.method == "hutchinson" for r in auto]) >= 0.55  # (a 10-sample pilot: a noisy choice)
    assert np.mean([abs(r.estimate - tr) for r in auto]) <= 1.1 * np.mean([abs(r.estimate - tr) for r in plus])
    B, _ = _outlier_matrix()
    assert all(hessian_trace(B, matvecs=99, method="auto", seed=s).method == "hutch++" for s in range(10))


def test_t_quantile():
    from landscape.curvature.trace import t_quantile

    assert t_quantile(0.975, 9) == pytest.approx(2.2622, abs=2e-3)
    assert t_quantile(0.975, 30) == pytest.approx(2.0423, abs=1e-3)
    assert t_quantile(0.975, 10 ** 6) == pytest.approx(1.95996, abs=1e-4)
