"""Sharpness metrics against closed forms (float64), weight restoration, eval mode, storage and the command."""

from __future__ import annotations

import copy
import json
import math
import threading

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from landscape import sharpness as S
from landscape.cli import main
from landscape.problem import Problem, make_batches, make_problem
from landscape.store import H5_KW, atomic_create, base_attrs


class ToLogits(nn.Module):
    """z ↦ (−z/2, z/2): cross-entropy on these logits is the logistic loss log(1 + exp(−(2y−1)·z))."""

    def forward(self, z):
        return torch.cat([-z / 2, z / 2], dim=-1)


def _problem(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss: str, batch_size: int = 512) -> Problem:
    model = model.double().eval()
    batches = make_batches(X.double(), y if loss == "cross_entropy" else y.double(), batch_size, torch.device("cpu"))
    return Problem(model=model, loss=loss, splits={"train": batches}, device=torch.device("cpu"),
                   classification=loss == "cross_entropy")


def _linear_data(n=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(1, d, generator=g, dtype=torch.float64)
    return X, w


def _linear(w: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(w.shape[1], 1, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(w)
    return lin


def _diag_quadratic(s: torch.Tensor, w: torch.Tensor) -> Problem:
    """L(w) = (1/d) Σ_n s_n² w_n² (mse, x_n = s_n e_n, t_n = 0): a diagonal quadratic, H = diag(2 s²/d)."""
    d = len(s)
    return _problem(_linear(w.reshape(1, d)), torch.diag(s), torch.zeros(d, 1), "mse")


# ------------------------------------------------------------------ worst-case sharpness, closed forms
@pytest.mark.parametrize("adaptive", [True, False])
@pytest.mark.parametrize("p", ["l2", "linf"])
def test_worst_case_logistic_closed_form(adaptive, p):
    X, w = _linear_data()
    y = (torch.arange(len(X)) % 2).long()
    prob = _problem(nn.Sequential(_linear(w), ToLogits()), X, y, "cross_entropy")
    rho = 0.3 if adaptive else 0.1
    res = S.worst_case_sharpness(prob, p=p, adaptive=adaptive, rho=rho, m=1, max_examples=None, steps=10)
    c = w.abs()[0] if adaptive else torch.ones_like(w[0])
    sign = (2 * y - 1).double()
    margin = sign * (X @ w[0])
    shift = rho * ((c * X).norm(dim=1) if p == "l2" else (c * X).abs().sum(dim=1))
    expected = (torch.nn.functional.softplus(-(margin - shift)) - torch.nn.functional.softplus(-margin)).mean()
    assert res.name == f"worst_{'adaptive' if adaptive else 'standard'}_{p}"
    assert res.value == pytest.approx(float(expected), rel=1e-9, abs=1e-12)
    assert res.params["rho"] == rho and res.params["m"] == 1


@pytest.mark.parametrize("adaptive", [True, False])
def test_worst_case_squared_loss_closed_form(adaptive):
    X, w = _linear_data(seed=1)
    t = torch.randn(len(X), 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    prob = _problem(_linear(w), X, t, "mse")
    rho = 0.2
    res = S.worst_case_sharpness(prob, p="l2", adaptive=adaptive, rho=rho, m=1, max_examples=None, steps=10)
    c = w.abs()[0] if adaptive else torch.ones_like(w[0])
    r = (X @ w[0] - t[:, 0]).abs()
    expected = ((r + rho * (c * X).norm(dim=1)) ** 2 - r ** 2).mean()
    assert res.value == pytest.approx(float(expected), rel=1e-9)


def test_average_case_squared_loss():
    X, w = _linear_data(n=4, seed=2)
    t = (X @ w[0]).reshape(-1, 1)  # residual 0: E (δᵀx)² = ρ²‖c⊙x‖²
    prob = _problem(_linear(w), X, t, "mse")
    rho = 0.1
    res = S.average_case_sharpness(prob, adaptive=True, rho=rho, m=4, max_examples=None, samples=3000, seed=0)
    expected = float((rho ** 2 * ((w.abs()[0] * X) ** 2).sum(dim=1)).mean())
    assert res.value == pytest.approx(expected, rel=0.1)
    again = S.average_case_sharpness(prob, adaptive=True, rho=rho, m=4, max_examples=None, samples=3000, seed=0)
    assert again.value == res.value  # seeded


# ------------------------------------------------------------------ ε-sharpness, flatness: quadratics
def test_eps_sharpness_quadratic():
    s = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    w = torch.tensor([0.7, -1.2, 2.0, -0.5], dtype=torch.float64)
    prob = _diag_quadratic(s, w)
    eps = 1e-2
    res = S.eps_sharpness(prob, eps=eps, steps=10, seed=0)
    d = len(s)
    base = float((s ** 2 * w ** 2).sum() / d)
    top = float((s ** 2 * (w.abs() + eps * (w.abs() + 1)) ** 2).sum() / d)
    assert res.value == pytest.approx((top - base) / (1 + base) * 100, rel=1e-9)


def test_flatness_sigma_quadratic():
    s = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    prob = _diag_quadratic(s, torch.zeros(3, dtype=torch.float64))
    tau = 0.05
    res = S.flatness_sigma(prob, target="loss", threshold=tau, samples=600, iters=30, seed=0)
    # E L(u) = σ² (1/d) Σ s² for u ~ N(0, σ² I)
    assert res.value == pytest.approx(math.sqrt(tau / float((s ** 2).mean())), rel=0.05)


def test_flatness_sigma_magnitude_quadratic():
    s = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    w = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    prob = _diag_quadratic(s, w)
    tau, eps = 0.05, 1e-3
    res = S.flatness_sigma(prob, magnitude_aware=True, target="loss", threshold=tau, samples=600, iters=30,
                           eps=eps, seed=0)
    # E L(w+u) − L(w) = (1/d) Σ s² (σ² w² + ε²)   (antithetic pairs cancel the linear term exactly)
    a = float((s ** 2 * w ** 2).mean())
    b = float((s ** 2).mean()) * eps ** 2
    assert res.value == pytest.approx(math.sqrt((tau - b) / a), rel=0.05)


# ------------------------------------------------------------------ gradient path, directional, curvature
def _lsq(seed=0, n=8, d=4):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    t = torch.randn(n, 1, generator=g, dtype=torch.float64)
    w = torch.randn(1, d, generator=g, dtype=torch.float64)
    prob = _problem(_linear(w), X, t, "mse", batch_size=3)  # uneven batches: size weighting matters
    H = 2 * X.T @ X / n
    grad = H @ w[0] - 2 * X.T @ t[:, 0] / n
    return prob, X, t, w[0], H, grad


def test_gradient_predictiveness_quadratic():
    prob, X, t, w, H, g = _lsq()
    etas = [0.05, 0.1, 0.2, 0.4]
    res = S.gradient_path_metrics(prob, etas=etas)
    change, attrs = res["gradient_predictiveness"].extras["gradient_change"]
    expected = np.array([float((H @ (eta * g)).norm()) for eta in etas])
    np.testing.assert_allclose(change, expected, rtol=1e-9)
    np.testing.assert_allclose(attrs["eta"], etas)
    assert res["gradient_predictiveness"].value == pytest.approx(expected.max(), rel=1e-9)
    assert res["beta_smoothness"].value == pytest.approx(float((H @ g).norm() / g.norm()), rel=1e-9)
    losses = [float(((X @ (w - eta * g) - t[:, 0]) ** 2).mean()) for eta in etas]
    assert res["loss_variation"].value == pytest.approx(max(losses) - min(losses), rel=1e-9)


def test_directional_sharpness_quadratic():
    prob, X, t, w, H, g = _lsq(seed=1)
    u = torch.tensor([[1.0, -2.0, 0.5, 0.0]], dtype=torch.float64)
    res = S.directional_sharpness(prob, {"weight": u})
    assert res["directional_sharpness"].value == pytest.approx(float(u[0] @ H @ u[0] / (u[0] @ u[0])), rel=1e-9)
    assert res["gradient_correlation"].value == pytest.approx(float(g @ u[0]), rel=1e-9)
    default = S.directional_sharpness(prob)
    assert default["directional_sharpness"].value == pytest.approx(float(g @ H @ g / (g @ g)), rel=1e-9)
    assert default["gradient_correlation"].params["cosine"] == pytest.approx(-1.0)


def test_curvature_metrics_quadratic():
    s = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5], dtype=torch.float64)
    prob = _diag_quadratic(s, torch.ones(5, dtype=torch.float64))
    res = S.curvature_metrics(prob, lr=0.1, lanczos_steps=10, trace_matvecs=4, trace_method="hutchinson", seed=0)
    eig = 2 * s ** 2 / len(s)
    assert res["lambda_max"].value == pytest.approx(float(eig.max()), rel=1e-6)
    assert res["lambda_min"].value == pytest.approx(float(eig.min()), rel=1e-3)
    assert res["trace"].value == pytest.approx(float(eig.sum()), rel=1e-6)  # exact for a diagonal H
    assert res["eos_ratio"].value == pytest.approx(0.1 * float(eig.max()) / 2, rel=1e-6)
    assert res["lambda_max_over_trace"].value == pytest.approx(float(eig.max() / eig.sum()), rel=1e-6)


# ------------------------------------------------------------------ weights restored, BN in eval mode
def test_metrics_leave_weights_and_bn_untouched():
    prob = make_problem("zoo:mlp", data="zoo:synthetic", samples=96, batch_size=32, device="cpu",
                        model_args="bn=true,depth=2,width=8")
    prob.model.train()  # even if a caller left it in train mode, BatchNorm must use running statistics
    before = {k: v.clone() for k, v in prob.model.state_dict().items()}
    out = S.compute_metrics(prob, "all", lr=0.5, apgd_steps=3, max_examples=64, m=32, avg_samples=2,
                            flat_samples=2, flat_iters=3, lanczos_steps=5, trace_matvecs=2, eps_steps=2)
    after = prob.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert prob.model.training  # flags restored
    expected = set(S.ALL_METRICS) - {"layerwise"}
    assert set(out) == expected
    for name, m in out.items():
        assert np.all(np.isfinite(m.value)) or name.startswith("flatness"), name


def test_parse_metrics_and_errors():
    assert S.parse_metrics("eps,curvature")[:2] == ["eps_sharpness", "lambda_max"]
    assert "layerwise" in S.parse_metrics("all")
    with pytest.raises(S.LandscapeError, match="unknown metric"):
        S.parse_metrics("sharpest")


# ------------------------------------------------------------------ world: R ranks simulated by threads
class _Hub:
    """The meeting point of R simulated ranks: ``allreduce_sum`` waits for all of them and adds their tensors
    in float64 (in rank order). A rank that makes a call the others do not make breaks the barrier (an error)."""

    def __init__(self, size: int):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=60)
        self.parts: list = [None] * size
        self.calls = [0] * size

    def allreduce_sum(self, rank: int, t: torch.Tensor) -> torch.Tensor:
        self.parts[rank] = t.detach().to(torch.float64).clone()
        self.calls[rank] += 1
        self.barrier.wait()
        shapes = {tuple(p.shape) for p in self.parts}
        assert len(shapes) == 1, f"ranks reduce tensors of different shapes: {shapes}"
        total = self.parts[0].clone()
        for p in self.parts[1:]:
            total += p
        self.barrier.wait()  # every rank has read the parts before any rank writes its next one
        return total.to(dtype=t.dtype)


class _ThreadWorld:
    """A rank view (``rank``, ``size``, ``allreduce_sum``) of a :class:`_Hub`."""

    def __init__(self, hub: _Hub, rank: int):
        self.hub, self.rank, self.size = hub, rank, hub.size

    def allreduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return self.hub.allreduce_sum(self.rank, t)


def _on_ranks(size: int, problem: Problem, fn) -> list:
    """``fn(problem_copy, world)`` on ``size`` simulated ranks (threads, one deep copy of the problem each:
    functional_call swaps a module's tensors, so ranks must not share a model); every rank's result."""
    hub = _Hub(size)
    results: list = [None] * size
    errors: list = []

    def rank_main(r: int) -> None:
        try:
            results[r] = fn(copy.deepcopy(problem), _ThreadWorld(hub, r))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            hub.barrier.abort()

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a simulated rank hung"
    if errors:
        raise errors[0]
    assert len(set(hub.calls)) == 1, f"ranks made different numbers of collective calls: {hub.calls}"
    return results


def _mlp_problem(samples: int = 50, batch_size: int = 16) -> Problem:
    g = torch.Generator().manual_seed(5)
    X = torch.randn(samples, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (samples,), generator=g)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    return _problem(net, X, y, "cross_entropy", batch_size=batch_size)


_WORLD_KW = dict(lr=0.3, seed=3, eps_steps=3, m=12, max_examples=None, apgd_steps=3, avg_samples=2,
                 flat_target="loss", flat_samples=2, flat_iters=4, etas=[0.1, 0.3], lanczos_steps=6, trace_matvecs=4)


def _values(metrics: dict) -> dict:
    out = {}
    for name, m in metrics.items():
        out[name] = np.asarray(m.value, dtype=np.float64)
        for ename, (arr, _) in m.extras.items():
            out[ename] = np.asarray(arr, dtype=np.float64)
    return out


@pytest.mark.parametrize("size", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [16, 30])  # 4 data batches (uneven over 3 ranks); 2 (rank 2 holds none)
def test_world_gives_single_process_metrics(size, batch_size):
    """Every metric on R simulated ranks equals the single-process value (float64 model: to 1e-10), every rank
    gets the same values and makes the same collective calls; 50 examples in m=12 → 4 example batches."""
    prob = _mlp_problem(batch_size=batch_size)
    names = [n for n in S.ALL_METRICS if n != "layerwise"]
    ref = _values(S.compute_metrics(copy.deepcopy(prob), names, **_WORLD_KW))
    assert S.compute_metrics(copy.deepcopy(prob), "avg_adaptive", **_WORLD_KW)["avg_adaptive"].params["n_batches"] == 4
    got = _on_ranks(size, prob, lambda p, w: _values(S.compute_metrics(p, names, world=w, **_WORLD_KW)))
    for r, vals in enumerate(got):
        assert sorted(vals) == sorted(ref)
        for k in ref:
            np.testing.assert_allclose(vals[k], ref[k], rtol=1e-10, atol=1e-14, err_msg=f"{k} on rank {r}")
            np.testing.assert_array_equal(vals[k], got[0][k], err_msg=f"{k}: rank {r} differs from rank 0")


def test_world_of_one_rank_and_none_are_the_same_computation():
    """A world of size 1 is the single-process path: bit-identical values, no collective call."""
    prob = _mlp_problem()

    class Lonely:
        rank, size = 0, 1

        def allreduce_sum(self, t):
            raise AssertionError("a world of one rank must not reduce")

    theta = S.trainable(prob.model)
    assert S.loss_grad(prob, theta, world=Lonely())[0] == S.loss_grad(prob, theta)[0]
    a = S.compute_metrics(prob, "eps,average,gradient_path", world=Lonely(), **_WORLD_KW)
    b = S.compute_metrics(prob, "eps,average,gradient_path", **_WORLD_KW)
    assert {k: float(v) for k, v in a.items()} == {k: float(v) for k, v in b.items()}


def test_loss_helpers_share_batches_over_ranks():
    """loss_at / loss_acc_at / loss_grad under a world: each rank computes only batches i % size == rank, and
    every rank gets the whole loss, accuracy and gradient."""
    prob = _mlp_problem(samples=50, batch_size=16)  # batches of 16, 16, 16, 2
    theta = S.trainable(prob.model)
    loss, grad = S.loss_grad(prob, theta)
    acc_ref = S.loss_acc_at(prob, theta)

    def fn(p, w):
        seen = []
        fwd = p.model.forward
        p.model.forward = lambda x: (seen.append(len(x)), fwd(x))[1]
        th = S.trainable(p.model)
        out = (S.loss_at(p, th, world=w), S.loss_acc_at(p, th, world=w), S.loss_grad(p, th, world=w))
        return out, seen

    for rank, ((l1, la, (l2, g)), seen) in enumerate(_on_ranks(3, prob, fn)):
        assert seen == [[16, 2], [16], [16]][rank] * 3  # three helpers, this rank's batches each time
        assert l1 == pytest.approx(loss, rel=1e-12) and l2 == pytest.approx(loss, rel=1e-12)
        assert la[0] == pytest.approx(acc_ref[0], rel=1e-12) and la[1] == acc_ref[1]
        for k in grad:
            torch.testing.assert_close(g[k], grad[k], rtol=1e-12, atol=1e-15)


def test_per_batch_generators_do_not_depend_on_the_batch_order():
    """Average-case sharpness draws batch j's noise from a generator seeded by (seed, j): the value of a batch
    does not depend on which batches were computed before it; a seed gives the same value every time."""
    g1, g2 = S._batch_gen(7, 2), S._batch_gen(7, 2)
    assert torch.equal(torch.randn(5, generator=g1), torch.randn(5, generator=g2))
    assert not torch.equal(torch.randn(5, generator=S._batch_gen(7, 1)), torch.randn(5, generator=S._batch_gen(7, 2)))
    assert not torch.equal(torch.randn(5, generator=S._batch_gen(8, 2)), torch.randn(5, generator=S._batch_gen(7, 2)))
    torch.randn(3, generator=S._batch_gen(-1, 0))  # negative seeds (the CLI accepts them) work too
    prob = _mlp_problem()
    a = S.average_case_sharpness(prob, m=12, max_examples=None, samples=2, seed=4)
    b = S.average_case_sharpness(prob, m=12, max_examples=None, samples=2, seed=4)
    assert a.value == b.value and a.params["n_batches"] == 4


# ------------------------------------------------------------------ storage and command
def test_save_adds_to_existing_file_and_replaces(tmp_path):
    path = str(tmp_path / "surf.h5")

    def build(f):
        f.attrs.update(base_attrs("cmd", {}, "m", "d", kind="surface"))
        f.create_dataset("surfaces/train_loss", data=np.zeros(3))

    atomic_create(path, build)
    met = {"lambda_max": S.Metric("lambda_max", 2.0, {"seed": 0, "etas": [0.1, 0.2]})}
    assert S.save_results(path, met) == "added"
    met["lambda_max"].value = 3.0
    assert S.save_results(path, met) == "added"
    with h5py.File(path, "r", **H5_KW) as f:
        assert f.attrs["kind"] == "surface" and "surfaces/train_loss" in f
        assert float(f["metrics/lambda_max"][()]) == 3.0
        assert json.loads(f["metrics/lambda_max"].attrs["etas"]) == [0.1, 0.2]


def test_command_new_file_and_direction(tmp_path, capsys):
    args = ["--model", "zoo:mlp", "--model-args", "width=8", "--data", "zoo:synthetic", "--samples", "64",
            "--device", "cpu"]
    from landscape.problem import load_model

    net = load_model("zoo:mlp", "width=8")
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save(net.state_dict(), a)
    torch.save({k: v + 0.01 for k, v in net.state_dict().items()}, b)
    out = str(tmp_path / "m.h5")
    rc = main(["sharpness", *args, "--checkpoint", str(a), "--metrics", "directional,eps,curvature,layerwise",
               "--lr", "0.2", "--direction-from", str(a), "--direction-to", str(b), "--out", out,
               "--plot-layers", str(tmp_path / "l.png")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "directional_sharpness" in text and "eos_ratio" in text and "weight_domination" in text
    with h5py.File(out, "r", **H5_KW) as f:
        assert f.attrs["kind"] == "sharpness" and f.attrs["format"] == "landscape"
        assert "b.pt - a.pt" in f["metrics/directional_sharpness"].attrs["direction"]
        assert f["metrics/eos_ratio"].attrs["lr"] == 0.2
        layers = json.loads(f["layerwise/kron_lambda_max"].attrs["layers"])
        assert len(layers) == 3 and f["layerwise/kron_lambda_max"].shape == (3,)
        assert set(f["layerwise/singular_values"]) == set(layers)
    assert (tmp_path / "l.png").exists()


def test_command_curvature_group_without_lr_leaves_eos_out(tmp_path, capsys):
    """The curvature group (alone, with other groups, or in ``all``) needs no --lr: eos_ratio is left out;
    only eos_ratio named on its own asks for --lr."""
    base = ["sharpness", "--model", "zoo:mlp", "--model-args", "width=8", "--data", "zoo:synthetic", "--samples",
            "32", "--device", "cpu", "--lanczos-steps", "4", "--trace-matvecs", "3", "--eps-steps", "2", "--quiet"]
    out = str(tmp_path / "m.h5")
    assert main([*base, "--metrics", "curvature,eps", "--out", out]) == 0
    with h5py.File(out, "r", **H5_KW) as f:
        assert {"lambda_max", "trace", "eps_sharpness"} <= set(f["metrics"]) and "eos_ratio" not in f["metrics"]
    printed = capsys.readouterr()
    assert "lambda_max" not in printed.out and "→" in printed.out and printed.err.count("[") == 0  # --quiet
    assert main([*base, "--metrics", "eps,eos_ratio", "--out", str(tmp_path / "n.h5")]) == 2
    assert "eos_ratio needs --lr" in capsys.readouterr().err
    assert not (tmp_path / "n.h5").exists()


def test_command_errors(tmp_path, capsys):
    base = ["sharpness", "--model", "zoo:mlp", "--data", "zoo:synthetic", "--samples", "32", "--device", "cpu",
            "--out", str(tmp_path / "x.h5")]
    assert main([*base, "--metrics", "bogus"]) == 2
    assert "unknown metric" in capsys.readouterr().err
    assert main([*base, "--direction-from", "a.pt"]) == 2
    assert "go together" in capsys.readouterr().err
    assert main([*base, "--etas", "1:0:3"]) == 2


# ------------------------------------------------------------------ λ_min to tolerance; ε-sharpness a lower bound
@pytest.mark.parametrize("kind", ["mlp", "mlp_bn", "bn_input", "cnn", "cnn_bn"])
def test_curvature_metrics_lambda_min_matches_eigvalsh(kind):
    """λ_min and λ_max run to the residual tolerance (default cap): exact to 1e-6 relative, residuals stored."""
    from tests.curvature_models import dense_hessian
    from tests.test_curvature_hvp import _problem as curvature_problem

    prob = curvature_problem(kind)
    w = np.linalg.eigvalsh(dense_hessian(prob).numpy())
    res = S.curvature_metrics(prob, trace_matvecs=4, seed=0)  # (the defaults: tol 1e-4, cap 100)
    lmin, lmax = res["lambda_min"], res["lambda_max"]
    assert lmin.value == pytest.approx(w[0], rel=1e-6) and lmax.value == pytest.approx(w[-1], rel=1e-6)
    for m in (lmin, lmax):
        assert m.params["converged"] is True and m.params["matvecs"] > 0
        assert m.params["residual"] <= 1e-4 * abs(m.value)
    with pytest.warns(RuntimeWarning, match="cap of 3 steps before"):  # the cap: a warning and converged=False
        capped = S.curvature_metrics(prob, lanczos_steps=3, trace_matvecs=4, seed=0)
    assert capped["lambda_min"].params["converged"] is False
    assert "NOT converged" in S.format_table(capped)


def test_eps_sharpness_is_labelled_a_lower_bound_and_starts_help():
    prob = make_problem("zoo:mlp", data="zoo:synthetic", samples=64, device="cpu", model_args="width=8")
    one = S.eps_sharpness(prob, eps=5e-3, steps=5, starts=1, seed=0)
    three = S.eps_sharpness(prob, eps=5e-3, steps=5, starts=3, seed=0)
    assert three.value >= one.value >= 0  # the same first start, then more: the best can only rise
    assert three.params["lower_bound"] is True and three.params["starts"] == 3
    line = [r for r in S.format_table({"eps_sharpness": three}).splitlines() if r.startswith("eps_sharpness")][0]
    assert "lower bound" in line and "starts=3" in line
    # the reported maximum is the loss at a point of the box, recomputed
    assert three.params["max_loss"] >= three.params["base_loss"]
