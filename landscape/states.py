"""Weights given as a checkpoint or as named tensors (the two ends of a path, the models of a plane), checked
against the model, their distance, and whether the model
has BatchNorm statistics to care about (docs/paths.md).

**Distances**: ``‖θ₁ − θ₀‖`` and ``‖θ₁ − θ₀‖ / ‖θ₀‖`` over the parameters (not the BatchNorm
buffers).
"""

from __future__ import annotations

import os

from torch import nn

from . import params as P
from .errors import LandscapeError
from .params import Named
from .problem import read_state_dict

_BN = nn.modules.batchnorm._BatchNorm


def batchnorm_layers(model: nn.Module) -> list[_BN]:
    """BatchNorm layers that keep running statistics (the ones re-estimation changes)."""
    return [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]


def has_batchnorm(model: nn.Module) -> bool:
    return bool(batchnorm_layers(model))


def endpoint_states(model: nn.Module, state: str | Named, what: str = "checkpoint", unsafe_load: bool = False,
                    strip_prefix: str | None = None) -> Named:
    """The floating state (parameters and buffers) of a checkpoint, checked against ``model``.

    ``state`` is a checkpoint path or a ``state_dict``-like dict; the result has the keys, device
    and dtypes of ``params.states(model)``.
    """
    sd = (read_state_dict(state, unsafe_load=unsafe_load, flag=what if what.startswith(("`", "--")) else None,
                          strip_prefix=strip_prefix)
          if isinstance(state, str | os.PathLike) else state)
    target = P.states(model)
    missing = [k for k in target if k not in sd]
    shapes = [k for k in target if k in sd and tuple(sd[k].shape) != tuple(target[k].shape)]
    if missing or shapes:
        why = f"missing {', '.join(missing[:3])}" if missing else f"shape of {', '.join(shapes[:3])} differs"
        name = state if isinstance(state, str) else "the weights"
        raise LandscapeError(f"{what} {name!r} does not match the model ({why}); check `model` and `model_args`")
    return {k: sd[k].detach().to(device=v.device, dtype=v.dtype) for k, v in target.items()}


def param_distance(model: nn.Module, theta0: Named, theta1: Named) -> tuple[float, float]:
    """``(‖θ₁ − θ₀‖, ‖θ₁ − θ₀‖ / ‖θ₀‖)`` over the model's parameters."""
    keys = [k for k, _ in model.named_parameters() if k in theta0]
    a = {k: theta0[k] for k in keys}
    d = P.norm(P.sub({k: theta1[k] for k in keys}, a))
    n0 = P.norm(a)
    return d, (d / n0 if n0 > 0 else float("inf"))
