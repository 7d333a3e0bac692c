"""Lanczos (full reorthogonalization) and power iteration against ``numpy.linalg.eigh``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from landscape.curvature import (
    EigenResult,
    HessianOperator,
    MatrixOperator,
    hessian_eigenpairs,
    lanczos,
    power_iteration,
    smallest_eigenvalue,
)
from landscape.errors import LandscapeError
from landscape.problem import Problem
from tests.curvature_models import IGNORE_JIT_SCRIPT, dense_hessian, flat, random_basis

pytestmark = [pytest.mark.usefixtures("one_thread"), IGNORE_JIT_SCRIPT]


def _spectrum(n=150, seed=0) -> np.ndarray:
    """Outliers well separated, a bulk near zero with negative values (like a network's Hessian)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([[30.0, 21.0, 15.0, 10.0, 7.0], rng.uniform(-0.5, 2.0, n - 6), [-3.0]])


def _mlp_problem(dtype=torch.float64) -> Problem:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3)).to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    X = torch.randn(40, 6, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randint(0, 3, (40,), generator=g)
    return Problem(model=model, loss="cross_entropy", splits={"train": [(X[:16], y[:16]), (X[16:32], y[16:32]),
                                                                     (X[32:], y[32:])]}, device=torch.device("cpu"))


# ------------------------------------------------------------------ explicit matrices
@pytest.mark.parametrize("which", ["LA", "SA", "both"])
def test_lanczos_extreme_eigenpairs_match_eigh(which):
    eigs = _spectrum()
    A = random_basis(eigs)
    w, V = np.linalg.eigh(A.numpy())
    k = 4
    res = lanczos(MatrixOperator(A), k=k, which=which, tol=1e-10, max_iter=150)
    assert res.converged and res.matvecs == res.iterations < 150
    if which == "SA":
        want, idx = w[:k][::-1], list(range(k))[::-1]
    else:
        want, idx = w[::-1][:k], list(range(len(w) - 1, len(w) - 1 - k, -1))
    np.testing.assert_allclose(res.eigenvalues, want, rtol=1e-6)
    assert list(res.eigenvalues) == sorted(res.eigenvalues, reverse=True)
    for y, i in zip(res.eigenvectors, idx):
        assert float(y.norm()) == pytest.approx(1.0, abs=1e-12)
        assert abs(float(y @ torch.as_tensor(V[:, i]))) == pytest.approx(1.0, abs=1e-6)  # up to sign
        true_res = float((A @ y - float(y @ A @ y) * y).norm())
        assert true_res < 1e-7 * abs(w).max()
    if which != "LA":
        assert res.smallest == pytest.approx(w[0], rel=1e-6)
        assert abs(float(res.smallest_vector @ torch.as_tensor(V[:, 0]))) == pytest.approx(1.0, abs=1e-6)
    else:
        assert res.smallest is None


def test_ritz_residual_estimate_is_the_true_residual():
    A = random_basis(_spectrum(seed=1), seed=1)
    res = lanczos(A, k=3, tol=1e-3, max_iter=100)
    assert res.converged
    for lam, y, r in zip(res.eigenvalues, res.eigenvectors, res.residuals):
        assert r <= 1e-3 * abs(lam)
        assert float((A @ y - lam * y).norm()) == pytest.approx(r, rel=1e-5, abs=1e-12)


def test_lanczos_stops_at_max_iter_and_is_seeded():
    A = random_basis(_spectrum())
    short = lanczos(A, k=3, tol=1e-12, max_iter=8, seed=3)
    assert not short.converged and short.matvecs == 8 == short.iterations
    again = lanczos(A, k=3, tol=1e-12, max_iter=8, seed=3)
    np.testing.assert_array_equal(short.eigenvalues, again.eigenvalues)
    other = lanczos(A, k=3, tol=1e-12, max_iter=8, seed=4)
    assert not np.array_equal(short.eigenvalues, other.eigenvalues)
    gen = lanczos(A, k=3, tol=1e-12, max_iter=8, seed=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(short.eigenvalues, gen.eigenvalues)
    assert "seed" not in gen.to_attrs()


def test_lanczos_finds_repeated_eigenvalues():
    """An invariant Krylov space (breakdown) restarts orthogonally, so multiplicities are found."""
    eigs = np.concatenate([[5.0, 5.0, 5.0], np.full(40, 1.0), [-2.0, -2.0]])
    res = lanczos(random_basis(eigs), k=4, which="both", tol=1e-10, max_iter=len(eigs))
    np.testing.assert_allclose(res.eigenvalues, [5.0, 5.0, 5.0, 1.0], rtol=1e-8)
    assert res.smallest == pytest.approx(-2.0, rel=1e-8)
    vecs = torch.stack(res.eigenvectors[:3])
    torch.testing.assert_close(vecs @ vecs.T, torch.eye(3, dtype=torch.float64), atol=1e-8, rtol=0)


def test_power_iteration_baseline():
    eigs = _spectrum()
    A = random_basis(eigs)
    res = power_iteration(A, k=2, tol=1e-3, max_iter=500, rule="change")
    assert res.method == "power" and res.converged and res.rule == "change"
    np.testing.assert_allclose(res.eigenvalues, [30.0, 21.0], rtol=2e-3)  # PyHessian's rule: ≈ 1e-3 accuracy
    lz = lanczos(A, k=2, tol=1e-3, max_iter=500)
    np.testing.assert_allclose(lz.eigenvalues, [30.0, 21.0], rtol=1e-6)
    assert lz.matvecs < res.matvecs  # the point of Lanczos
    # the bottom end by shifting (power iteration on A − λ₁ I)
    both = hessian_eigenpairs(A, k=1, which="both", method="power", tol=1e-6, max_iter=3000)
    assert both.smallest == pytest.approx(-3.0, rel=1e-2)
    assert both.eigenvalues[0] == pytest.approx(30.0, rel=1e-3)


def test_power_iteration_converged_flag_checks_the_residual():
    """The default rule is Lanczos's: converged exactly when every pair has ‖Av − λv‖ ≤ tol·|λ|, whatever the cap."""
    A = random_basis(_spectrum())
    for max_iter in (5, 30, 3000):
        res = power_iteration(A, k=2, tol=1e-4, max_iter=max_iter)
        meets = bool(np.all(res.residuals <= 1e-4 * np.abs(res.eigenvalues)))
        assert res.converged == meets and res.rule == "residual" and res.to_attrs()["stop_rule"] == "residual"
        if max_iter == 5:
            assert not res.converged
    # (deflated pairs inherit the error of the vectors found before them: with k=2 the second stalls at the
    # first's residual, and the flag says so); one pair runs to the tolerance
    one = power_iteration(A, k=1, tol=1e-6, max_iter=3000)
    assert one.converged and one.residuals[0] <= 1e-6 * 30
    assert one.eigenvalues[0] == pytest.approx(30.0, rel=1e-9)
    # PyHessian's change rule stops early: its flag says so, and its residuals show it
    old = power_iteration(A, k=1, tol=1e-3, max_iter=3000, rule="change")
    assert old.converged and old.residuals[0] > 1e-3 * abs(old.eigenvalues[0])


# ------------------------------------------------------------------ a network's Hessian
def test_hessian_eigenpairs_of_a_network():
    prob = _mlp_problem()
    H = dense_hessian(prob)
    w, V = np.linalg.eigh(H.numpy())
    op = HessianOperator(prob)
    res = hessian_eigenpairs(op, k=3, which="both", tol=1e-9, max_iter=op.dim)
    np.testing.assert_allclose(res.eigenvalues, w[::-1][:3], rtol=1e-6)
    assert res.smallest == pytest.approx(w[0], rel=1e-6)
    assert res.matvecs == op.matvecs
    names = [k for k, _ in prob.model.named_parameters()]
    for i, v in enumerate(res.eigenvectors):
        assert list(v) == names and all(t.shape == p.shape for t, p in zip(v.values(), prob.model.parameters()))
        vec = flat(v)
        assert float(vec.norm()) == pytest.approx(1.0, abs=1e-10)
        gap = min(abs(w[::-1][i] - w[::-1][j]) for j in range(len(w)) if j != i)
        if gap > 1e-3 * abs(w).max():
            assert abs(float(vec @ torch.as_tensor(V[:, len(w) - 1 - i]))) == pytest.approx(1.0, abs=1e-6)
    assert smallest_eigenvalue(prob, tol=1e-9, max_iter=op.dim) == pytest.approx(w[0], rel=1e-6)
    power = hessian_eigenpairs(prob, k=1, method="power", tol=1e-3, max_iter=200)
    assert power.eigenvalues[0] == pytest.approx(w[-1], rel=1e-2)
    attrs = res.to_attrs()
    json.dumps(attrs)
    assert {"method", "tol", "iterations", "matvecs", "seed", "residuals"} <= set(attrs)


def test_float32_network_uses_float64_basis():
    prob64 = _mlp_problem()
    H = dense_hessian(prob64)
    w = np.linalg.eigvalsh(H.numpy())
    prob = _mlp_problem(torch.float32)
    res = hessian_eigenpairs(prob, k=2, tol=1e-5, max_iter=80)
    np.testing.assert_allclose(res.eigenvalues, w[::-1][:2], rtol=1e-4)
    assert all(t.dtype == torch.float32 for t in res.eigenvectors[0].values())


def test_basis_in_float32_or_on_the_host():
    """The basis kept in float32 (half the memory) or on the host: eigenvalues as with the float64 device basis."""
    prob = _mlp_problem()
    w = np.linalg.eigvalsh(dense_hessian(prob).numpy())[::-1]
    ref = lanczos(HessianOperator(prob), k=5, tol=1e-9, max_iter=80, return_vectors=False)
    host = lanczos(HessianOperator(prob), k=5, tol=1e-9, max_iter=80, return_vectors=False, basis="host")
    np.testing.assert_array_equal(host.eigenvalues, ref.eigenvalues)  # CPU operator: the host is its device
    np.testing.assert_allclose(ref.eigenvalues, w[:5], rtol=1e-6)
    f32 = lanczos(HessianOperator(prob), k=5, tol=1e-6, max_iter=80, basis_dtype=torch.float32)
    np.testing.assert_allclose(f32.eigenvalues, w[:5], rtol=1e-6)
    assert f32.converged and f32.matvecs <= 60
    for v, lam in zip(f32.eigenvectors, f32.eigenvalues):  # the Ritz vectors are still eigenvectors
        x = flat(v)
        hx = HessianOperator(prob).matvec_flat(x)
        assert float((hx - lam * x).norm()) <= 1e-5 * abs(lam)
    with pytest.raises(LandscapeError, match="basis"):
        lanczos(HessianOperator(prob), k=1, basis="disk")
    with pytest.raises(LandscapeError, match="basis_dtype"):
        lanczos(HessianOperator(prob), k=1, basis_dtype=torch.float16)


@pytest.mark.parametrize("trained", [False, True])
def test_cross_check_with_scipy_eigsh(trained):
    """``to_scipy()``: scipy's ARPACK (eigsh) on the tool's own HVP agrees with Lanczos and the dense Hessian."""
    eigsh = pytest.importorskip("scipy.sparse.linalg").eigsh
    prob = _mlp_problem()
    if trained:  # a minimum: train the small net to loss <= 1e-4 with full-batch L-BFGS
        X = torch.cat([x for x, _ in prob.batches])
        y = torch.cat([t for _, t in prob.batches])
        opt = torch.optim.LBFGS(prob.model.parameters(), lr=1, max_iter=5, tolerance_grad=1e-12,
                                tolerance_change=0, history_size=50, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(prob.model(X), y)
            loss.backward()
            return loss

        for _ in range(400):  # stop just below 1e-4: further on, cross-entropy's Hessian vanishes altogether
            opt.step(closure)
            if float(closure().detach()) <= 1e-4:
                break
        assert 1e-7 <= float(closure().detach()) <= 1e-4
    w = np.linalg.eigvalsh(dense_hessian(prob).numpy())[::-1]
    op = HessianOperator(prob)
    A = op.to_scipy()
    assert A.shape == (op.dim, op.dim)
    ours = lanczos(op, k=5, tol=1e-3, max_iter=30, return_vectors=False)
    assert ours.converged and ours.matvecs <= 30
    vals = np.sort(eigsh(A, k=5, which="LA", tol=1e-10, return_eigenvectors=False))[::-1]
    np.testing.assert_allclose(vals, w[:5], rtol=1e-6, atol=1e-9 * abs(w).max())
    np.testing.assert_allclose(ours.eigenvalues, vals, rtol=1e-3)
    tight = lanczos(op, k=5, tol=1e-10, max_iter=op.dim, return_vectors=False)
    np.testing.assert_allclose(tight.eigenvalues, vals, rtol=1e-6, atol=1e-9 * abs(w).max())
    block = A.matmat(np.eye(op.dim)[:, :3])  # a block of vectors at once, as some scipy solvers ask
    np.testing.assert_allclose(block, dense_hessian(prob).numpy()[:, :3], rtol=1e-10, atol=1e-12)
def test_bad_arguments():
    A = random_basis(_spectrum(n=20))
    with pytest.raises(LandscapeError):
        lanczos(A, k=0)
    with pytest.raises(LandscapeError):
        lanczos(A, k=21)
    with pytest.raises(LandscapeError):
        hessian_eigenpairs(A, which="LM")
    with pytest.raises(LandscapeError):
        hessian_eigenpairs(A, method="arnoldi")
    with pytest.raises(TypeError):
        hessian_eigenpairs("not an operator")
    assert isinstance(hessian_eigenpairs(A.numpy(), k=1), EigenResult)
