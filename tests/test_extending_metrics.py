"""A new sharpness metric is one module plus one registry line: a toy ``grad_norm`` (‖∇L(θ)‖, times a toy
``grad_scale`` option) registered here runs through the library and through ``landscape sharpness``, whose
--help gains its flag. Checked against a dense float64 ``torch.func`` gradient."""

from __future__ import annotations

import h5py
import pytest
import torch

from landscape import params as P
from landscape import sharpness as S
from landscape.objective import loss_grad, trainable
from landscape.problem import make_problem
from landscape.sharpness import Family, Metric, Option
from tests.curvature_models import dense_loss_acc_grad


# ---------------------------------------------------------------- the toy metric module (as in the README)
def grad_norm(problem, *, scale: float = 1.0, world=None) -> Metric:
    """scale·‖∇L(θ)‖ over the problem's batches."""
    _, g = loss_grad(problem, trainable(problem.model), world=world)
    return Metric("grad_norm", scale * P.norm(g), {"scale": scale})


def _compute(problem, names, options, world, say):
    say("gradient norm")
    return {"grad_norm": grad_norm(problem, scale=options["grad_scale"], world=world)}


FAMILY = Family("grad", ("grad_norm",), _compute,
                (Option("grad_scale", 1.0, "float+", "multiply the gradient norm by this (a toy option)"),))


@pytest.fixture
def registered():
    S.register_metric(FAMILY)  # the registry line
    yield
    S.unregister_metric("grad")


def _problem():
    return make_problem("zoo:mlp", data="zoo:synthetic", samples=48, batch_size=20, device="cpu",
                        model_args={"width": 4, "depth": 1})


def _dense_grad_norm(problem) -> float:
    """‖∇L‖ in float64 by torch.func.grad of the whole mean loss (all batches at once)."""
    g = dense_loss_acc_grad(problem)[2]
    return float(torch.sqrt(sum((t ** 2).sum() for t in g.values())))


def test_toy_metric_through_the_library(registered):
    prob = _problem()
    assert "grad_norm" in S.ALL_METRICS and S.parse_metrics("grad") == ["grad_norm"]
    ref = _dense_grad_norm(prob)
    assert ref > 1e-3  # random weights: a gradient worth measuring
    out = S.compute_metrics(prob, "grad_norm", grad_scale=2.0)
    assert list(out) == ["grad_norm"]
    assert out["grad_norm"].value == pytest.approx(2.0 * ref, rel=1e-5)
    assert S.compute_metrics(prob, "grad")["grad_norm"].value == pytest.approx(ref, rel=1e-5)  # the default 1.0


def test_toy_metric_through_the_command(registered, run_cli, tmp_path):
    code, out, _ = run_cli("sharpness", "--help")
    assert code == 0 and "--grad-scale" in out and "grad_norm" in out
    path = tmp_path / "s.h5"
    code, out, err = run_cli("sharpness", "--model", "zoo:mlp", "--model-args", "width=4,depth=1", "--data",
                             "zoo:synthetic", "--samples", "48", "--batch-size", "20", "--device", "cpu",
                             "--metrics", "grad_norm", "--grad-scale", "3", "--out", str(path))
    assert code == 0, err
    assert "grad_norm" in out
    ref = _dense_grad_norm(_problem())  # the command builds the same seeded problem
    with h5py.File(path) as f:
        assert float(f["metrics/grad_norm"][()]) == pytest.approx(3.0 * ref, rel=1e-5)
        assert float(f["metrics/grad_norm"].attrs["scale"]) == 3.0
    code, _, err = run_cli("sharpness", "--model", "zoo:mlp", "--data", "zoo:synthetic", "--metrics", "grad_norm",
                           "--grad-scale", "-1", "--out", str(tmp_path / "t.h5"))
    assert code == 2 and "--grad-scale" in err  # the generated flag checks its value like every other


def test_unregistered_metric_is_unknown(run_cli):
    assert "grad_norm" not in S.ALL_METRICS
    with pytest.raises(S.LandscapeError, match="unknown metric 'grad_norm'"):
        S.parse_metrics("grad_norm")
