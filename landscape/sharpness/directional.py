"""Directional sharpness uᵀHu/‖u‖² of an update direction u, with gᵀu and cos(g, u) (Pan & Li 2023).

Example:
    >>> import torch
    >>> direction_norm({"w": torch.tensor([3.0, 4.0])})
    5.0
"""

from __future__ import annotations

import torch

from .. import curvature as C
from .. import params as P
from ..errors import LandscapeError
from ..objective import eval_mode, loss_grad, solo, trainable
from ..params import Named
from ..problem import Problem
from ._base import Family, Metric, Option


def directional_sharpness(problem: Problem, direction: Named | None = None, *, label: str = "",
                          world=None) -> dict[str, Metric]:
    """Pan & Li (2023): uᵀHu/‖u‖² for an update direction u (default u = −g, the gradient-descent step),
    reported with the gradient correlation gᵀu and cos(g, u) = gᵀu/(‖g‖‖u‖).

    ``direction`` names (a subset of) the trainable parameters; missing ones are zero. ``world``: the
    gradient and the Hessian-vector product shared over ranks (collective).
    """
    theta = trainable(problem.model)
    _, g = loss_grad(problem, theta, world=world)
    if direction is None:
        u = {k: -v for k, v in g.items()}
        label = label or "negative gradient"
    else:
        unknown = [k for k in direction if k not in theta]
        if unknown:
            raise LandscapeError(f"directional sharpness: the direction names tensors the model does not train: "
                                 f"{', '.join(unknown[:3])}")
        u = {k: direction[k].to(device=v.device, dtype=v.dtype) if k in direction else torch.zeros_like(v)
             for k, v in theta.items()}
    un = direction_norm(u)
    with eval_mode(problem.model):
        if solo(world):
            hu = C.hvp(problem, u, params=theta)
        else:
            hu = C.HessianOperator(problem, params=theta, cache=False, world=world).matvec(u)
    gu = P.dot(g, u)
    prm = {"direction": label or "given", "direction_norm": un, "grad_norm": P.norm(g)}
    return {
        "directional_sharpness": Metric("directional_sharpness", P.dot(u, hu) / un ** 2, dict(prm)),
        "gradient_correlation": Metric("gradient_correlation", gu, {**prm, "cosine": gu / (un * P.norm(g) + 1e-300)}),
    }


def direction_norm(u: Named) -> float:
    """‖u‖ of a direction for directional sharpness; a one-line error if it is zero."""
    un = P.norm(u)
    if un == 0:
        raise LandscapeError("directional sharpness: the direction is zero (are the two checkpoints identical?)")
    return un


def _compute(problem: Problem, names, o: dict, world, say) -> dict[str, Metric]:
    say("directional sharpness")
    res = directional_sharpness(problem, o["direction"], label=o["direction_label"], world=world)
    return {k: v for k, v in res.items() if k in names}


FAMILY = Family("directional", ("directional_sharpness", "gradient_correlation"), _compute, (
    Option("direction_from", help="directional sharpness along u = θ_B − θ_A", metavar="A.pt", library=False),
    Option("direction_to", help="(default direction: the negative gradient)", metavar="B.pt", library=False),
    Option("direction", cli=False),
    Option("direction_label", "", cli=False),
))
