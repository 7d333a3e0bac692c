"""Loss variation, gradient predictiveness and effective β-smoothness along the gradient (Santurkar et al.).

Example:
    >>> parse_etas("0.1:0.3:3")
    [0.1, 0.2, 0.3]
    >>> parse_etas("0.5,1")
    [0.5, 1.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import params as P
from ..errors import LandscapeError
from ..grid import parse_range
from ..objective import loss_grad, trainable
from ..problem import Problem
from ._base import Family, Metric, Option


def gradient_path_metrics(problem: Problem, *, etas: Sequence[float] | None = None,
                          world=None) -> dict[str, Metric]:
    """Santurkar et al. (NeurIPS 2018), along the full-batch gradient step θ − ηg for η ∈ ``etas``
    (default 8 values in [0.05, 0.4]):

    * loss variation: max_η L(θ−ηg) − min_η L(θ−ηg) (the range, with L(θ−ηg) stored per η);
    * gradient predictiveness: ‖g − ∇L(θ−ηg)‖ per η; the scalar is its maximum over η;
    * effective β-smoothness: max_η ‖g − ∇L(θ−ηg)‖ / ‖ηg‖.
    On a quadratic ∇L(θ−ηg) = g − ηHg, so the predictiveness is exactly ‖H·ηg‖.
    ``world``: gradients shared over ranks (collective).
    """
    etas = list(np.linspace(0.05, 0.4, 8) if etas is None else etas)
    theta = trainable(problem.model)
    _, g = loss_grad(problem, theta, world=world)
    gn = P.norm(g)
    losses, diffs, betas = [], [], []
    for eta in etas:
        moved = {k: theta[k] - eta * g[k] for k in theta}
        val, g2 = loss_grad(problem, moved, world=world)
        d = P.norm({k: g[k] - g2[k] for k in g})
        losses.append(val)
        diffs.append(d)
        betas.append(d / (eta * gn) if gn > 0 else float("nan"))
    prm = {"etas": [float(e) for e in etas], "grad_norm": gn}
    eta_arr = np.asarray(etas, dtype=np.float64)
    return {
        "loss_variation": Metric("loss_variation", float(np.max(losses) - np.min(losses)), dict(prm),
                                 {"loss_along_gradient": (np.asarray(losses), {"eta": eta_arr})}),
        "gradient_predictiveness": Metric("gradient_predictiveness", float(np.max(diffs)), dict(prm),
                                          {"gradient_change": (np.asarray(diffs), {"eta": eta_arr})}),
        "beta_smoothness": Metric("beta_smoothness", float(np.nanmax(betas)), dict(prm)),
    }


def parse_etas(text: str) -> list[float]:
    """``MIN:MAX:NUM`` (a :func:`landscape.grid.parse_range` range, 0 < MIN) or a comma list of positive
    step sizes."""
    try:
        if len(text.split(":")) == 3:
            r = parse_range(text, "`etas`")
            if r.lo <= 0:
                raise ValueError
            return [float(v) for v in r.values()]
        vals = [float(v) for v in text.split(",")]
        if not vals or min(vals) <= 0:
            raise ValueError
        return vals
    except (ValueError, LandscapeError):  # (one message for every malformed form)
        raise LandscapeError(f"`etas` {text!r}: use MIN:MAX:NUM with 0 < MIN <= MAX (e.g. 0.05:0.4:8) "
                             "or a comma list of positive numbers") from None


def _compute(problem: Problem, names, o: dict, world, say) -> dict[str, Metric]:
    say("gradient path")
    return {k: v for k, v in gradient_path_metrics(problem, etas=o["etas"], world=world).items() if k in names}


FAMILY = Family("gradient_path", ("loss_variation", "gradient_predictiveness", "beta_smoothness"), _compute, (
    Option("etas", None, "str", "step sizes for loss variation / gradient predictiveness / β-smoothness",
           "MIN:MAX:NUM", cli_default="0.05:0.4:8", parse=parse_etas),
))
