"""Pictures of a training track (``landscape track``): the edge-of-stability figure, the spectrum's evolution and
the overlap curves.

* **EoS** (Cohen et al. 2021, their Fig. 1): λ_max against the step with the line 2/η, and the training loss
  below on a log axis -- λ_max rises (progressive sharpening) until it meets 2/η, then hovers there while the
  loss keeps falling, non-monotonically.
* **Spectrum evolution**: step × eigenvalue heatmap of the SLQ density on a log colour scale (the bulk near zero
  holds almost all the mass, the outliers orders of magnitude less), with λ_max over it.
* **Overlaps**: ‖P_k g‖²/‖g‖² (Gur-Ari et al. 2018), the overlap of consecutive top-k eigenspaces, and
  cos(g, u) of the actual update.
"""

from __future__ import annotations

import matplotlib.colors as mcolors
import numpy as np

from ..errors import LandscapeError
from ..results import Result
from .common import OPERATOR_LABELS, new_figure, output_path, save, style, suptitle

FLOOR = 1e-8


def has_track(result: Result) -> bool:
    t = result.track or {}
    return "step" in t and "done" in t and bool(np.asarray(t["done"]).any())


def _track(result: Result) -> dict:
    if not has_track(result):
        raise LandscapeError(f"{result.path} holds no computed /track; make one with 'landscape track ... --out "
                             f"{result.path}'")
    return result.track  # type: ignore[return-value]


def _operator(t: dict) -> str:
    op = t.get("attrs", {}).get("operator", "hessian")
    return OPERATOR_LABELS.get(op, str(op))


def _lr(t: dict) -> float | None:
    lr = t.get("attrs", {}).get("lr")
    try:
        return float(lr) if lr is not None and np.isfinite(float(lr)) else None
    except (TypeError, ValueError):
        return None


def draw_eos(ax, result: Result, ax_loss=None) -> None:
    """λ_max (and the other top eigenvalues, faint) against the step, with 2/η; the loss on ``ax_loss`` (log)."""
    t = _track(result)
    step = np.asarray(t["step"], dtype=float)
    if "eigenvalues" in t:
        ev = np.asarray(t["eigenvalues"], dtype=float)
        for j in range(1, ev.shape[1]):
            ax.plot(step, ev[:, j], "-", color="0.75", lw=0.8, label="λ2…λk" if j == 1 else None)
    if "lambda_max" in t:
        ax.plot(step, np.asarray(t["lambda_max"], dtype=float), "o-", ms=2.5, color="#1f77b4",
                label=f"λ_max ({_operator(t)})")
    lr = _lr(t)
    if lr:
        ax.axhline(2.0 / lr, color="#d62728", ls="--", lw=1.2, label=f"2/η = {2 / lr:.3g}")
    ax.set_ylabel("sharpness λ_max")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    target = ax_loss
    if target is None:
        return
    for key, color in (("train_loss", "#2ca02c"), ("test_loss", "#ff7f0e")):
        if key in t:
            v = np.asarray(t[key], dtype=float)
            target.semilogy(step, np.where(v > 0, v, np.nan), "-", color=color, label=key.replace("_", " "))
    target.set_ylabel("loss (log)")
    target.set_xlabel("step")
    target.grid(True, which="both", alpha=0.3)
    target.legend(loc="upper right", fontsize=7)


def draw_spectrum_evolution(ax, result: Result) -> None:
    """Step × eigenvalue heatmap of the density (log colour), λ_max drawn over it."""
    t = _track(result)
    if "density/values" not in t or not np.isfinite(np.asarray(t["density/values"], dtype=float)).any():
        raise LandscapeError(f"{result.path}: /track has no spectral density yet (run the track to the end, with "
                             "--metrics including density)")
    step = np.asarray(t["step"], dtype=float)
    grid = np.asarray(t["density/grid"], dtype=float)
    vals = np.maximum(np.asarray(t["density/values"], dtype=float), FLOOR)
    mesh = ax.pcolormesh(_centers_to_edges(step), _centers_to_edges(grid), vals.T, cmap="magma",
                         norm=mcolors.LogNorm(vmin=max(FLOOR, float(vals.max()) * 1e-8), vmax=float(vals.max())))
    if "lambda_max" in t:
        ax.plot(step, np.asarray(t["lambda_max"], dtype=float), "-", color="#00e5ff", lw=1.0, label="λ_max")
        ax.legend(loc="upper left", fontsize=7)
    ax.set_xlabel("step")
    ax.set_ylabel(f"eigenvalue λ ({_operator(t)})")
    ax.figure.colorbar(mesh, ax=ax, label="density φ(λ) (log)")


def _centers_to_edges(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=float)
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def has_overlaps(result: Result) -> bool:
    t = result.track or {}
    return any(k in t and np.isfinite(np.asarray(t[k], dtype=float)).any()
               for k in ("grad_overlap", "subspace_overlap", "update_cosine"))


def draw_overlaps(ax, result: Result) -> None:
    """‖P_k g‖²/‖g‖², the consecutive top-k subspace overlap and cos(g, u) against the step, on [0, 1]."""
    t = _track(result)
    step = np.asarray(t["step"], dtype=float)
    k = t.get("attrs", {}).get("top_k", "k")
    curves = (("grad_overlap", f"gradient in the top-{k} eigenspace ‖P_k g‖²/‖g‖²", "#1f77b4"),
              ("subspace_overlap", f"top-{k} eigenspace kept to the next checkpoint ‖U_tᵀU_t+1‖²/k", "#ff7f0e"),
              ("update_cosine", "−cos(g, θ_t+1 − θ_t)", "#2ca02c"))
    for key, label, color in curves:
        if key in t:
            v = np.asarray(t[key], dtype=float)
            if key == "update_cosine":
                v = -v
            ax.plot(step, v, "o-", ms=2.5, color=color, label=label)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("step")
    ax.set_ylabel("overlap")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)


def track_figures(result: Result, opts=None) -> dict[str, object]:
    """Every track figure the file can give, by name: ``eos``, ``spectrum_evolution``, ``overlaps``
    (matplotlib Figures, not saved). ``opts`` may set ``figsize`` and ``title``."""
    t = _track(result)
    size = getattr(opts, "figsize", None)
    title = getattr(opts, "title", None)
    figs: dict[str, object] = {}
    if "lambda_max" in t:
        fig = new_figure(*(size or (6.5, 5.0)))
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
        draw_eos(top, result, bottom)
        suptitle(fig, title or result.title("edge of stability", surface=False))
        figs["eos"] = fig
    if "density/values" in t and np.isfinite(np.asarray(t["density/values"], dtype=float)).any():
        fig = new_figure(*(size or (6.5, 4.2)))
        draw_spectrum_evolution(fig.add_subplot(), result)
        suptitle(fig, title or result.title("spectrum along training", surface=False))
        figs["spectrum_evolution"] = fig
    if has_overlaps(result):
        fig = new_figure(*(size or (6.5, 4.0)))
        draw_overlaps(fig.add_subplot(), result)
        suptitle(fig, title or result.title("overlaps along training", surface=False))
        figs["overlaps"] = fig
    return figs


def plot_track(result: Result, out_dir: str, fmt: str = "png", dpi: int = 150, opts=None) -> list[str]:
    """Every track picture the file can give: ``<name>_eos``, ``<name>_spectrum_evolution``, ``<name>_overlaps``."""
    with style():
        return [save(fig, output_path(out_dir, result.name, name, fmt=fmt), dpi)
                for name, fig in track_figures(result, opts).items()]


def track_panels(result: Result) -> list[tuple[str, str, object]]:
    """Report panels (title, projection, draw(ax)) for a file with a track."""
    if not has_track(result):
        return []
    t = result.track or {}
    panels: list[tuple[str, str, object]] = []
    if "lambda_max" in t:
        panels.append(("edge of stability: λ_max vs 2/η", "", lambda ax: draw_eos(ax, result)))
    if "density/values" in t and np.isfinite(np.asarray(t["density/values"], dtype=float)).any():
        panels.append(("spectrum along training", "", lambda ax: draw_spectrum_evolution(ax, result)))
    if has_overlaps(result):
        panels.append(("overlaps along training", "", lambda ax: draw_overlaps(ax, result)))
    return panels
