"""The plane through three models (``plane=[A, B, C]``, Garipov et al. 2018; docs/directions.md).

``--plane A B C`` (Garipov et al. 2018): centre θ_A, d₁ = θ_B − θ_A, d₂ = θ_C − θ_A Gram–Schmidt'ed
against d₁ (not rescaled), so A = (0, 0), B = (1, 0) and C = (⟨θ_C − θ_A, d₁⟩/‖d₁‖², 1); the three
points are stored in ``/plane/coords``.
"""

from __future__ import annotations

import json
import math

import numpy as np

from .. import params as P
from ..errors import LandscapeError
from ..problem import Problem
from ..states import endpoint_states
from ._base import Directions, DirectionSpec
from .interp import warn_batchnorm


def plane_directions(problem: Problem, spec: DirectionSpec, ndim: int) -> Directions:
    """The plane through three models A, B, C: centre θ_A, d₁ = θ_B − θ_A, d₂ = θ_C − θ_A Gram–Schmidt'ed
    against d₁ (not rescaled). ``/plane/coords`` holds A, B, C's coordinates."""
    paths = list(spec.plane or [])
    if len(paths) != 3:
        raise LandscapeError(f"`plane` needs three checkpoints A B C, got {len(paths)}")
    if ndim > 2:
        raise LandscapeError("`plane` spans a 2D plane; drop `z`")
    model = problem.model
    keys = list(P.select(model, spec.dir_type))
    thetas = []
    for p in paths:
        s = endpoint_states(model, p, "`plane`")
        thetas.append({k: s[k] for k in keys})
    a, b, c = thetas
    d1 = P.sub(b, a)
    dc = P.sub(c, a)
    n1 = P.dot(d1, d1)
    if n1 == 0:
        raise LandscapeError(f"`plane`: {paths[0]} and {paths[1]} hold the same weights")
    proj = P.dot(dc, d1) / n1
    d2 = P.add(dc, d1, alpha=-proj)
    if P.norm(d2) <= 1e-5 * P.norm(dc):  # float32 round-off of an exactly collinear C
        raise LandscapeError("`plane`: the three models lie on one line; they span no plane")
    vectors = [d1, d2][:ndim]
    meta = [dict(kind="plane", norm="none", dir_type=spec.dir_type, scale=math.sqrt(n1), models=paths,
                 note="x=1 is B; y: C−A orthogonalized against B−A"),
            dict(kind="plane", norm="none", dir_type=spec.dir_type, scale=P.norm(d2), models=paths,
                 orthogonalized=True, note="C is at (c_x, 1)")][:ndim]
    coords = np.array([[0.0, 0.0], [1.0, 0.0], [proj, 1.0]])[:, :ndim]
    extras = {"plane/coords": (coords, {"models": json.dumps(paths), "labels": json.dumps(["A", "B", "C"])})}
    warn_batchnorm(model, spec.dir_type)
    return Directions(a, vectors, spec.dir_type, meta, extras)


build = plane_directions
