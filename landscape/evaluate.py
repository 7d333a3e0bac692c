"""Loss and accuracy at points of weight space.

The per-point path writes θ + Σᵢ cᵢ·dᵢ into the model's own tensors with fused foreach kernels
(no model or DataLoader rebuilt per point), runs the preloaded batches under ``inference_mode``,
accumulates the summed loss and the correct count on the device, and synchronises once per point.

Example:
    >>> from landscape.problem import make_problem
    >>> from landscape.directions import make_random_directions
    >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=64, device="cpu")
    >>> ev = PointEvaluator(p, make_random_directions(p.model, 2, seed=0))
    >>> out = ev(np.array([[0.0, 0.0], [0.5, -0.5]]))
    >>> sorted(out), out["train_loss"].shape
    (['train_acc', 'train_loss'], (2,))
"""

from __future__ import annotations

import numpy as np
import torch

from . import params as P
from .directions import Directions
from .problem import Batch, Problem


def evaluate_batches(problem: Problem, batches: list[Batch], model=None) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` (default: the problem's) over ``batches``."""
    model = problem.model if model is None else model
    dev = problem.device
    total = torch.zeros((), dtype=torch.float64, device=dev)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    n = 0
    with torch.inference_mode():
        for x, y in batches:
            out = model(x)
            total += problem.loss_sum(out, y).double()
            if problem.classification:
                correct += problem.correct(out, y)
            n += len(x)
    values = torch.stack([total, correct.double()]).cpu()  # one host sync per point
    loss = float(values[0]) / n
    acc = float(values[1]) / n if problem.classification else float("nan")
    return loss, acc


class PointEvaluator:
    """Evaluates ``{split}_loss`` and ``{split}_acc`` at points given by their coordinates.

    ``__call__(coords)`` takes a ``(K, ndim)`` array and returns ``{name: (K,) array}``. The model
    is left at the centre afterwards.
    """

    def __init__(self, problem: Problem, directions: Directions, splits: list[str] | None = None):
        self.problem = problem
        self.directions = directions
        self.splits = list(splits or problem.splits)
        self.targets = P.select(problem.model, directions.dir_type)
        missing = [k for k in directions.center if k not in self.targets]
        if missing:
            from .errors import LandscapeError

            raise LandscapeError(f"the directions name tensors the model does not have: {', '.join(missing[:3])}")

    @property
    def names(self) -> list[str]:
        return [f"{s}_{m}" for s in self.splits for m in ("loss", "acc")]

    def move_to(self, coeffs) -> None:
        P.combine(self.directions.center, self.directions.vectors, [float(c) for c in coeffs], out=self.targets)

    def restore(self) -> None:
        P.assign_(self.targets, self.directions.center)

    def __call__(self, coords: np.ndarray) -> dict[str, np.ndarray]:
        coords = np.atleast_2d(np.asarray(coords, dtype=np.float64))
        out = {name: np.empty(len(coords)) for name in self.names}
        try:
            for i, c in enumerate(coords):
                self.move_to(c)
                for s in self.splits:
                    loss, acc = evaluate_batches(self.problem, self.problem.splits[s])
                    out[f"{s}_loss"][i] = loss
                    out[f"{s}_acc"][i] = acc
        finally:
            self.restore()
        return out
