"""The one evaluator protocol: what a surface, path or curvature-map run asks of an evaluator.

An evaluator turns a ``(K, ndim)`` array of coordinates into ``{metric: (K,) values}``: ``names`` lists the
metrics it returns (``train_loss``, ``train_acc``, ``test_loss`` ...), ``prepare`` turns groups of raw
batches into what its forward pass takes, and ``release`` frees what a call built (stacked weights, cached
layouts), once the run no longer needs it. :class:`~landscape.evaluate.PointEvaluator`,
:class:`~landscape.evaluate.BatchedEvaluator` (also when it runs a
:class:`~landscape.evaluate.chain.LinearChain`) and
:class:`~landscape.curvature.maps.CurvatureMapEvaluator` derive from :class:`_Evaluator`, which supplies
``prepare`` and ``release`` for evaluators that need neither.

Example:
    >>> import numpy as np
    >>> class Zero(_Evaluator):
    ...     names = ["train_loss"]
    ...     def __call__(self, coords):
    ...         return {"train_loss": np.zeros(len(np.atleast_2d(coords)))}
    >>> ev = Zero()
    >>> isinstance(ev, Evaluator), ev(np.zeros((3, 2)))["train_loss"].shape, ev.prepare([]) == []
    (True, (3,), True)
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from torch import nn

from .. import params as P
from ..directions._base import Directions
from ..errors import LandscapeError


@runtime_checkable
class Evaluator(Protocol):
    """``names``, ``prepare(groups)``, ``__call__(coords) -> {name: values}`` and ``release()``."""

    @property
    def names(self) -> list[str]: ...

    def prepare(self, groups: list) -> list: ...

    def __call__(self, coords: np.ndarray) -> dict[str, np.ndarray]: ...

    def release(self) -> None: ...


class _Evaluator:
    """Base of the evaluators: ``prepare`` passes groups through, ``release`` holds nothing."""

    names: list[str]

    def prepare(self, groups: list) -> list:
        """Groups of raw batches as this evaluator's forward pass takes them (here: unchanged)."""
        return groups

    def __call__(self, coords: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def release(self) -> None:
        """Free what a call built (here: nothing)."""


def split_names(splits: list[str]) -> list[str]:
    """``{split}_loss`` and ``{split}_acc`` for each split, in order."""
    return [f"{s}_{m}" for s in splits for m in ("loss", "acc")]


def direction_targets(model: nn.Module, directions: Directions) -> dict:
    """The model's tensors the directions move (``params.select`` by ``dir_type``); a one-line error when the
    directions name tensors the model does not have."""
    own = P.select(model, directions.dir_type)
    missing = [k for k in directions.center if k not in own]
    if missing:
        raise LandscapeError(f"the directions name tensors the model does not have: {', '.join(missing[:3])}")
    return own
