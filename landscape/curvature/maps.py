"""Curvature at every grid point (``landscape surface --curvature-map``).

At each point θ + Σ cᵢdᵢ the extreme Hessian eigenvalues λmax and λmin are found by Lanczos and
stored beside the loss as ``train_lambda_max``, ``train_lambda_min`` and the convexity ratio
``train_convexity`` = |λmin/λmax| that Li et al. (2018, Fig. 7) map to show where a surface is
convex (ratio ≈ 0) and where it has strong negative curvature. Points are scheduled like any other
surface point, so the map is shared out among MPI ranks.
"""

from __future__ import annotations

import numpy as np

from ..directions._base import Directions
from ..evaluate import PointEvaluator
from ..evaluate._base import _Evaluator
from .lanczos import hessian_eigenpairs

#: what a curvature map adds to the loss and accuracy of each point
MAP_NAMES = ("train_lambda_max", "train_lambda_min", "train_convexity")


class CurvatureMapEvaluator(_Evaluator):
    """Loss/accuracy plus λmax, λmin and |λmin/λmax| at each point (the :class:`~landscape.evaluate.Evaluator`
    protocol, on a :class:`~landscape.evaluate.PointEvaluator` whose ``move_to`` places the model)."""

    def __init__(self, problem, directions: Directions, evaluator=None, seed: int = 0, tol: float = 1e-3,
                 max_iter: int = 40):
        self.problem = problem
        self.base = evaluator if isinstance(evaluator, PointEvaluator) else PointEvaluator(problem, directions)
        self.seed, self.tol, self.max_iter = seed, tol, max_iter

    @property
    def names(self) -> list[str]:
        return [*self.base.names, *MAP_NAMES]

    def prepare(self, groups: list) -> list:
        return self.base.prepare(groups)

    def __call__(self, coords: np.ndarray) -> dict[str, np.ndarray]:
        coords = np.atleast_2d(np.asarray(coords, dtype=np.float64))
        out = self.base(coords)
        lmax, lmin = np.empty(len(coords)), np.empty(len(coords))
        try:
            for i, c in enumerate(coords):
                self.base.move_to(c)
                eig = hessian_eigenpairs(self.problem, k=1, which="both", tol=self.tol, max_iter=self.max_iter,
                                         seed=self.seed, return_vectors=False)
                lmax[i] = float(eig.eigenvalues[0])
                lmin[i] = float(eig.smallest)
        finally:
            self.base.restore()
        out["train_lambda_max"] = lmax
        out["train_lambda_min"] = lmin
        with np.errstate(divide="ignore", invalid="ignore"):
            out["train_convexity"] = np.abs(lmin / lmax)
        return out
