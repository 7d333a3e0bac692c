"""landscape: see and measure the geometry of a neural network's loss around trained weights.

The public API (imported on first use, so ``import landscape`` stays cheap)::

    from landscape import make_problem, SurfaceSpec, run_surface, open_result
    problem = make_problem("zoo:mlp", checkpoint="final.pt", data="zoo:digits")
    run_surface(problem, SurfaceSpec(x="-1:1:41", y="-1:1:41"), "outputs/mlp.h5")
    r = landscape.open("outputs/mlp.h5")               # the result object (open_result)
    fig = landscape.plot.figure(r, "contour", cmap="magma")  # a matplotlib Figure, for a notebook

Modules: ``problem`` (models, data, loss), ``batches`` (batches and outputs of any structure), ``losses``
(the loss registry), ``params`` (named tensor arithmetic), ``directions`` (one module per kind, a registry),
``grid``, ``kernels`` (accurate loss/accuracy kernels), ``evaluate`` (a package; ``evaluate.chain`` is its batched
MLP path), ``autotune`` (batch size and probe budget), ``specs`` (user code by spec), ``parallel`` (MPI),
``store``/``results`` (HDF5), ``driver`` (the run driver), ``surface``, ``paths``, ``states`` (weights from
checkpoints), ``train``, ``track``,
``objective`` (loss and gradient at θ), ``curvature``, ``sharpness``, ``layerwise``, ``plot``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "Problem": "problem", "make_problem": "problem", "load_model": "problem", "load_checkpoint": "problem",
    "load_data": "problem", "HostBatches": "problem",
    "Loss": "losses", "get_loss": "losses", "Inputs": "batches",
    "Directions": "directions", "make_random_directions": "directions", "normalize_direction": "directions",
    "orthogonalize": "directions", "target_direction": "directions", "register_direction": "directions",
    "build_directions": "directions", "DIRECTION_KINDS": "directions",
    "interpolate": "paths", "path_summary": "paths",
    "Grid": "grid", "parse_range": "grid",
    "PointEvaluator": "evaluate", "BatchedEvaluator": "evaluate", "make_evaluator": "evaluate", "InputFold": "evaluate",
    "evaluate_batches": "evaluate", "as_float64": "evaluate", "LinearChain": "evaluate", "Evaluator": "evaluate",
    "cross_entropy_sum": "kernels", "correct_count": "kernels",
    "world": "parallel", "run_points": "parallel",
    "SurfaceSpec": "surface", "run_surface": "surface",
    "TrackSpec": "track", "TrackResult": "track", "run_track": "track", "checkpoint_series": "track",
    "open_result": "results", "open": "results",
    "register_metric": "sharpness", "compute_metrics": "sharpness", "save_results": "sharpness",
    "register_plot_kind": "plot", "PlotKind": "plot",
    "hessian_eigenpairs": "curvature", "hessian_trace": "curvature", "spectral_density": "curvature",
    "HessianOperator": "curvature", "save_curvature": "curvature",
    "loss_at": "objective", "loss_grad": "objective", "endpoint_states": "states",
    "LandscapeError": "errors",
}
_MODULES = ("problem", "batches", "losses", "params", "directions", "grid", "kernels", "evaluate", "autotune",
            "specs", "parallel", "store", "schema", "results", "driver", "surface", "paths", "states", "train", "track",
            "objective", "curvature", "sharpness",
            "layerwise", "plot", "zoo")

__all__ = sorted(_API) + list(_MODULES) + ["__version__"]


#: public names whose object has another name in its module
_ALIAS = {"open": "open_result"}


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), _ALIAS.get(name, name))
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'landscape' has no attribute {name!r}")
