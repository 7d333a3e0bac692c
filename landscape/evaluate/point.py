"""The per-point path: one grid point per forward pass, the weights written into the model's own tensors.

θ + Σᵢ cᵢ·dᵢ is written into the model's own tensors with fused foreach kernels (no model or DataLoader
rebuilt per point), the preloaded device batches are run under ``inference_mode``, the summed loss (float64)
and the correct count (int64) are accumulated on the device, and the host reads them once per call (not per
batch, not per point). With the input-layer fold (:mod:`landscape.evaluate.fold`) only the coefficients of
the first layer change per point.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..directions._base import Directions
from ..problem import Problem
from ._base import _Evaluator, direction_targets, split_names
from .device import _MaybeCompiled, autocast, device_batches, for_precision, has_conv, release_heap
from .fold import InputFold, input_fold
from .groups import Group, accumulate, loss_and_correct_of, make_groups, split_results


class PointEvaluator(_Evaluator):
    """Evaluates ``{split}_loss`` and ``{split}_acc`` at points given by their coordinates.

    ``__call__(coords)`` takes a ``(K, ndim)`` array and returns ``{name: (K,) array}``. The model
    is left at the centre afterwards. ``move_to``/``restore`` write a point's weights into the
    model and put the centre back (used by the curvature maps).
    """

    def __init__(self, problem: Problem, directions: Directions, splits: list[str] | None = None, *,
                 precision: str = "fp32", compile: bool = False, fold: bool = True):
        autocast(problem.device, precision)  # validates
        problem, directions = for_precision(problem, directions, precision)
        self.problem = problem
        self.directions = directions
        self.splits = list(splits or problem.splits)
        self.precision = precision
        self.channels_last = problem.device.type == "cuda" and has_conv(problem.model)
        if self.channels_last:
            problem.model.to(memory_format=torch.channels_last)
        self.targets = direction_targets(problem.model, directions)
        self._keys = list(directions.center)
        self._center = [directions.center[k] for k in self._keys]
        self._dirs = [[v[k] for k in self._keys] for v in directions.vectors]
        self._out = [self.targets[k] for k in self._keys]
        self.batches = device_batches(problem, self.splits, self.channels_last)
        self.groups = {s: make_groups(problem, b) for s, b in self.batches.items()}
        self.fold = input_fold(problem.model, directions, [b for bs in self.batches.values() for b in bs],
                               precision) if fold else None
        self._loss_fn = loss_and_correct_of(problem)
        # tensors some direction moves (per point only these are rewritten; the rest stay at the centre), less
        # the first layer's with the fold (its output comes from the fold's cache)
        folded = set(self.fold.names) if self.fold is not None else set()
        mv = [i for i, k in enumerate(self._keys)
              if k not in folded and any(bool(torch.any(v[k] != 0)) for v in directions.vectors)]
        self._mv_center = [self._center[i] for i in mv]
        self._mv_dirs = [[d[i] for i in mv] for d in self._dirs]
        self._mv_out = [self._out[i] for i in mv]
        if self.fold is not None:
            self.groups = {s: self.fold.prepare(g) for s, g in self.groups.items()}
            # the points' coefficients [1, c] in the dtype of the fold's cache (float32, or float64 for float64 models)
            self._coeffs = torch.zeros((1, directions.ndim + 1), dtype=self.fold.dtype, device=problem.device)
            self._coeffs[0, 0] = 1.0
            self._coeffs_host = self._coeffs.numpy()[0] if self._coeffs.device.type == "cpu" else None
            body = _MaybeCompiled(self.fold.body, compile, "per-point forward")
            self.forward = lambda z: body(InputFold.combine(z, self._coeffs)[0])  # (both in the fold's dtype)
        else:
            self.forward = _MaybeCompiled(problem.model, compile, "per-point forward")

    @property
    def names(self) -> list[str]:
        return split_names(self.splits)

    def prepare(self, groups: list[Group]) -> list[Group]:
        """Groups of raw batches as ``self.forward`` takes them (first-layer outputs with the fold)."""
        return groups if self.fold is None else self.fold.prepare(groups)

    def accumulate(self, groups: list[Group]) -> tuple[Tensor, Tensor, int]:
        """Summed loss, correct count (both on the device) and sample count of the model as it stands over
        prepared ``groups`` (what the auto-K probe times)."""
        return accumulate(self.problem, groups, self.forward, self.precision, self._loss_fn)

    def move_to(self, coeffs) -> None:
        """Write θ + Σ coeffs[i]·dᵢ into the model (one foreach copy + one foreach add per direction)."""
        with torch.no_grad():
            torch._foreach_copy_(self._out, self._center)
            for d, a in zip(self._dirs, coeffs):
                if float(a) != 0.0:
                    torch._foreach_add_(self._out, d, alpha=float(a))
        self._set_coeffs(coeffs)

    def _set_coeffs(self, coeffs) -> None:
        if self.fold is None:
            return
        if self._coeffs_host is not None:  # a CPU tensor: write through its numpy view (no kernel launch)
            self._coeffs_host[1:] = coeffs
        else:
            self._coeffs.copy_(torch.as_tensor([[1.0, *(float(a) for a in coeffs)]]))

    def restore(self) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self._out, self._center)
        self._set_coeffs([0.0] * self.directions.ndim)

    def __call__(self, coords: np.ndarray) -> dict[str, np.ndarray]:
        coords = np.atleast_2d(np.asarray(coords, dtype=np.float64))
        counts: list[int] = []
        losses: list[Tensor] = []  # 0-d device tensors, stacked once at the end (no per-point writes)
        corrects: list[Tensor] = []
        groups = [self.groups[s] for s in self.splits]
        try:
            self.restore()
            with torch.no_grad():
                for c in coords.tolist():
                    self._set_coeffs(c)
                    if self._mv_out:  # (nothing to move if every direction is zero)
                        torch._foreach_copy_(self._mv_out, self._mv_center)
                        for d, a in zip(self._mv_dirs, c):
                            if a != 0.0:
                                torch._foreach_add_(self._mv_out, d, alpha=a)
                    counts = []
                    for g in groups:
                        t, k, n = accumulate(self.problem, g, self.forward, self.precision, self._loss_fn)
                        losses.append(t)
                        corrects.append(k)
                        counts.append(n)
        finally:
            self.restore()
            release_heap(self.problem.device)
        shape = (len(coords), len(self.splits))
        return split_results(self.splits, torch.stack(losses).view(shape), torch.stack(corrects).view(shape), counts,
                        self.problem.classification)
