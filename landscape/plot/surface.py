"""Surfaces: 1D lines, 2D contour / filled contour / heatmap / 3D surface, 3D volumes as slices,
and curvature maps (λmax, λmin, |λmin/λmax|), all from a :class:`~landscape.results.Result`.

Orientation: a result's ``Z[i, j]`` is the value at ``(x[i], y[j])``, while matplotlib's 2D
functions take arrays of shape (ny, nx) with rows along the vertical axis, so every 2D call here
passes ``Z.T``: x runs along the horizontal axis, y along the vertical one, for any grid shape.
(Li et al.'s plots passed their meshgrid-ordered arrays straight through, which is only right for
square grids.) ``draw_*`` functions draw on a given axes (the report reuses them); ``plot_*``
functions make, save and release a whole figure.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

from ..errors import LandscapeError
from ..results import Result, label_of
from .common import (
    SPLIT_COLORS,
    finite_masked,
    make_levels,
    make_norm,
    new_figure,
    outside_legend,
    save,
    style,
    suptitle,
    twin,
    value_range,
)
from .options import Options

CURVATURE_SURFACES = ("train_lambda_max", "train_lambda_min", "train_convexity")


def value_limits(ax, opts: Options | None) -> None:
    """``--vmin``/``--vmax`` on a 1D picture: the limits of the value (y) axis."""
    if opts is not None and (opts.vmin is not None or opts.vmax is not None):
        ax.set_ylim(bottom=opts.vmin, top=opts.vmax)


def _surface(result: Result, name: str | None) -> tuple[str, np.ndarray]:
    name = name or result.default_surface()
    if name is None or name not in result.surfaces:
        have = ", ".join(result.surface_names()) or "none"
        raise LandscapeError(f"{result.path} has no surface {name!r}; choose `surface` among: {have}")
    z = result.surfaces[name]
    if not np.isfinite(z).any():
        raise LandscapeError(f"{result.path}: {name} has no computed finite value yet; wait for the run (or resume "
                             "it by re-running its command), or choose another `surface`")
    return name, z


def _need2d(result: Result, what: str) -> tuple[np.ndarray, np.ndarray]:
    if result.ndim != 2:
        raise LandscapeError(f"{what} needs a 2D surface; {result.path} is {result.ndim}D")
    x, y = result.coords["x"], result.coords["y"]
    return x, y


def _colorbar(ax, mappable, name: str, log: bool):
    """A labelled colorbar with a handful of ticks (a contour set would otherwise tick every level)."""
    cb = ax.figure.colorbar(mappable, ax=ax)
    cb.set_label(_cbar_label(name, log))
    if log:  # 1-2-5 steps, written as plain numbers: a loss range rarely spans many decades
        cb.locator = LogLocator(subs=(1.0, 2.0, 5.0))
        cb.formatter = FuncFormatter(lambda v, _: f"{v:.3g}")
    else:
        cb.locator = MaxNLocator(7)
    cb.update_ticks()
    return cb


def _cbar_label(name: str, log: bool) -> str:
    return label_of(name) + (" (log scale)" if log else "")


# ---------------------------------------------------------------------------- 1D
def draw_line(ax, result: Result, log: bool = False, metrics: tuple[str, ...] = ("loss", "acc"),
              opts: Options | None = None) -> list:
    """1D surface: losses on ``ax`` (solid), accuracies on a twin axis (dashed), one colour per split."""
    if result.ndim != 1:
        raise LandscapeError(f"a line plot of the whole surface needs a 1D surface; {result.path} is {result.ndim}D")
    x = result.coords["x"]
    handles = []
    loss_names = [n for n in result.surface_names() if n.endswith("_" + metrics[0]) and result.has_values(n)]
    acc_names = [n for n in result.surface_names() if len(metrics) > 1 and n.endswith("_" + metrics[1])
                 and result.has_values(n)]
    for n in loss_names:
        z = finite_masked(result.surfaces[n], n, result.path, log, result.done)
        (h,) = ax.plot(x, z, "-", color=SPLIT_COLORS.get(n.split("_")[0]), label=label_of(n))
        handles.append(h)
    ax.set_xlabel(result.axis_label("x"))
    ax.set_ylabel(label_of("_" + metrics[0]).strip() + (" (log scale)" if log else ""))
    if log:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if acc_names:
        ax2 = twin(ax)
        for n in acc_names:
            z = finite_masked(result.surfaces[n], n, result.path, done=result.done)
            (h,) = ax2.plot(x, z, "--", color=SPLIT_COLORS.get(n.split("_")[0]), label=label_of(n))
            handles.append(h)
        ax2.set_ylabel(label_of("_" + metrics[1]).strip())
    ax.axvline(0.0, color="0.6", lw=0.8, ls=":")
    value_limits(ax, opts)
    if handles:
        outside_legend(ax, handles)
    return handles


def draw_slices(ax, result: Result, surface: str | None = None, log: bool = False,
                opts: Options | None = None) -> list:
    """1D cuts of a 2D/3D surface through the grid point nearest the centre θ, one per axis (solid
    along x, dashed along y, dotted along z), for each split of the same metric."""
    name, _ = _surface(result, surface)
    metric = name.split("_", 1)[1]
    names = [n for n in result.surface_names() if n.split("_", 1)[-1] == metric and result.has_values(n)]
    center = result.center_index()
    styles = {"x": "-", "y": "--", "z": ":"}
    handles = []
    for n in names:
        z = finite_masked(result.surfaces[n], n, result.path, log, result.done)
        for ai, axis in enumerate(("x", "y", "z")[: result.ndim]):
            idx = list(center)
            idx[ai] = slice(None)
            others = ", ".join(f"{o}={result.coords[o][center[k]]:.3g}" for k, o in enumerate(("x", "y", "z")
                               [: result.ndim]) if o != axis)
            (h,) = ax.plot(result.coords[axis], z[tuple(idx)], styles[axis], color=SPLIT_COLORS.get(n.split("_")[0]),
                           label=f"{label_of(n)} along {axis} ({others})")
            handles.append(h)
    ax.set_xlabel("coordinate along the direction")
    ax.set_ylabel(label_of("_" + metric).strip() + (" (log scale)" if log else ""))
    if log:
        ax.set_yscale("log")
    ax.axvline(0.0, color="0.6", lw=0.8, ls=":")
    ax.grid(True, alpha=0.3)
    value_limits(ax, opts)
    outside_legend(ax, handles)
    return handles


# ---------------------------------------------------------------------------- 2D
def draw_heatmap(ax, result: Result, surface: str | None = None, opts: Options | None = None, colorbar: bool = True,
                 cmap: str | None = None):
    """Image of ``Z`` with x horizontal and y vertical: ``pcolormesh(x, y, Z.T)`` (cells centred on the
    grid points, so non-uniform grids are right too). Returns the QuadMesh."""
    opts = opts or Options()
    x, y = _need2d(result, "a heatmap")
    name, z = _surface(result, surface)
    zm = finite_masked(z, name, result.path, opts.log, result.done)
    lo, hi = value_range(zm, opts.vmin, opts.vmax, opts.log)
    norm = _norm_for(name, lo, hi, opts.log)
    mesh = ax.pcolormesh(x, y, zm.T, shading="nearest", norm=norm, cmap=cmap or opts.cmap or _cmap_for(name),
                         rasterized=True)
    _frame2d(ax, result, clip=False)
    if colorbar:
        _colorbar(ax, mesh, name, opts.log)
    return mesh


def draw_contour(ax, result: Result, surface: str | None = None, opts: Options | None = None, filled: bool = False,
                 colorbar: bool = True, label_levels: bool = True):
    """Contour lines (labelled with ``clabel``) or filled contours (with a colorbar) of ``Z.T`` over
    (x, y). Returns the ContourSet."""
    opts = opts or Options()
    x, y = _need2d(result, "a contour plot")
    if len(x) < 2 or len(y) < 2:
        raise LandscapeError(f"a contour plot needs at least 2 points along x and y; {result.path} has "
                             f"{len(x)}×{len(y)}: use `kind` heatmap")
    name, z = _surface(result, surface)
    zm = finite_masked(z, name, result.path, opts.log, result.done)
    lo, hi = value_range(zm, opts.vmin, opts.vmax, opts.log)
    levels = make_levels(lo, hi, opts.levels, opts.log)
    norm = _norm_for(name, lo, hi, opts.log)
    cmap = opts.cmap or _cmap_for(name)
    if filled:
        cs = ax.contourf(x, y, zm.T, levels=levels, norm=norm, cmap=cmap, extend=_extend(zm, lo, hi))
        if colorbar:
            _colorbar(ax, cs, name, opts.log)
    else:
        cs = ax.contour(x, y, zm.T, levels=levels, norm=norm, cmap=cmap, linewidths=1.0)
        if label_levels and len(cs.levels):
            step = max(1, len(cs.levels) // 8)
            ax.clabel(cs, cs.levels[::step], inline=True, fontsize=7, fmt=_level_fmt)
        if colorbar:
            _colorbar(ax, cs, name, opts.log)
    _mark_models(ax, result)
    _frame2d(ax, result)
    return cs


def _mark_models(ax, result: Result) -> None:
    """The centre θ as a star, or, for a plane through three models, each model labelled at its place."""
    if result.plane is not None and np.asarray(result.plane["coords"]).shape[-1] >= 2:
        labels = result.plane.get("labels") or ["A", "B", "C"]
        for lab, (px, py) in zip(labels, np.asarray(result.plane["coords"])[:, :2]):
            ax.plot([px], [py], marker="o", color="k", ms=6, ls="none")
            ax.annotate(str(lab), xy=(px, py), xytext=(4, 4), textcoords="offset points", fontsize=9,
                        weight="bold")
    else:
        ax.plot([0], [0], marker="*", color="k", ms=8, ls="none", label="θ (centre)")


def draw_surface3d(ax, result: Result, surface: str | None = None, opts: Options | None = None):
    """``plot_surface`` over the (x, y) grid on a 3D axes; a log scale plots log₁₀ Z (3D axes have no log
    scale). NaN/inf cells are left open."""
    opts = opts or Options()
    x, y = _need2d(result, "a 3D surface plot")
    name, z = _surface(result, surface)
    zm = finite_masked(z, name, result.path, opts.log, result.done)
    lo, hi = value_range(zm, opts.vmin, opts.vmax, opts.log)
    zz = np.clip(zm.filled(np.nan), lo, hi)
    zz[np.ma.getmaskarray(zm)] = np.nan
    if opts.log:
        zz, lo, hi = np.log10(zz), np.log10(lo), np.log10(hi)
    X, Y = np.meshgrid(x, y, indexing="ij")  # X[i,j]=x[i], Y[i,j]=y[j]: same indexing as Z
    # Colours per cell from the mean of its four corners, transparent where a corner is missing; the
    # missing vertices get a finite height only so the mesh stays drawable (their cells are invisible).
    # (Letting plot_surface drop NaN cells itself can shift the colours of the remaining ones.)
    missing = ~np.isfinite(zz)
    cell = 0.25 * (zz[:-1, :-1] + zz[1:, :-1] + zz[:-1, 1:] + zz[1:, 1:]) if min(zz.shape) > 1 else zz
    colors = np.zeros(zz.shape + (4,))
    rgba = colormaps[opts.cmap or _cmap_for(name)](Normalize(lo, hi)(np.nan_to_num(cell, nan=lo)))
    rgba[~np.isfinite(cell)] = 0.0
    colors[: cell.shape[0], : cell.shape[1]] = rgba
    filled = np.where(missing, np.nanmin(zz) if (~missing).any() else 0.0, zz)
    surf = ax.plot_surface(X, Y, filled, facecolors=colors, rstride=1, cstride=1, linewidth=0.2,
                           edgecolor=(0, 0, 0, 0.15), antialiased=True, shade=False)
    ax.set_zlim(lo, hi)
    ax.set_xlabel(result.axis_label("x"), labelpad=6)
    ax.set_ylabel(result.axis_label("y"), labelpad=6)
    ax.set_zlabel(("log₁₀ " if opts.log else "") + label_of(name), labelpad=6)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_major_locator(MaxNLocator(5))
    ax.view_init(elev=30 if opts.elev is None else opts.elev, azim=-60 if opts.azim is None else opts.azim)
    return surf


def draw_curvature(ax, result: Result, name: str, opts: Options | None = None):
    """A curvature map like any surface: λmax and |λmin/λmax| as heatmaps, λmin with a diverging map
    centred on 0 (negative = non-convex direction)."""
    return draw_heatmap(ax, result, name, opts)


# ---------------------------------------------------------------------------- helpers
def _norm_for(name: str, lo: float, hi: float, log: bool):
    if name.endswith("lambda_min") and not log and lo < 0 < hi:
        return TwoSlopeNorm(vcenter=0.0, vmin=lo, vmax=hi)
    return make_norm(lo, hi, log)


def _cmap_for(name: str) -> str:
    if name.endswith("lambda_min"):
        return "RdBu_r"
    if name.endswith("_acc"):
        return "viridis_r"
    return "viridis"


def _extend(zm, lo: float, hi: float) -> str:
    data = zm.compressed()
    if not data.size:
        return "neither"
    below, above = data.min() < lo, data.max() > hi
    return "both" if below and above else "min" if below else "max" if above else "neither"


def _level_fmt(v: float) -> str:
    return f"{v:.3g}"


def _frame2d(ax, result: Result, clip: bool = True) -> None:
    """Axis labels; limits at the outer grid points for contours (``clip``; a heatmap keeps its whole
    edge cells); equal scales when the two ranges are alike, so circles in weight space look round."""
    x, y = result.coords["x"], result.coords["y"]
    if clip:
        ax.set_xlim(x.min(), x.max()) if len(x) > 1 else None
        ax.set_ylim(y.min(), y.max()) if len(y) > 1 else None
    ax.set_xlabel(result.axis_label("x"))
    ax.set_ylabel(result.axis_label("y"))
    if len(x) > 1 and len(y) > 1:
        dx, dy = np.ptp(x), np.ptp(y)
        if dx > 0 and dy > 0 and (shared_units(result) or 2 / 3 <= dy / dx <= 3 / 2):
            ax.set_aspect("equal", adjustable="box")


def shared_units(result: Result) -> bool:
    """True when x and y are measured in the same units of weight space -- PCA components and the plane
    through three models (unit or equal-scale directions) --, so only an equal aspect shows distances
    truly (random filter-normalized directions have their own scales and keep a free aspect)."""
    kinds = {str(result.directions_meta.get(a, {}).get("kind")) for a in ("x", "y")}
    return result.plane is not None or bool(kinds & {"pca", "plane"})


# ---------------------------------------------------------------------------- whole figures
def surface_figure(result: Result, kind: str, surface: str | None = None, opts: Options | None = None):
    """One figure of ``kind`` (contour, contourf, heatmap, surface3d, line, volume, curvature), not saved."""
    opts = opts or Options()
    size = opts.figsize
    if kind == "line":
        fig = new_figure(*(size or (6.0, 4.0)))
        ax = fig.add_subplot()
        if result.ndim == 1:
            draw_line(ax, result, opts.log, opts=opts)
        else:
            draw_slices(ax, result, surface, opts.log, opts=opts)
        suptitle(fig, opts.title or result.title())
    elif kind in ("contour", "contourf", "heatmap"):
        fig = new_figure(*(size or (6.0, 5.0)))
        ax = fig.add_subplot()
        if kind == "heatmap":
            draw_heatmap(ax, result, surface, opts)
        else:
            draw_contour(ax, result, surface, opts, filled=kind == "contourf")
        suptitle(fig, opts.title or result.title())
        ax.set_title(label_of(surface or result.default_surface() or ""))
    elif kind == "surface3d":
        fig = new_figure(*(size or (6.5, 5.5)))
        ax = fig.add_subplot(projection="3d")
        draw_surface3d(ax, result, surface, opts)
        suptitle(fig, opts.title or result.title())
    elif kind == "volume":
        fig = _volume_figure(result, surface, opts)
    elif kind == "curvature":
        fig = _curvature_figure(result, opts)
    else:
        raise LandscapeError(f"unknown surface plot kind {kind!r}")
    return fig


def plot_surface(result: Result, kind: str, path: str, surface: str | None = None, opts: Options | None = None) -> str:
    """One figure of ``kind`` saved to ``path``; returns ``path``."""
    opts = opts or Options()
    with style():
        return save(surface_figure(result, kind, surface, opts), path, opts.dpi)


def volume_slices(nz: int, most: int = 9) -> list[int]:
    """Up to ``most`` z indices evenly spread over ``nz`` (both ends included)."""
    if nz <= most:
        return list(range(nz))
    return sorted({int(round(v)) for v in np.linspace(0, nz - 1, most)})


def _volume_figure(result: Result, surface: str | None, opts: Options):
    if result.ndim != 3:
        raise LandscapeError(f"a volume plot needs a 3D surface; {result.path} is {result.ndim}D")
    name, z = _surface(result, surface)
    x, y, zc = result.coords["x"], result.coords["y"], result.coords["z"]
    zm = finite_masked(z, name, result.path, opts.log, result.done)
    lo, hi = value_range(zm, opts.vmin, opts.vmax, opts.log)
    norm = _norm_for(name, lo, hi, opts.log)
    ks = volume_slices(len(zc))
    ncols = min(3, len(ks))
    nrows = -(-len(ks) // ncols)
    fig = new_figure(*(opts.figsize or (3.2 * ncols + 1.0, 2.9 * nrows + 0.6)))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    mesh = None
    for ax, k in zip(axes.flat, ks):
        mesh = ax.pcolormesh(x, y, zm[:, :, k].T, shading="nearest", norm=norm, cmap=opts.cmap or _cmap_for(name),
                             rasterized=True)
        ax.set_title(f"γ = {zc[k]:.3g}" + ("  (centre)" if k == result.center_index()[2] else ""))
    for ax in axes.flat[len(ks):]:
        ax.set_visible(False)
    for ax in axes[-1, :]:
        ax.set_xlabel(result.axis_label("x"))
    for ax in axes[:, 0]:
        ax.set_ylabel(result.axis_label("y"))
    cb = fig.colorbar(mesh, ax=[a for a in axes.flat[: len(ks)]], shrink=0.9)
    cb.set_label(_cbar_label(name, opts.log))
    suptitle(fig, opts.title or result.title(f"{label_of(name)}, slices along z"))
    return fig


def curvature_surfaces(result: Result) -> list[str]:
    return [n for n in CURVATURE_SURFACES if result.has_values(n)] + sorted(
        n for n in result.surfaces if n.split("_", 1)[-1] in ("lambda_max", "lambda_min", "convexity")
        and n not in CURVATURE_SURFACES and result.has_values(n))


def _curvature_figure(result: Result, opts: Options):
    names = curvature_surfaces(result)
    if not names:
        raise LandscapeError(f"{result.path} has no curvature maps (train_lambda_max, ...); make them with "
                             "'landscape surface ... --curvature-map'")
    if result.ndim == 1:
        fig = new_figure(*(opts.figsize or (6.0, 4.0)))
        ax = fig.add_subplot()
        x = result.coords["x"]
        handles = []
        for n in names:
            if n.endswith("convexity"):
                continue
            (h,) = ax.plot(x, finite_masked(result.surfaces[n], n, result.path, done=result.done), label=label_of(n))
            handles.append(h)
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_xlabel(result.axis_label("x"))
        ax.set_ylabel("Hessian eigenvalue")
        conv = [n for n in names if n.endswith("convexity")]
        if conv:
            ax2 = twin(ax)
            (h,) = ax2.plot(x, finite_masked(result.surfaces[conv[0]], conv[0], result.path, done=result.done), "k--",
                            label=label_of(conv[0]))
            handles.append(h)
            ax2.set_ylabel(label_of(conv[0]))
        outside_legend(ax, handles)
        ax.grid(True, alpha=0.3)
    elif result.ndim == 2:
        fig = new_figure(*(opts.figsize or (4.6 * len(names), 4.2)))
        axes = fig.subplots(1, len(names), squeeze=False)[0]
        for ax, n in zip(axes, names):
            draw_curvature(ax, result, n, Options(log=False, levels=opts.levels, cmap=opts.cmap))
            ax.set_title(label_of(n))
    else:
        raise LandscapeError("curvature maps of a 3D volume: plot them one at a time with `kind` volume "
                             "and `surface` train_lambda_max")
    suptitle(fig, opts.title or result.title("curvature maps (Li et al. 2018, Fig. 7)"))
    return fig
