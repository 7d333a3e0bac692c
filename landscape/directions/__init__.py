"""Directions in weight space: one module per kind behind one registry.

Every kind is a function ``build(problem, spec, ndim) -> Directions`` (the same arguments in the same order
for every kind): ``problem`` the model and data, ``spec`` the request (:class:`DirectionSpec`; a
:class:`~landscape.surface.SurfaceSpec` is one), ``ndim`` how many directions (grid axes). The kinds:

========  =====================================================================  ===========================
kind      directions                                                            module
========  =====================================================================  ===========================
random    seeded Gaussian, filter-normalized (Li et al. 2018)                   :mod:`.random`
interp    x = θ₁ − θ₀ between two checkpoints, y/z random and orthogonal        :mod:`.interp`
plane     the plane through three checkpoints A, B, C (``spec.plane``)          :mod:`.plane`
pca       leading principal components of a training trajectory                :mod:`.pca`
hessian   top Hessian eigenvectors                                               :mod:`.hessian`
file      those stored in a result file (``spec.directions`` is ``FILE.h5``)    :mod:`.file`
========  =====================================================================  ===========================

A new kind is one module with a ``build`` function and one line, ``register_direction("mykind", build)``;
``landscape surface --directions mykind`` and ``SurfaceSpec(directions="mykind")`` then use it.

Example:
    >>> import torch
    >>> from landscape import params as P
    >>> from landscape.problem import make_problem
    >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=16, device="cpu")
    >>> def ones(problem, spec, ndim):  # every weight moves by 1 per unit of x
    ...     theta = P.clone(P.select(problem.model, spec.dir_type))
    ...     return Directions(theta, [{k: torch.ones_like(v) for k, v in theta.items()}] * ndim, spec.dir_type,
    ...                       [dict(kind="ones")] * ndim)
    >>> register_direction("ones", ones)
    >>> from landscape.surface import SurfaceSpec
    >>> build_directions(p, SurfaceSpec(directions="ones"), 1).meta[0]["kind"]
    'ones'
    >>> del DIRECTION_KINDS["ones"]
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import LandscapeError
from ..problem import Problem
from . import file, hessian, interp, pca, plane, random  # noqa: I001 - the kinds, after the base they build on
from ._base import (
    IGNORES,
    NORMS,
    Directions,
    DirectionSpec,
    axis_names,
    normalize_direction,
    orthogonalize,
    random_direction,
    target_direction,
)
from .random import make_random_directions

#: ``build(problem, spec, ndim) -> Directions``
Builder = Callable[[Problem, DirectionSpec, int], Directions]

#: the registered kinds, ``{kind: build}``
DIRECTION_KINDS: dict[str, Builder] = {
    "random": random.build,
    "hessian": hessian.build,
    "interp": interp.build,
    "pca": pca.build,
    "plane": plane.build,
    "file": file.build,
}

#: kinds whose directions are rebuilt when a surface is resumed instead of read back from its file: they are
#: centred on other weights than the model's (θ₀, A, the final checkpoint) and cheap to rebuild exactly
REBUILT_ON_RESUME: set[str] = {"interp", "plane", "pca"}


def register_direction(kind: str, build: Builder, *, rebuild_on_resume: bool = False) -> None:
    """Make ``kind`` a direction kind: ``build(problem, spec, ndim) -> Directions`` (replaces a kind of that
    name; ``plane`` and ``file`` are chosen by ``spec.plane`` and by a file name, not by ``spec.directions``).
    ``rebuild_on_resume``: a resumed surface calls ``build`` again instead of reading the file's directions."""
    if not kind or not isinstance(kind, str) or kind.endswith(file.SUFFIXES):
        raise LandscapeError(f"`kind` {kind!r}: give a non-empty name that is not a file name")
    if not callable(build):
        raise LandscapeError(f"`build` for kind {kind!r} is not callable: give build(problem, spec, ndim)")
    DIRECTION_KINDS[kind] = build
    if rebuild_on_resume:
        REBUILT_ON_RESUME.add(kind)
    else:
        REBUILT_ON_RESUME.discard(kind)


def direction_kind(spec: DirectionSpec) -> str:
    """The registered kind ``spec`` asks for: ``plane`` when it names three models, ``file`` for a
    ``FILE.h5``, else ``spec.directions``."""
    if spec.plane:
        return "plane"
    if str(spec.directions).endswith(file.SUFFIXES):
        return "file"
    return spec.directions


def build_directions(problem: Problem, spec: DirectionSpec, ndim: int) -> Directions:
    """Make (or load) the ``ndim`` directions ``spec`` asks for with its kind's builder. Runs on rank 0 only."""
    kind = direction_kind(spec)
    build = DIRECTION_KINDS.get(kind)
    if build is None:
        kinds = ", ".join(k for k in DIRECTION_KINDS if k not in ("plane", "file"))
        raise LandscapeError(f"`directions`: {kind!r} is not {kinds} or a FILE.h5")
    return build(problem, spec, ndim)


__all__ = [
    "DIRECTION_KINDS", "IGNORES", "NORMS", "REBUILT_ON_RESUME", "Builder", "DirectionSpec", "Directions", "axis_names",
    "build_directions", "direction_kind", "make_random_directions", "normalize_direction", "orthogonalize",
    "random_direction", "register_direction", "target_direction",
]
