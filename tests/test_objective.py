"""The functional core (landscape.objective): loss, accuracy and gradient at θ against dense float64 references,
sharding, and the loops that sharpness, curvature and train share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape import objective as O
from landscape.curvature import HessianOperator
from landscape.problem import make_problem
from landscape.train import _evaluate
from tests.curvature_models import dense_loss_acc_grad
from tests.user_models import Reg


def _problem(seed=0):
    return make_problem("zoo:mlp", data="zoo:synthetic", samples=50, batch_size=16, device="cpu", seed=seed,
                        model_args={"width": 5, "depth": 1})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_accuracy_gradient_against_dense_float64(seed):
    prob = _problem(seed)
    theta = O.trainable(prob.model)
    ref_loss, ref_acc, ref_g = dense_loss_acc_grad(prob)  # batches of 16, 16, 16, 2: the short last one weighs 2/50
    loss, acc = O.loss_acc_at(prob, theta)
    assert loss == pytest.approx(ref_loss, rel=1e-6) and acc == pytest.approx(ref_acc, abs=1e-12)
    assert O.loss_at(prob, theta) == pytest.approx(ref_loss, rel=1e-6)
    loss2, g = O.loss_grad(prob, theta)
    assert loss2 == pytest.approx(ref_loss, rel=1e-5)
    for k in ref_g:
        torch.testing.assert_close(g[k].double(), ref_g[k], rtol=1e-4, atol=1e-6)


def test_curvature_gradient_is_the_same_loop():
    prob = _problem()
    theta = O.trainable(prob.model)
    _, g = O.loss_grad(prob, theta)
    op = HessianOperator(prob, cache=False)
    og = op.gradient()
    for k in g:
        torch.testing.assert_close(og[k], g[k], rtol=1e-6, atol=1e-8)
    assert op.value() == pytest.approx(O.loss_at(prob, theta), rel=1e-5)


def test_train_evaluation_is_the_same_loop():
    prob = _problem()
    X = torch.cat([x for x, _ in prob.batches])
    Y = torch.cat([y for _, y in prob.batches])
    loss, acc = _evaluate(prob.model, X, Y, prob.loss_fn, batch_size=7)
    ref_loss, ref_acc = O.loss_acc_at(prob, O.trainable(prob.model))
    assert loss == pytest.approx(ref_loss, rel=1e-6) and acc == pytest.approx(ref_acc, abs=1e-12)
    prob.model.train()
    _evaluate(prob.model, X, Y, prob.loss_fn)
    assert all(m.training for m in prob.model.modules())  # the mode is put back


class _World:
    def __init__(self, rank, size):
        self.rank, self.size = rank, size


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_shard_gives_every_item_to_exactly_one_rank(size):
    items = list(range(11))
    shares = [list(O.shard(items, _World(r, size))) for r in range(size)]
    assert sorted(i for s in shares for i in s) == items
    assert all(s == items[r::size] for r, s in enumerate(shares))
    assert O.shard(items, None) is items


def test_allreduce_named_splits_back_shapes_and_dtypes():
    class Sum(_World):
        def allreduce_sum(self, t):
            return t * 2  # two identical ranks

    parts = [torch.ones(2, 3), torch.arange(4.0, dtype=torch.float64)]
    out, extra = O.allreduce_named(Sum(0, 2), parts, [(2, 3), (4,)], [torch.float32, torch.float64], [1.5])
    assert out[0].shape == (2, 3) and out[0].dtype == torch.float32 and float(out[0].sum()) == 12.0
    np.testing.assert_array_equal(out[1].numpy(), [0.0, 2.0, 4.0, 6.0])
    assert extra == [3.0]


def test_at_a_regression_minimum_against_dense_float64():
    """A regression net outside the zoo at an exact minimum (teacher targets: loss 0, gradient 0) and a hair
    away from it (loss ~1e-6, well under 1e-4): loss and gradient match torch.func in float64."""
    torch.manual_seed(0)
    net = Reg().double()
    X = torch.randn(40, 3, dtype=torch.float64)
    with torch.no_grad():
        y = net(X)
    prob = make_problem(net, data=(X, y), loss="mse", device="cpu", batch_size=16)
    theta = O.trainable(prob.model)
    loss, g = O.loss_grad(prob, theta)
    assert loss == 0.0 and all(float(t.abs().max()) == 0.0 for t in g.values())
    step = {k: v + 1e-3 * torch.randn_like(v) for k, v in theta.items()}
    loss, g = O.loss_grad(prob, step)

    def mse(p):
        out = torch.func.functional_call(prob.model, p, (X,))
        return ((out - y) ** 2).mean()

    ref_g = torch.func.grad(mse)(step)
    assert 0 < float(mse(step)) < 1e-4 and loss == pytest.approx(float(mse(step)), rel=1e-10)
    assert O.loss_at(prob, step) == pytest.approx(float(mse(step)), rel=1e-10)
    for k in ref_g:
        torch.testing.assert_close(g[k], ref_g[k], rtol=1e-9, atol=1e-14)
