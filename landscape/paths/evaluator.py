"""Evaluating a path: loss and accuracy at θ_α, with BatchNorm statistics re-estimated at every α.

**Linear interpolation** (Goodfellow et al. 2015; Lucas et al., ICML 2021)::

    θ_α = (1 − α)·θ₀ + α·θ₁ = θ₀ + α·(θ₁ − θ₀),   α on a grid, usually over [0, 1] or [−0.5, 1.5].

Every floating tensor of the ``state_dict`` is interpolated (parameters and buffers). With
BatchNorm the interpolated running statistics mean nothing, so by default they are
*re-estimated* at every α (:func:`reestimate_bn`): reset, momentum ``None`` (a cumulative
average), one pass over the training batches with the BatchNorm layers in train mode under
``no_grad``, back to eval. After it, for every BatchNorm layer::

    running_mean = (1/B) Σ_b mean_b(h),   running_var = (1/B) Σ_b var_b(h) (unbiased, n_b − 1)

over the B training batches, h being the layer's input under θ_α. Only the BatchNorm layers
are switched to train mode, so dropout stays off while the statistics are measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .. import params as P
from ..errors import LandscapeError
from ..evaluate import evaluate_batches
from ..params import Named
from ..problem import Problem
from ..states import batchnorm_layers, endpoint_states, has_batchnorm


def reestimate_bn(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Replace every BatchNorm layer's running statistics by those of the current weights.

    Reset, ``momentum=None`` (cumulative average over the batches), forward every batch with the
    BatchNorm layers in train mode under ``no_grad``, then restore momentum and mode. Batches of a
    single example are skipped (train-mode BatchNorm cannot normalize them). Returns the number of
    layers re-estimated.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    saved = [(m, m.momentum, m.training) for m in layers]
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            used = 0
            for x, _ in batches:
                if len(x) > 1:
                    model(x)
                    used += 1
        if not used:
            raise LandscapeError("BatchNorm re-estimation needs batches of at least 2 examples "
                                 "(raise `batch_size` or `samples`, or turn off `bn_reestimate`)")
    finally:
        for m, momentum, training in saved:
            m.momentum = momentum
            m.train(training)
    return len(layers)


class PathEvaluator:
    """``compute(indices) -> {split_loss, split_acc}`` at ``alphas[indices]`` (for ``run_points``).

    Writes θ_α = θ₀ + α·(θ₁ − θ₀) into every floating tensor of the model's state with fused
    foreach ops, re-estimates BatchNorm statistics on the training batches when asked, evaluates
    each split in eval mode, and puts θ₀ back afterwards.
    """

    def __init__(self, problem: Problem, theta0: Named, theta1: Named, alphas: np.ndarray,
                 bn_reestimate: bool = False, splits: list[str] | None = None):
        self.problem = problem
        self.alphas = np.asarray(alphas, dtype=np.float64)
        self.bn_reestimate = bool(bn_reestimate)
        self.splits = list(splits or problem.splits)
        target = P.states(problem.model)
        self._keys = list(target)
        self._out = [target[k] for k in self._keys]
        self._theta0 = [theta0[k].to(device=target[k].device, dtype=target[k].dtype) for k in self._keys]
        self._delta = torch._foreach_sub([theta1[k].to(device=target[k].device, dtype=target[k].dtype)
                                          for k in self._keys], self._theta0)

    @property
    def names(self) -> list[str]:
        return [f"{s}_{m}" for s in self.splits for m in ("loss", "acc")]

    def move_to(self, alpha: float) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self._out, self._theta0)
            if alpha != 0.0:
                torch._foreach_add_(self._out, self._delta, alpha=float(alpha))
        if self.bn_reestimate:
            reestimate_bn(self.problem.model, self.problem.batches)

    def restore(self) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self._out, self._theta0)

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        indices = np.atleast_1d(np.asarray(indices, dtype=np.int64))
        out = {n: np.empty(len(indices)) for n in self.names}
        self.problem.model.eval()
        try:
            for i, idx in enumerate(indices):
                self.move_to(float(self.alphas[idx]))
                for s in self.splits:
                    loss, acc = evaluate_batches(self.problem, self.problem.splits[s])
                    out[f"{s}_loss"][i] = loss
                    out[f"{s}_acc"][i] = acc
        finally:
            self.restore()
        return out


def evaluate_path(problem: Problem, theta0: str | Named, theta1: str | Named, alphas, *,
                  bn_reestimate: bool | None = None) -> dict[str, np.ndarray]:
    """Loss and accuracy of every split along θ_α, in memory (no file, one process).

    ``bn_reestimate=None`` re-estimates exactly when the model has BatchNorm. The model is left at θ₀.
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    t0 = endpoint_states(problem.model, theta0, "`from_ckpt`")
    t1 = endpoint_states(problem.model, theta1, "`to_ckpt`")
    bn = has_batchnorm(problem.model) if bn_reestimate is None else bool(bn_reestimate)
    ev = PathEvaluator(problem, t0, t1, alphas, bn)
    res = ev(np.arange(len(alphas)))
    return {"alpha": alphas, **res}
