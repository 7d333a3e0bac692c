"""Random directions (``directions="random"``, the default): seeded Gaussian directions, filter-normalized
by default (Li et al. 2018; :func:`normalize_direction`), optionally Gram–Schmidt'ed against the earlier ones.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    >>> dirs = make_random_directions(net, ndim=2, seed=0)
    >>> w, d = net[0].weight, dirs.vectors[0]["0.weight"]
    >>> torch.allclose(d.norm(dim=1), w.norm(dim=1)), float(dirs.vectors[0]["0.bias"].abs().sum())
    (True, 0.0)
"""

from __future__ import annotations

import torch
from torch import nn

from .. import params as P
from ..errors import LandscapeError
from ..params import Named
from ..problem import Problem
from ._base import Directions, DirectionSpec, normalize_direction, orthogonalize, random_direction


def make_random_directions(
    model: nn.Module,
    ndim: int,
    seed: int = 0,
    norm: str = "filter",
    ignore: str = "biasbn",
    dir_type: str = "weights",
    orthogonal: bool = False,
) -> Directions:
    """``ndim`` filter-normalized (by default) Gaussian directions around the model's weights.

    One generator seeded with ``seed`` draws the directions in axis order, so the same seed gives
    bitwise-identical directions for any ``ndim`` prefix and any number of ranks.
    """
    if dir_type not in P.DIR_TYPES:
        raise LandscapeError(f"`dir_type`: {dir_type!r} is not one of {', '.join(P.DIR_TYPES)}")
    theta = P.clone(P.select(model, dir_type))
    gen = torch.Generator().manual_seed(int(seed))
    vectors: list[Named] = []
    for _ in range(ndim):
        d = normalize_direction(random_direction(theta, gen), theta, norm, ignore)
        if orthogonal and vectors:
            orthogonalize(d, vectors)
        vectors.append(d)
    meta = [dict(kind="random", norm=norm, ignore=ignore, dir_type=dir_type, seed=int(seed),
                 orthogonalized=bool(orthogonal and i > 0), scale=P.norm(v)) for i, v in enumerate(vectors)]
    return Directions(theta, vectors, dir_type, meta)


def build(problem: Problem, spec: DirectionSpec, ndim: int) -> Directions:
    """``ndim`` random directions around the problem's weights, as ``spec`` (seed, norm, ignore, dir_type,
    orthogonalize) asks."""
    return make_random_directions(problem.model, ndim, seed=spec.seed, norm=spec.norm, ignore=spec.ignore,
                                  dir_type=spec.dir_type, orthogonal=spec.orthogonalize)
