"""One place that turns what a caller has (a Problem and an operator's name, an operator, a matrix) into a
curvature operator.

Example:
    >>> import torch
    >>> op = as_operator(torch.eye(3))
    >>> type(op).__name__, op.dim
    ('MatrixOperator', 3)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from ..errors import LandscapeError
from ._base import MatrixOperator, _LinearOperator, is_operator
from .fisher import OPERATORS, EmpiricalFisherOperator
from .hvp import GGNOperator, HessianOperator, _ProblemOperator

_CLASSES = {"hessian": HessianOperator, "ggn": GGNOperator, "fisher": EmpiricalFisherOperator}


def make_operator(problem, operator: str = "hessian", **kwargs) -> _ProblemOperator:
    """The curvature operator named ``operator`` (``hessian``, ``ggn`` or ``fisher``) of a Problem's mean loss.

    ``kwargs`` go to the operator (``params``, ``cache``, ``batches``, ``world``).
    """
    if operator not in _CLASSES:
        raise LandscapeError(f"`operator`: {operator!r} is not one of {', '.join(OPERATORS)}")
    return _CLASSES[operator](problem, **kwargs)


def as_operator(obj: Any, curvature: str = "hessian") -> _LinearOperator:
    """A Problem → its :class:`~landscape.curvature.hvp.HessianOperator` (or GGN, or empirical Fisher, by
    ``curvature``); an operator → itself; a square matrix (tensor/array) → :class:`MatrixOperator`."""
    if is_operator(obj):
        return obj
    if isinstance(obj, Tensor | np.ndarray):
        return MatrixOperator(obj)
    if hasattr(obj, "model") and hasattr(obj, "batches"):
        if curvature not in _CLASSES:
            raise LandscapeError(f"curvature must be 'hessian', 'ggn' or 'fisher', got {curvature!r}")
        return _CLASSES[curvature](obj)
    raise TypeError(f"expected a Problem, an operator (with matvec_flat and dim) or a matrix, got {type(obj).__name__}")
