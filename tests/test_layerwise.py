"""Layer-wise K-FAC conditioning and degeneracy against explicit computations (float64)."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape import layerwise as LW
from landscape.plot.layerwise import plot_layerwise
from landscape.problem import Problem, make_batches, make_problem
from landscape.store import H5_KW


def _problem(model: nn.Module, X, y, batch_size=7) -> Problem:
    model = model.double().eval()
    return Problem(model=model, loss="cross_entropy", splits={"train": make_batches(X.double(), y, batch_size,
                                                                                     torch.device("cpu"))},
                   device=torch.device("cpu"))


def _tiny():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3, bias=False))
    g = torch.Generator().manual_seed(1)
    X = torch.randn(20, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (20,), generator=g)
    return _problem(net, X, y), X, y


def test_kfac_factors_match_direct_computation():
    prob, X, y = _tiny()
    net = prob.model
    W1, b1, W2 = net[0].weight, net[0].bias, net[2].weight
    h1 = X @ W1.T + b1
    a1 = torch.tanh(h1)
    h2 = a1 @ W2.T
    loss = F.cross_entropy(h2, y, reduction="sum")
    d1, d2 = torch.autograd.grad(loss, [h1, h2])
    x1 = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    fac = LW.kfac_factors(prob)
    assert list(fac) == ["0", "2"]
    n = len(X)
    torch.testing.assert_close(fac["0"][0], x1.T @ x1 / n)
    torch.testing.assert_close(fac["0"][1], d1.T @ d1 / n)
    torch.testing.assert_close(fac["2"][0], a1.T @ a1 / n)  # no bias: no ones column
    torch.testing.assert_close(fac["2"][1], d2.T @ d2 / n)


def test_kron_lambda_max_and_kappa_equal_explicit_product():
    prob, _, _ = _tiny()
    res = LW.layerwise(prob, percentiles=(50, 90))
    fac = LW.kfac_factors(prob)
    for i, name in enumerate(res.layers):
        A, B = fac[name]
        ek = torch.linalg.eigvalsh(torch.kron(A, B)).numpy()
        ref = LW.spectrum_stats(ek, (50, 90))
        for key in ("lambda_max", "kappa", "kappa_p50", "kappa_p90"):
            got = res.quantities[f"kron_{key}"][i]
            if math.isinf(ref[key]) or ref[key] > 1e12:
                assert got > 1e12 or math.isinf(got)
            else:
                assert got == pytest.approx(ref[key], rel=1e-8), (name, key)
        ea, eb = torch.linalg.eigvalsh(A), torch.linalg.eigvalsh(B)
        assert res.quantities["kron_lambda_max"][i] == pytest.approx(float(ea.max() * eb.max()), rel=1e-10)
        assert res.quantities["sigma_x_lambda_max"][i] == pytest.approx(float(ea.max()), rel=1e-10)
        assert res.quantities["sigma_delta_kappa"][i] == pytest.approx(float(eb.max() / eb.min()), rel=1e-8)


def test_conv_factors_are_unfolded_patches():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    g = torch.Generator().manual_seed(2)
    X = torch.randn(5, 2, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (5,), generator=g)
    prob = _problem(net, X, y, batch_size=2)
    fac = LW.kfac_factors(prob)
    conv = prob.model[0]
    h = conv(X)
    loss = F.cross_entropy(prob.model[1:](h), y, reduction="sum")
    (d,) = torch.autograd.grad(loss, [h])
    xp = F.pad(X, (1, 1, 1, 1))
    rows, drows = [], []
    for n in range(5):
        for i in range(4):
            for j in range(4):
                rows.append(torch.cat([xp[n, :, i:i + 3, j:j + 3].reshape(-1), torch.ones(1, dtype=X.dtype)]))
                drows.append(d[n, :, i, j])
    R, D = torch.stack(rows), torch.stack(drows)
    torch.testing.assert_close(fac["0"][0], R.T @ R / len(R))
    torch.testing.assert_close(fac["0"][1], D.T @ D / 5)


def test_weight_stats_and_domination():
    W = torch.diag(torch.tensor([4.0, 2.0, 1.0, 1.0], dtype=torch.float64))
    st = LW.weight_stats(W)
    np.testing.assert_allclose(st["singular_values"], [4, 2, 1, 1])
    assert st["stable_rank"] == pytest.approx((16 + 4 + 1 + 1) / 16)
    p = np.array([4, 2, 1, 1]) / 8
    assert st["effective_rank"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    prob, X, y = _tiny()
    res = LW.layerwise(prob)
    loss = F.cross_entropy(prob.model(X), y)
    (gw,) = torch.autograd.grad(loss, [prob.model[0].weight])
    want = float(torch.linalg.matrix_norm(prob.model[0].weight.detach(), 2) / torch.linalg.matrix_norm(gw, 2))
    assert res.quantities["weight_domination"][0] == pytest.approx(want, rel=1e-8)


def test_true_fisher_seeded_and_bn_model(tmp_path):
    prob = make_problem("zoo:mlp", data="zoo:synthetic", samples=64, batch_size=32, device="cpu",
                        model_args="bn=true,depth=3,width=8")
    before = {k: v.clone() for k, v in prob.model.state_dict().items()}
    r1 = LW.layerwise(prob, fisher="true", seed=3)
    r2 = LW.layerwise(prob, fisher="true", seed=3)
    np.testing.assert_array_equal(r1.quantities["sigma_delta_lambda_max"], r2.quantities["sigma_delta_lambda_max"])
    assert all(torch.equal(before[k], v) for k, v in prob.model.state_dict().items())
    assert len(r1.layers) == 4 and all(np.isfinite(r1.quantities["kron_lambda_max"]))
    path = str(tmp_path / "lw.h5")
    with h5py.File(path, "w", **H5_KW) as f:
        r1.write(f)
        r1.write(f)  # replacing is fine
    with h5py.File(path, "r", **H5_KW) as f:
        assert f["layerwise/stable_rank"].shape == (4,)
        assert f["layerwise/stable_rank"].attrs["fisher"] == "true"
    plot_layerwise(r1, str(tmp_path / "lw.png"))
    assert "weight_domination" in r1.table()
