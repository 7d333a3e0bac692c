"""The batched path's linear chain (K points of a sequential MLP as bmm) against a float64 reference."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from landscape import evaluate as E
from landscape.directions import make_random_directions
from landscape.evaluate.chain import LinearChain
from landscape.problem import make_problem


def _problem(model="zoo:mlp", model_args=None, loss="cross_entropy", samples=90):
    return make_problem(model, data="zoo:synthetic:train", test_data="zoo:synthetic:test", samples=samples,
                        batch_size=32, device="cpu", model_args=model_args, loss=loss)


def _coords(n: int, ndim: int, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(3).uniform(-scale, scale, (n, ndim))


def reference(problem, dirs, coords: np.ndarray) -> dict[str, np.ndarray]:
    """Loss and accuracy of each point from the plain model in float64 (weights θ + Σ cᵢ dᵢ built in float64)."""
    net = copy.deepcopy(problem.model).double().eval()
    state = {k: v.double() for k, v in net.state_dict().items() if v.is_floating_point()}
    out: dict[str, list[float]] = {}
    for c in coords:
        point = dict(state)
        for k in dirs.center:
            point[k] = dirs.center[k].double() + sum(float(a) * v[k].double() for a, v in zip(c, dirs.vectors))
        for split, batches in problem.splits.items():
            x = torch.cat([b[0] for b in batches]).double()
            y = torch.cat([b[1] for b in batches])
            with torch.no_grad():
                logits = functional_call(net, point, (x,))
            out.setdefault(f"{split}_loss", []).append(float(nn.functional.cross_entropy(logits, y)))
            out.setdefault(f"{split}_acc", []).append(float((logits.argmax(1) == y).double().mean()))
    return {k: np.array(v) for k, v in out.items()}


def _check(problem, dirs, coords, ks=(1, 3, 4), rtol=1e-5):
    want = reference(problem, dirs, coords)
    for k in ks:
        ev = E.BatchedEvaluator(problem, dirs, k)
        assert ev.chain is not None, "the linear chain should cover this model"
        got = ev(coords)
        assert sorted(got) == sorted(want)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=1e-7, err_msg=f"K={k} {name}")
    return want


@pytest.mark.parametrize("depth,act,ndim", [(0, "relu", 2), (1, "relu", 1), (2, "relu", 2), (3, "relu", 3),
                                            (2, "tanh", 2), (2, "gelu", 2), (1, "sigmoid", 2), (2, "elu", 1)])
def test_chain_equals_float64_reference(depth, act, ndim):
    """Every depth (0: the folded layer is the only one) and activations with f(1) ≠ 1 (the ones row written back)."""
    p = _problem(model_args={"depth": depth, "act": act})
    dirs = make_random_directions(p.model, ndim, seed=depth)
    want = _check(p, dirs, _coords(7, ndim))
    assert np.ptp(want["train_loss"]) > 1e-3  # the points differ


@pytest.mark.parametrize("dir_type,ignore", [("weights", "biasbn"), ("weights", "none"), ("states", "none")])
def test_chain_batchnorm_in_eval_mode(dir_type, ignore):
    """BatchNorm1d as a per-feature affine map from (perturbed) weights and running statistics."""
    p = _problem(model_args={"bn": True, "width": 16})
    with torch.no_grad():
        for m in p.model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    dirs = make_random_directions(p.model, 2, seed=1, dir_type=dir_type, ignore=ignore)
    if dir_type == "states":
        assert any("running_var" in k for k in dirs.center)
    _check(p, dirs, _coords(6, 2, scale=0.5))


def test_chain_dropout_and_identity_pass_through_in_eval_mode():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.ReLU(), nn.Dropout(0.3), nn.Identity(),
                        nn.Linear(24, 10)).eval()
    x, y = torch.randn(70, 64), torch.randint(0, 10, (70,))
    p = make_problem(net, data=(x, y), batch_size=32, device="cpu")
    _check(p, make_random_directions(net, 2, seed=0), _coords(5, 2))


def test_chain_in_place_activations_keep_their_buffer():
    """``inplace=True`` activations return the buffer they were given: the next layer must not write over it."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.ELU(inplace=True), nn.Linear(24, 24),
                        nn.Hardtanh(-0.5, 0.5, inplace=True), nn.Linear(24, 10)).eval()
    x, y = torch.randn(70, 64), torch.randint(0, 10, (70,))
    p = make_problem(net, data=(x, y), batch_size=32, device="cpu")
    _check(p, make_random_directions(net, 2, seed=0), _coords(5, 2))


def test_chain_ties_pick_the_first_class_like_argmax():
    """All logits equal (last layer zero and not moved): every sample is predicted as class 0."""
    p = _problem()
    last = p.model[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    dirs = make_random_directions(p.model, 2, seed=0)
    for v in dirs.vectors:
        v["5.weight"].zero_()
        v["5.bias"].zero_()
    want = _check(p, dirs, _coords(4, 2))
    y = torch.cat([b[1] for b in p.splits["train"]])
    np.testing.assert_allclose(want["train_acc"], float((y == 0).double().mean()))


def test_chain_non_finite_points_match_the_per_point_path():
    """NaN logits are the maximum for argmax: such groups are run again with the exact rule."""
    p = _problem()
    dirs = make_random_directions(p.model, 2, seed=0)
    coords = np.array([[0.1, 0.2], [np.nan, 0.0], [1e30, -1e30], [np.inf, 0.0], [0.0, 0.0]])
    ev = E.BatchedEvaluator(p, dirs, 2)
    assert ev.chain is not None
    got, want = ev(coords), E.PointEvaluator(p, dirs)(coords)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, equal_nan=True, err_msg=name)
    assert np.isnan(got["train_loss"][1]) and np.isfinite(got["train_loss"][[0, 4]]).all()


class _LoudReLU(nn.ReLU):
    def forward(self, x):  # a subclass with its own forward may do anything
        return super().forward(x) * 2


@pytest.mark.parametrize("case", ["conv-first", "mse", "softmax", "own-forward", "training", "bf16", "compile-off",
                                  "no-chain"])
def test_chain_applies_only_where_it_is_exact(case):
    """Elsewhere the vmap path runs (and still gives the per-point numbers)."""
    kw: dict = {}
    if case == "conv-first":
        torch.manual_seed(0)
        net = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                            nn.Linear(192, 10)).eval()
        p = make_problem(net, data=(torch.randn(40, 64), torch.randint(0, 10, (40,))), batch_size=16, device="cpu")
    elif case == "mse":
        p = _problem(loss="mse")
    elif case in ("softmax", "own-forward"):
        torch.manual_seed(0)
        mid = nn.Softmax(dim=1) if case == "softmax" else _LoudReLU()
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), mid, nn.Linear(16, 10)).eval()
        p = make_problem(net, data=(torch.randn(40, 64), torch.randint(0, 10, (40,))), batch_size=16, device="cpu")
    else:
        p = _problem()
        if case == "training":
            p.model.train()
        kw = {"bf16": {"precision": "bf16"}, "no-chain": {"chain": False}}.get(case, {})
    dirs = make_random_directions(p.model, 2, seed=0)
    if case == "compile-off":  # --compile compiles the vmap path; the chain is not used then
        assert LinearChain.build(None, dirs, 10) is None
        return
    ev = E.BatchedEvaluator(p, dirs, 3, **kw)
    assert ev.chain is None
    if case not in ("bf16", "training"):
        got, want = ev(_coords(4, 2)), E.PointEvaluator(p, dirs)(_coords(4, 2))
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, err_msg=name)


def test_chain_layouts_are_cached_per_split_and_released_for_others():
    p = _problem()
    dirs = make_random_directions(p.model, 2, seed=0)
    ev = E.BatchedEvaluator(p, dirs, 4)
    ev(_coords(5, 2))
    kept = set(ev.chain._layouts)
    assert kept == {(id(g), ev.rows) for g in ev.groups.values()}
    E.choose_points_per_batch(p, E.PointEvaluator(p, dirs), ev, 8, budget_s=0.5)  # probes other groups and K
    assert set(ev.chain._layouts) <= kept


def test_chain_refuses_directions_that_move_a_tensor_it_does_not_read():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    net[2].register_buffer("junk", torch.ones(3))  # a buffer the ReLU does not use
    p = make_problem(net, data=(torch.randn(40, 64), torch.randint(0, 10, (40,))), batch_size=16, device="cpu")
    dirs = make_random_directions(net, 2, seed=0, dir_type="states", ignore="none", norm="layer")
    assert "2.junk" in dirs.center and any(bool(torch.any(v["2.junk"] != 0)) for v in dirs.vectors)
    assert E.BatchedEvaluator(p, dirs, 3).chain is None
    for v in dirs.vectors:
        v["2.junk"].zero_()
    assert E.BatchedEvaluator(p, dirs, 3).chain is not None


def test_chain_rows_on_a_gpu_are_bounded(monkeypatch):
    """On a GPU the vmap path takes whole batches; the chain, which joins a group's batches, is chunked."""
    p = _problem()
    dirs = make_random_directions(p.model, 2, seed=0)
    ev = E.BatchedEvaluator(p, dirs, 8)
    monkeypatch.setattr(p, "device", torch.device("cuda"))
    assert ev.rows == max(E.MIN_ROWS, E.DEVICE_CHUNK_BYTES // (8 * ev.row_bytes))
    ev.chain = None
    assert ev.rows == 0
