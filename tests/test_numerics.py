"""Numerics near a trained minimum: every evaluation path against a float64 brute force.

The model is trained on digits to a train loss ≤ 1e-4 (where a landscape is centred, and where the textbook
cross-entropy loses its digits). Each path's loss is compared with a float64 recomputation of the same points;
at fp32 its error may be at most twice that of a plain float32 forward with ``F.cross_entropy`` (plus 1e-7
absolute), at fp64 1e-10 relative.
"""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from landscape import evaluate as E
from landscape import kernels as K
from landscape.directions import make_random_directions
from landscape.evaluate.choose import _check_batched as check
from landscape.problem import make_problem

#: coordinates around the centre: the minimum itself, tiny steps (loss ~1e-4) and larger ones (~1e-2 and up)
COORDS = np.array([[0.0, 0.0], [1e-3, -1e-3], [0.01, 0.0], [-0.02, 0.01], [0.05, 0.05], [-0.1, 0.07],
                   [0.2, -0.15], [0.4, 0.3], [0.03, -0.04], [-0.005, 0.002], [0.1, 0.1], [-0.3, -0.2]])


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    p = make_problem("zoo:mlp", data="zoo:digits", samples=512, device="cpu")
    X = torch.cat([x for x, _ in p.batches])
    y = torch.cat([t for _, t in p.batches])
    net = p.model.train()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(4000):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(X), y)
        loss.backward()
        opt.step()
        if loss.item() < 5e-5:
            break
    net.eval()
    with torch.no_grad():
        exact = float(nn.functional.cross_entropy(copy.deepcopy(net).double()(X.double()), y))
    assert exact <= 1e-4, f"training reached only {exact:.3g}"
    dirs = make_random_directions(p.model, 2, seed=0)
    return p, dirs, X, y


def _weights(dirs, c, dtype):
    return {k: (dirs.center[k].to(dtype) + sum(float(ci) * v[k].to(dtype) for ci, v in zip(c, dirs.vectors)))
            for k in dirs.center}


def _reference(p, dirs, X, y):
    """float64 brute force (weights θ + Σ cᵢdᵢ built in float64) and plain float32 F.cross_entropy, per point."""
    exact, plain, acc = [], [], []
    net64 = copy.deepcopy(p.model).double()
    net32 = copy.deepcopy(p.model)
    with torch.no_grad():
        for c in COORDS:
            out = torch.func.functional_call(net64, _weights(dirs, c, torch.float64), (X.double(),))
            exact.append(float(nn.functional.cross_entropy(out, y)))
            acc.append(float((out.argmax(-1) == y).double().mean()))
            out32 = torch.func.functional_call(net32, _weights(dirs, c, torch.float32), (X,))
            plain.append(float(nn.functional.cross_entropy(out32, y)))
    return np.array(exact), np.array(plain), np.array(acc)


def _paths(p, dirs, precision):
    per_point = E.PointEvaluator(p, dirs, precision=precision)
    return {"per-point": per_point,
            "per-point, no fold": E.PointEvaluator(p, dirs, precision=precision, fold=False),
            "batched (linear chain)": E.BatchedEvaluator(p, dirs, 4, precision=precision, share=per_point),
            "batched (vmap)": E.BatchedEvaluator(p, dirs, 4, precision=precision, chain=False)}


def test_fp32_paths_at_a_trained_minimum(trained):
    p, dirs, X, y = trained
    exact, plain, acc = _reference(p, dirs, X, y)
    assert exact.min() <= 1e-4 and exact.max() > 1e-2  # both ends: the minimum and the rising walls
    plain_err = np.abs(plain - exact) / exact
    paths = _paths(p, dirs, "fp32")
    assert paths["batched (linear chain)"].chain is not None and paths["batched (vmap)"].chain is None
    for name, ev in paths.items():
        got = ev(COORDS)
        err = np.abs(got["train_loss"] - exact) / exact
        assert err.max() <= 2 * plain_err.max() + 1e-7 / exact.min(), (name, err, plain_err)
        assert np.abs(got["train_loss"] - exact).max() <= 2 * np.abs(plain - exact).max() + 1e-7, name
        np.testing.assert_array_equal(got["train_acc"], acc, err_msg=name)


def test_fp64_paths_at_a_trained_minimum(trained):
    p, dirs, X, y = trained
    exact, _, acc = _reference(p, dirs, X, y)
    for name, ev in _paths(p, dirs, "fp64").items():
        got = ev(COORDS)
        np.testing.assert_allclose(got["train_loss"], exact, rtol=1e-10, atol=0, err_msg=name)
        np.testing.assert_array_equal(got["train_acc"], acc, err_msg=name)
    assert _paths(p, dirs, "fp64")["batched (linear chain)"].chain.dtype == torch.float64
    assert next(p.model.parameters()).dtype == torch.float32  # fp64 evaluates a copy


def test_trained_model_is_batched(trained, capsys):
    """The like-with-like check accepts a trained model: no 'one grid point at a time' notice, a batched path."""
    p, dirs, *_ = trained
    for precision in ("fp32", "fp64"):
        per_point = E.PointEvaluator(p, dirs, precision=precision)
        assert check(per_point, E.BatchedEvaluator(p, dirs, 4, precision=precision, share=per_point)) is None
        assert check(per_point, E.BatchedEvaluator(p, dirs, 4, precision=precision, chain=False,
                                                   share=per_point)) is None
        ev = E.make_evaluator(p, dirs, 8, precision=precision)
        assert isinstance(ev, E.BatchedEvaluator)
    assert "one grid point at a time" not in capsys.readouterr().err


def test_check_still_refuses_a_model_that_differs_under_vmap(trained):
    """A model whose batched evaluation is wrong (train-mode dropout: random per call) is still refused."""
    p, *_ = trained
    model = nn.Sequential(*list(copy.deepcopy(p.model).children()), nn.Dropout(0.5))
    model.train()
    q = make_problem(model, data="zoo:digits", samples=64, device="cpu")
    q.model.train()
    d = make_random_directions(q.model, 2, seed=0)
    per_point = E.PointEvaluator(q, d)
    why = check(per_point, E.BatchedEvaluator(q, d, 4, chain=False, share=per_point))
    assert why is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_against_float64_reference(dtype):
    """The kernel's error model: relative error ~u per example whatever the loss's size, ties, -inf and NaN."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(4000, 10, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 10, (4000,), generator=g)
    z[torch.arange(4000), y] += torch.linspace(0, 40, 4000, dtype=torch.float64)  # losses from ~2 to ~1e-16
    z = z.to(dtype)
    # the reference in extended precision (numpy's longdouble: 64-bit mantissa on x86), from the same logits
    zl = z.double().numpy().astype(np.longdouble)
    m = zl.max(1, keepdims=True)
    off = np.exp(zl - m)
    off[np.arange(len(zl)), zl.argmax(1)] = 0
    ref = (m[:, 0] - zl[np.arange(len(zl)), y.numpy()]) + np.log1p(off.sum(1))
    assert ref.min() < 1e-14 and ref.max() > 1  # (the losses span the range)
    got = K.cross_entropy_terms(z, y).double().numpy().astype(np.longdouble)
    u = torch.finfo(dtype).eps
    spread = float((zl.max(1) - zl.min(1)).max())
    rel = float((np.abs(got - ref) / ref).max())
    assert rel <= 2 * u * (10 + 3 + spread), (rel, u)  # the module's error model
    if dtype == torch.float32:  # plain float32 cross-entropy is far worse at small losses (absolute error ~u)
        plain = nn.functional.cross_entropy(z, y, reduction="none").double().numpy()
        assert float((np.abs(plain - ref) / ref).max()) > 100 * rel
    total = K.cross_entropy_sum(z, y)
    assert total.dtype == torch.float64 and float(total) == pytest.approx(float(ref.sum()), rel=4 * u * (13 + spread))
    ties = torch.zeros(3, 4, dtype=dtype)
    assert K.cross_entropy_terms(ties, torch.tensor([0, 1, 3])).tolist() == pytest.approx([np.log(4)] * 3, rel=4 * u)
    assert int(K.correct_count(ties, torch.tensor([0, 1, 3]))) == 1  # argmax: the first index
    odd = torch.tensor([[0.0, -float("inf"), 1.0], [float("nan"), 0.0, 0.0]], dtype=dtype)
    out = K.cross_entropy_terms(odd, torch.tensor([2, 1]))
    assert float(out[0]) == pytest.approx(float(nn.functional.cross_entropy(odd[:1].double(), torch.tensor([2]))))
    assert torch.isnan(out[1])
