"""Paths through weight space: linear interpolation θ_α = (1−α)θ₀ + αθ₁ (docs/paths.md) and the
training trajectory projected on its PCA plane over the loss contours (Li et al. 2018, Sec. 7).

On the interpolation plot the endpoints are marked (α = 0 is θ₀, α = 1 is θ₁), every bump the
verdict counts (one rule for both: :mod:`landscape.paths.analysis`) is marked at its peak with its
height, and the barrier max_α L(θ_α) − max(L(θ₀), L(θ₁)) (mode connectivity) is drawn as an arrow
above the higher endpoint.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import LandscapeError
from ..paths.analysis import path_bumps
from ..results import Result, label_of
from .common import SPLIT_COLORS, finite_masked, new_figure, outside_legend, save, style, suptitle, twin
from .surface import Options, draw_contour


def _path(result: Result, name: str | None) -> tuple[str, dict]:
    if not result.paths:
        raise LandscapeError(f"{result.path} holds no interpolation path; make one with 'landscape interpolate'")
    name = name or ("interpolation" if "interpolation" in result.paths else next(iter(result.paths)))
    if name not in result.paths:
        raise LandscapeError(f"{result.path} has no path {name!r}; it has {', '.join(result.paths)}")
    p = result.paths[name]
    if "alpha" not in p:
        raise LandscapeError(f"{result.path}: /paths/{name} has no alpha dataset; the file is incomplete")
    return name, p


def _loss_key(p: dict) -> str | None:
    keys = [k for k in p if k.endswith("_loss") and isinstance(p[k], np.ndarray)]
    return "train_loss" if "train_loss" in keys else (keys[0] if keys else None)


def _at(alpha: np.ndarray, values: np.ndarray, a: float) -> float:
    ok = np.isfinite(values)
    if not ok.any():
        return float("nan")
    return float(np.interp(a, alpha[ok], values[ok]))


def draw_path(ax, result: Result, name: str | None = None, log: bool = False, opts=None) -> None:
    """Loss (solid, left) and accuracy (dashed, right) against α for each split, endpoints, bumps and barrier."""
    name, p = _path(result, name)
    alpha = np.asarray(p["alpha"], dtype=float)
    handles = []
    for key in sorted((k for k in p if k.endswith("_loss") and isinstance(p[k], np.ndarray)),
                      key=lambda k: (k.split("_")[0] != "train", k)):
        (h,) = ax.plot(alpha, finite_masked(p[key], f"{name} {key}", result.path, log), "-",
                       color=SPLIT_COLORS.get(key.split("_")[0]), label=label_of(key))
        handles.append(h)
    ax.set_xlabel("α   (θ_α = (1 − α)·θ₀ + α·θ₁)")
    ax.set_ylabel("loss" + (" (log scale)" if log else ""))
    if log:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    first_train = sorted(p, key=lambda k: (k.split("_")[0] != "train", k))
    accs = [k for k in first_train if k.endswith("_acc") and isinstance(p[k], np.ndarray) and np.isfinite(p[k]).any()]
    if accs:
        ax2 = twin(ax)
        for key in accs:
            (h,) = ax2.plot(alpha, finite_masked(p[key], f"{name} {key}", result.path), "--",
                            color=SPLIT_COLORS.get(key.split("_")[0]), alpha=0.8, label=label_of(key))
            handles.append(h)
        ax2.set_ylabel("accuracy")
    for a0, text in ((0.0, "θ₀ (α=0)"), (1.0, "θ₁ (α=1)")):
        if alpha.min() <= a0 <= alpha.max():
            ax.axvline(a0, color="0.3", lw=0.9, ls=":")
            ax.annotate(text, xy=(a0, 0.0), xycoords=("data", "axes fraction"), xytext=(3, 3),
                        textcoords="offset points", fontsize=8, ha="left", va="bottom")
    key = _loss_key(p)
    if key is not None:
        loss = np.asarray(p[key], dtype=float)
        bumps = path_bumps(p, alpha, loss)
        for k, b in enumerate(bumps):
            try:
                a_peak, height = float(b[1]), float(b[2])
            except (TypeError, ValueError, IndexError):
                continue
            y = _at(alpha, loss, a_peak)
            (h,) = ax.plot([a_peak], [y], "v", color="#ff7f0e", ms=7, label="bump (peak)" if k == 0 else None)
            if k == 0:
                handles.append(h)
            ax.annotate(f"Δ={height:.3g}", xy=(a_peak, y), xytext=(0, 8), textcoords="offset points", fontsize=7,
                        ha="center", color="#ff7f0e")
        _draw_barrier(ax, alpha, loss, p, handles)
    extra = []
    if "monotonic" in p:
        extra.append("monotonic" if bool(p["monotonic"]) else "non-monotonic")
    if "distance" in p:
        extra.append(f"‖θ₁−θ₀‖={float(p['distance']):.3g}")
    if "relative_distance" in p:
        extra.append(f"relative {float(p['relative_distance']):.3g}")
    if p.get("bn_reestimated"):
        extra.append("BN re-estimated")
    if extra:
        (h,) = ax.plot([], [], " ", label=", ".join(extra))
        handles.append(h)
    if opts is not None and (opts.vmin is not None or opts.vmax is not None):
        ax.set_ylim(bottom=opts.vmin, top=opts.vmax)
    outside_legend(ax, handles, fontsize=7)


def _draw_barrier(ax, alpha: np.ndarray, loss: np.ndarray, p: dict, handles: list) -> None:
    inside = (alpha >= 0) & (alpha <= 1) & np.isfinite(loss)
    if not inside.any() or alpha.min() > 0 or alpha.max() < 1:
        return
    ends = max(_at(alpha, loss, 0.0), _at(alpha, loss, 1.0))
    j = int(np.flatnonzero(inside)[np.argmax(loss[inside])])
    barrier = float(p["barrier"]) if "barrier" in p and np.isfinite(p["barrier"]) else float(loss[j] - ends)
    if not np.isfinite(ends):
        return
    if barrier <= 0:  # no barrier: say so in the legend, draw nothing over the curve
        (h,) = ax.plot([], [], " ", label=f"barrier = {barrier:.3g}")
        handles.append(h)
        return
    (h,) = ax.plot([0, 1], [ends, ends], color="0.4", lw=0.8, ls="--", label=f"barrier = {barrier:.3g}")
    handles.append(h)
    if barrier > 0:
        ax.annotate("", xy=(alpha[j], ends + barrier), xytext=(alpha[j], ends),
                    arrowprops=dict(arrowstyle="<->", color="0.3", lw=1.0))


def path_figure(result: Result, name: str | None = None, opts=None):
    """The figure of one interpolation path (not saved)."""
    opts = opts or Options()
    fig = new_figure(*(opts.figsize or (6.0, 4.6)))
    ax = fig.add_subplot()
    pname, _ = _path(result, name)
    draw_path(ax, result, pname, opts.log, opts)
    suptitle(fig, opts.title or result.title(f"linear path '{pname}'", surface=False))
    return fig


def plot_path(result: Result, path: str, name: str | None = None, log: bool = False, dpi: int = 150,
              opts=None) -> str:
    with style():
        return save(path_figure(result, name, opts or Options(log=log, dpi=dpi)), path, dpi)


# ---------------------------------------------------------------------------- trajectory
def has_trajectory(result: Result) -> bool:
    t = result.trajectory
    return t is not None and t.get("coords") is not None and np.asarray(t["coords"]).ndim == 2


def draw_trajectory(ax, result: Result, surface: str | None = None, opts=None) -> None:
    """The loss contours of the PCA plane (when the file has a 2D surface) with the optimizer's path: one
    marker per checkpoint, coloured by order, first and last labelled; explained variance on the axes."""
    if not has_trajectory(result):
        raise LandscapeError(f"{result.path} holds no trajectory; make one with 'landscape surface --directions pca "
                             "--trajectory \"DIR/ckpt_*.pt\"'")
    tc = np.asarray(result.trajectory["coords"], dtype=float)
    if result.ndim == 2 and result.default_surface() and result.has_values(surface or result.default_surface()):
        draw_contour(ax, result, surface, opts or Options(), colorbar=True)
    ax.plot(tc[:, 0], tc[:, 1], "-", color="#d62728", lw=1.2, zorder=3)
    sc = ax.scatter(tc[:, 0], tc[:, 1], c=np.arange(len(tc)), cmap="autumn", s=22, edgecolors="k", linewidths=0.5,
                    zorder=4, label="checkpoints (in training order)")
    ax.annotate("start", xy=tc[0, :2], xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.annotate("final", xy=tc[-1, :2], xytext=(4, -10), textcoords="offset points", fontsize=8)
    ax.set_xlabel(result.axis_label("x"))
    ax.set_ylabel(result.axis_label("y"))
    if result.ndim == 2:
        x, y = result.coords["x"], result.coords["y"]
        lo, hi = tc[:, :2].min(axis=0), tc[:, :2].max(axis=0)
        if lo[0] < x.min() or hi[0] > x.max() or lo[1] < y.min() or hi[1] > y.max():
            warnings.warn(f"the trajectory reaches beyond the computed grid (x {lo[0]:.3g}…{hi[0]:.3g}, y "
                          f"{lo[1]:.3g}…{hi[1]:.3g}; grid x {x.min():.3g}…{x.max():.3g}, y {y.min():.3g}…"
                          f"{y.max():.3g}): widen --x/--y to see the landscape under all of it", stacklevel=2)
        pad = 0.03 * max(hi[0] - lo[0], hi[1] - lo[1], 1e-12)
        ax.set_xlim(min(x.min(), lo[0] - pad), max(x.max(), hi[0] + pad))
        ax.set_ylim(min(y.min(), lo[1] - pad), max(y.max(), hi[1] + pad))
    # PCA coordinates share one unit (unit-norm components): an equal aspect keeps distances true
    ax.set_aspect("equal", adjustable="box")
    outside_legend(ax, [sc])


def trajectory_figure(result: Result, surface: str | None = None, opts=None):
    opts = opts or Options()
    fig = new_figure(*(opts.figsize or (6.0, 5.0)))
    ax = fig.add_subplot()
    draw_trajectory(ax, result, surface, opts)
    suptitle(fig, opts.title or result.title("training trajectory"))
    return fig


def plot_trajectory(result: Result, path: str, surface: str | None = None, opts=None, dpi: int = 150) -> str:
    with style():
        return save(trajectory_figure(result, surface, opts), path, dpi)
