"""Paths between two sets of weights (docs/paths.md): the numpy-only analysis (bumps, barrier, verdict) in
:mod:`.analysis`, the two ends in :mod:`.endpoints`, the evaluator (θ_α, BatchNorm re-estimation) in
:mod:`.evaluator`, and the resumable, MPI-parallel run in :mod:`.run`.

Example:
    >>> import numpy as np
    >>> s = path_summary(np.linspace(0, 1, 5), np.array([1.0, 0.6, 0.9, 0.4, 0.2]))
    >>> s["n_bumps"], s["monotonic"]
    (1, False)
"""

from __future__ import annotations

import importlib

from .analysis import (
    DEFAULT_TOLERANCE,
    Bump,
    barrier,
    find_bumps,
    max_rise,
    path_bumps,
    path_summary,
    verdict_line,
    verdict_window,
)

#: names of the torch modules, imported on first use: ``import landscape.paths.analysis`` (the plots) stays
#: numpy-only, and the direction kinds can import :mod:`landscape.states` while :mod:`landscape.evaluate` (which
#: :mod:`.evaluator` needs) is still initialising
_LAZY = {"batchnorm_layers": "..states", "endpoint_states": "..states", "has_batchnorm": "..states",
         "param_distance": "..states", "PathEvaluator": ".evaluator", "evaluate_path": ".evaluator",
         "reestimate_bn": ".evaluator",
         "PathResult": ".run", "interpolate": ".run"}

__all__ = [
    "DEFAULT_TOLERANCE", "Bump", "PathEvaluator", "PathResult", "barrier", "batchnorm_layers", "endpoint_states",
    "evaluate_path", "find_bumps", "has_batchnorm", "interpolate", "max_rise", "param_distance", "path_bumps",
    "path_summary", "reestimate_bn", "verdict_line", "verdict_window",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'landscape.paths' has no attribute {name!r}")
