"""The interpolation plane (``directions="interp"``, docs/directions.md, docs/paths.md).

**Planes for surfaces**. ``--directions interp``: centre θ₀, x direction d₁ = θ₁ − θ₀ (x = 0 is
θ₀, x = 1 is θ₁, the path is the x axis), y (and z) a seeded random direction normalized like
``--norm``/``--ignore``, Gram–Schmidt'ed against the earlier ones and rescaled to ‖d₁‖.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from .. import parallel
from .. import params as P
from ..errors import LandscapeError
from ..params import Named
from ..problem import Problem
from ..states import endpoint_states, has_batchnorm
from ._base import Directions, DirectionSpec, normalize_direction, orthogonalize, random_direction


def _random_like(theta: Named, seed: int, norm: str, ignore: str, against: list[Named], scale: float) -> Named:
    d = random_direction(theta, torch.Generator().manual_seed(int(seed)))
    d = normalize_direction(d, theta, norm, ignore)
    orthogonalize(d, against)
    orthogonalize(d, against)  # twice: Gram–Schmidt in float32 loses orthogonality once
    n = P.norm(d)
    if n == 0:
        raise LandscapeError("the random direction vanished after orthogonalization; try `ignore` none or `norm` none")
    return P.scale(d, scale / n)


def interp_directions(problem: Problem, spec: DirectionSpec, ndim: int) -> Directions:
    """Centre θ₀ (``--from``), x: d₁ = θ₁ − θ₀ (``--to``), y/z: seeded random directions (``--norm``,
    ``--ignore``) orthogonal to the earlier ones and rescaled to ‖d₁‖ (module docstring)."""
    if not (spec.from_ckpt and spec.to_ckpt):
        raise LandscapeError("`directions` interp needs `from_ckpt` INIT.pt and `to_ckpt` FINAL.pt")
    model = problem.model
    keys = list(P.select(model, spec.dir_type))
    s0 = endpoint_states(model, spec.from_ckpt, "`from_ckpt`")
    s1 = endpoint_states(model, spec.to_ckpt, "`to_ckpt`")
    theta0 = {k: s0[k] for k in keys}
    theta1 = {k: s1[k] for k in keys}
    d1 = P.sub(theta1, theta0)
    length = P.norm(d1)
    if length == 0:
        raise LandscapeError(f"`from_ckpt` {spec.from_ckpt} and `to_ckpt` {spec.to_ckpt} hold the same weights")
    vectors = [d1]
    meta = [dict(kind="interp", norm="none", dir_type=spec.dir_type, scale=length, source_from=spec.from_ckpt,
                 source_to=spec.to_ckpt, note="x=0 is --from, x=1 is --to")]
    for i in range(1, ndim):
        d = _random_like(theta1, spec.seed + i - 1, spec.norm, spec.ignore, vectors, length)
        vectors.append(d)
        meta.append(dict(kind="random", norm=spec.norm, ignore=spec.ignore, dir_type=spec.dir_type,
                         seed=int(spec.seed + i - 1), orthogonalized=True, scale=length,
                         note="orthogonal to the path, rescaled to ‖θ₁−θ₀‖"))
    warn_batchnorm(model, spec.dir_type)
    return Directions(theta0, vectors, spec.dir_type, meta)


def warn_batchnorm(model: nn.Module, dir_type: str) -> None:
    """One note on stderr: with ``dir_type="weights"`` a model's BatchNorm statistics stay the centre's."""
    if dir_type == "weights" and has_batchnorm(model):
        note = ("landscape: note: with `dir_type` weights the BatchNorm running statistics stay those of the centre "
                "model at every point; `dir_type` states moves them along with the weights")
        print(parallel.render_message(note), file=sys.stderr)


build = interp_directions
