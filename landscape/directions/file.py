"""Directions reused from a result file (``directions="FILE.h5"``): the ``/directions`` group of an earlier
surface (landscape's or Li et al.'s), checked against the model's tensors (:func:`landscape.store.read_directions`).
"""

from __future__ import annotations

from .. import params as P
from .. import store
from ..problem import Problem
from ._base import Directions, DirectionSpec

#: the file names that select this kind
SUFFIXES = (".h5", ".hdf5")


def load_directions(path: str, model_tensors: P.Named, ndim: int | None = None) -> Directions:
    """The directions stored in ``path`` (:func:`landscape.store.read_directions`), centred on ``model_tensors``."""
    return Directions(*store.read_directions(path, model_tensors, ndim))


def build(problem: Problem, spec: DirectionSpec, ndim: int) -> Directions:
    """The first ``ndim`` directions stored in the file ``spec.directions``, centred on its stored centre."""
    return load_directions(spec.directions, P.clone(P.select(problem.model, spec.dir_type)), ndim)
