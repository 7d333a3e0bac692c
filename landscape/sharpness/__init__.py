"""Sharpness metrics of a trained model (docs/sharpness.md), each available alone: one module per family.

Notation: θ the trainable parameters, L(θ) = (1/N) Σ_b Σ_{i∈b} ℓ_i(θ) the mean loss over the
problem's batches, g = ∇L(θ), H = ∇²L(θ).

=====================================  ========================================================
function                               metric(s)
=====================================  ========================================================
:func:`curvature_metrics`              λ_max, λ_min, tr H, λ_max / tr H, η·λ_max/2 (Cohen et al.)
:func:`eps_sharpness`                  [max_{y∈C_ε} L(θ+y) − L(θ)] / (1 + L(θ)) × 100,
                                       C_ε = {|y_i| ≤ ε(|θ_i| + 1)} (Keskar et al.)
:func:`worst_case_sharpness`           max_{‖δ⊙c⁻¹‖_p ≤ ρ} L_B(θ+δ) − L_B(θ), averaged over batches
                                       B of m examples; c = |θ| (adaptive) or 1 (standard), Auto-PGD
:func:`average_case_sharpness`         E_{δ~N(0, ρ² diag(c²))} L_B(θ+δ) − L_B(θ), same batching
:func:`flatness_sigma`                 largest σ with E_u dev(θ+u) ≤ τ, u ~ N(0, σ²I) or
                                       u_i ~ N(0, σ²θ_i² + ε²) (Jiang et al.), by bisection
:func:`gradient_path_metrics`          over η: range of L(θ−ηg), ‖g − ∇L(θ−ηg)‖,
                                       β_eff = max_η ‖g − ∇L(θ−ηg)‖/‖ηg‖ (Santurkar et al.)
:func:`directional_sharpness`          uᵀHu/‖u‖² next to gᵀu and cos(g, u) (Pan & Li)
=====================================  ========================================================

Modules: :mod:`.curvature`, :mod:`.eps`, :mod:`.adaptive` (worst- and average-case), :mod:`.flatness`,
:mod:`.gradient_path`, :mod:`.directional`, :mod:`.layers` (the layer-wise part's options); :mod:`._registry`
(the families, their names and options: :func:`compute_metrics`, :func:`parse_metrics`, :func:`register_metric`),
:mod:`.table` (:func:`format_table`) and :mod:`.save` (:func:`save_results`). The loss, accuracy and gradient at
θ come from :mod:`landscape.objective`.

All metrics evaluate the network through :func:`torch.func.functional_call` with perturbed copies
of θ, so the model's own tensors are never written: its weights are exactly what they were before,
and the model stays in eval mode throughout (BatchNorm uses its running statistics; the mode is
forced to eval and put back afterwards). Every randomized metric takes a ``seed`` and draws from its
own :class:`torch.Generator` (worst-/average-case sharpness: one per example batch, seeded from the seed
and the batch's index).

Under MPI, pass ``world`` (:func:`landscape.parallel.world`) to :func:`compute_metrics` or to a metric:
the ranks share the batches out (batch i on rank i % size), add their partial sums up in float64
(``world.allreduce_sum``) and all get the single-process result; every rank must make the same calls.

Example:
    >>> from landscape.problem import make_problem
    >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=32, device="cpu",
    ...                  model_args={"width": 4, "depth": 1})
    >>> out = compute_metrics(p, "gradient_path", etas=[0.1, 0.2])
    >>> list(out), out["loss_variation"].params["etas"]
    (['loss_variation', 'gradient_predictiveness', 'beta_smoothness'], [0.1, 0.2])
"""

from __future__ import annotations

from ..errors import LandscapeError
from ..objective import eval_mode, loss_acc_at, loss_at, loss_grad, trainable
from ._base import Family, Metric, Option, _batch_gen
from ._registry import (
    FAMILIES,
    GROUPS,
    all_metrics,
    compute_metrics,
    options,
    parse_metrics,
    register_metric,
    unregister_metric,
)
from .adaptive import average_case_sharpness, default_rho, worst_case_sharpness
from .curvature import curvature_metrics
from .directional import direction_norm, directional_sharpness
from .eps import eps_sharpness
from .flatness import flatness_sigma, flatness_target
from .gradient_path import gradient_path_metrics, parse_etas
from .layers import parse_percentiles
from .save import save_results, write_groups
from .table import format_table, format_value

__all__ = [
    "FAMILIES", "GROUPS", "ALL_METRICS", "Family", "LandscapeError", "Metric", "Option", "all_metrics",
    "average_case_sharpness",
    "compute_metrics", "curvature_metrics", "default_rho", "direction_norm", "directional_sharpness",
    "eps_sharpness", "eval_mode", "flatness_sigma", "flatness_target", "format_table", "format_value",
    "gradient_path_metrics", "loss_acc_at", "loss_at", "loss_grad", "options", "parse_etas", "parse_metrics",
    "parse_percentiles", "register_metric", "save_results", "trainable", "unregister_metric", "worst_case_sharpness",
    "write_groups",
    "_batch_gen",
]


def __getattr__(name: str):
    if name == "ALL_METRICS":  # every metric name, registered ones included (computed on access)
        return all_metrics()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
