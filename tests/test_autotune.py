"""Start-up choices: the evaluation batch from memory, and the auto-K probe bounded by what it can save."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape import autotune
from landscape.directions import make_random_directions
from landscape.evaluate import BatchedEvaluator, PointEvaluator, make_evaluator
from landscape.problem import make_problem

pytestmark = pytest.mark.usefixtures("one_thread")


def test_auto_batch_size_takes_all_of_a_small_set_and_splits_a_large_one_evenly(monkeypatch):
    p = make_problem("zoo:mlp", data="zoo:digits", device="cpu")
    assert [len(x) for x, _ in p.batches] == [1797] and p.info["batch_size"] == 1797
    x = p.batches[0][0]
    from landscape.evaluate import module_output_bytes

    a = module_output_bytes(p.model, x[:2])
    monkeypatch.setitem(autotune.AUTO_BATCH_BYTES, "cpu", a * 500)  # room for 500 samples per batch
    b = autotune.auto_batch_size(p.model, x, 1797, torch.device("cpu"))
    assert b == 450  # ⌈1797 / ⌈1797/500⌉⌉: four equal batches, not 500+500+500+297
    assert autotune.auto_batch_size(p.model, x, 1797, torch.device("cpu"), shards=7) == 257  # a batch per rank
    assert autotune.auto_batch_size(p.model, x, 3, torch.device("cpu"), shards=7) == 1


def test_default_batches_give_the_same_surface_to_float_rounding():
    auto = make_problem("zoo:mlp", data="zoo:digits", samples=300, device="cpu", test_data="zoo:digits:test")
    fixed = make_problem("zoo:mlp", data="zoo:digits", samples=300, batch_size=64, device="cpu",
                         test_data="zoo:digits:test")
    assert len(auto.batches) == 1 and len(fixed.batches) == 5
    d = make_random_directions(auto.model, 2, seed=0)
    coords = np.array([[0.0, 0.0], [0.7, -0.3], [-1.0, 1.0]])
    for k in (1, 4):
        a = make_evaluator(auto, d, k)(coords)
        b = make_evaluator(fixed, d, k)(coords)
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=2e-6, err_msg=name)


def test_probe_skipped_when_it_cannot_pay(monkeypatch):
    p = make_problem("zoo:mlp", data="zoo:digits", samples=512, device="cpu")
    d = make_random_directions(p.model, 2, seed=0)
    calls = []
    real = autotune.probe_budget

    def spy(*a, **k):
        out = real(*a, **k)
        calls.append(out)
        return out

    monkeypatch.setattr(autotune, "probe_budget", spy)
    # a grid of 4 points: timing K = 4 (about 16 points) is more than 5 % of its run whatever a point costs, so
    # nothing is measured and no batched evaluator is even built
    def refuse(self, *a, **k):
        raise AssertionError("no batched evaluator for a run the probe cannot pay for")

    monkeypatch.setattr(BatchedEvaluator, "__init__", refuse)
    assert isinstance(make_evaluator(p, d, "auto", n_points=4), PointEvaluator) and not calls
    # overhead under PROBE_MIN_GAIN: budget 0 whatever the grid
    monkeypatch.setattr(autotune, "PROBE_MIN_GAIN", 1.01)
    assert isinstance(make_evaluator(p, d, "auto", n_points=10 ** 9), PointEvaluator)
    assert calls[-1][0] == 0.0


def test_probe_runs_for_a_large_grid_of_a_small_model():
    p = make_problem("zoo:mlp", data="zoo:digits", samples=512, device="cpu")
    per_point = PointEvaluator(p, make_random_directions(p.model, 2, seed=0))
    from landscape.evaluate import make_groups
    from landscape.evaluate.choose import _probe_rows

    probe = per_point.prepare(make_groups(p, _probe_rows(per_point)))
    budget, t1, share = autotune.probe_budget(per_point, 10 ** 6, probe)
    assert share >= autotune.PROBE_MIN_GAIN  # a small MLP: its fixed cost per point is large
    assert budget == autotune.PROBE_BUDGET_S  # 2 % of a million points is more than the cap
    budget, _, _ = autotune.probe_budget(per_point, 100, probe)
    assert 0 < budget <= autotune.PROBE_SHARE * 100 * 1.0  # 2 % of the run: well under a second here
    # the model is back at the centre
    out = per_point(np.zeros((1, 2)))
    assert np.isfinite(out["train_loss"]).all()
