"""The per-layer picture of ``landscape sharpness --plot-layers``: layer-wise conditioning across depth.

Example:
    >>> import os, tempfile
    >>> import numpy as np
    >>> from landscape.layerwise import LayerwiseResult
    >>> q = {k: np.array([2.0, 1.0]) for k in ("kron_lambda_max", "kron_kappa_p90", "stable_rank")}
    >>> r = LayerwiseResult(["0", "2"], q, {}, {})
    >>> os.path.basename(plot_layerwise(r, os.path.join(tempfile.mkdtemp(), "layers.png")))
    'layers.png'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .common import new_figure, save

if TYPE_CHECKING:
    from ..layerwise import LayerwiseResult


def plot_layerwise(result: LayerwiseResult, path: str, title: str = "") -> str:
    """Per-layer plot across depth: λ_max of Σ_x, Σ_δ and their Kronecker product, κ_p90, weight domination
    and stable/effective rank (log y). Saves to ``path`` and returns it."""
    depth = np.arange(1, len(result.layers) + 1)
    fig = new_figure(13, 3.8, layout=None)
    axes = fig.subplots(1, 3)
    panels = [
        ("λ_max", ("sigma_x_lambda_max", "sigma_delta_lambda_max", "kron_lambda_max")),
        ("condition number", ("sigma_x_kappa_p90", "sigma_delta_kappa_p90", "kron_kappa_p90")),
        ("weights", ("weight_domination", "stable_rank", "effective_rank")),
    ]
    for ax, (label, qs) in zip(axes, panels):
        for qn in qs:
            if qn in result.quantities:
                v = np.asarray(result.quantities[qn], dtype=float)
                ax.semilogy(depth, np.where(np.isfinite(v) & (v > 0), v, np.nan), "o-", label=qn)
        ax.set_xlabel("layer (depth)")
        ax.set_title(label)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path, dpi=120)
