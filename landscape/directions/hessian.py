"""Top Hessian eigenvectors as plotting directions (``directions="hessian"``).

The eigenvectors are unit vectors in parameter space, so a coordinate of 1 moves the weights by
a Euclidean distance of 1 (recorded as ``scale=1`` with each direction's eigenvalue). Signs are
fixed so that the entry of largest magnitude is positive: the same model gives the same picture.
"""

from __future__ import annotations

from .. import params as P
from ..curvature import hessian_eigenpairs
from ..errors import LandscapeError
from ..problem import Problem
from ._base import Directions, DirectionSpec


def _fix_sign(v: P.Named) -> P.Named:
    flat = P.flatten(v)
    if flat.numel() and flat[flat.abs().argmax()] < 0:
        return P.scale(v, -1.0)
    return v


def hessian_directions(problem: Problem, spec: DirectionSpec, ndim: int) -> Directions:
    """The top ``ndim`` eigenvectors of the loss Hessian at the problem's weights (Lanczos, seeded by
    ``spec.seed``)."""
    if spec.dir_type != "weights":
        raise LandscapeError("`directions` hessian works on parameters only: use `dir_type` weights")
    trainable = {k: v for k, v in problem.model.named_parameters() if v.requires_grad}
    if not trainable:
        raise LandscapeError("`directions` hessian: the model has no parameters that require gradients")
    eig = hessian_eigenpairs(problem, k=ndim, which="LA", tol=1e-6, max_iter=max(60, 10 * ndim),
                             seed=int(spec.seed), return_vectors=True)
    vectors = []
    for v in eig.eigenvectors[:ndim]:
        v = _fix_sign({k: t.detach().to(trainable[k].dtype) for k, t in v.items()})
        vectors.append(v)
    center = P.clone(trainable)
    meta = [dict(kind="hessian", eigenvalue=float(lam), rank=i + 1, dir_type="weights", seed=int(spec.seed),
                 norm="unit", ignore="none", scale=1.0, matvecs=int(getattr(eig, "matvecs", 0)))
            for i, lam in enumerate(eig.eigenvalues[:ndim])]
    return Directions(center, vectors, "weights", meta)


build = hessian_directions
