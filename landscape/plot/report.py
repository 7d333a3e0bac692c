"""One figure that sums up a result file, made from the file alone (no model, no data).

Panels, each only when the file holds what it needs: the 2D loss contour (with the training
trajectory over it when there is one), the 3D surface, 1D curves (the 1D surface, or cuts through the
centre of a 2D/3D grid), the centre slice of a 3D volume, the convexity map, the interpolation path, the
Hessian's spectral density, the per-layer conditioning (Huang et al. 2020) and, across the bottom, a
table of /metrics with the parameters each was computed with. Saved as PNG (to look at) and PDF (to
print) side by side.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ..errors import LandscapeError
from ..results import Result, label_of
from .common import new_figure, outside_legend, save, style, suptitle, twin
from .kinds import available_kinds, check_options
from .path import draw_path, draw_trajectory, has_trajectory
from .spectrum import draw_density, has_spectrum
from .surface import Options, curvature_surfaces, draw_contour, draw_heatmap, draw_line, draw_slices, draw_surface3d
from .track import track_panels

Panel = tuple[str, str, Callable]  # (title, projection or "", draw(ax))


def _contour_options(r: Result, surf: str, opts: Options) -> Options:
    """The user's options, with a log scale for a loss spanning more than 1.5 decades: linear levels
    would all crowd the walls and leave the basin around θ -- the part worth seeing -- empty."""
    if opts.log or opts.vmin is not None or opts.vmax is not None or not surf.endswith("_loss"):
        return opts
    z = r.surfaces[surf]
    z = z[np.isfinite(z)]
    if z.size and z.min() > 0 and z.max() / z.min() > 10 ** 1.5:
        return replace(opts, log=True)
    return opts


def _panels(r: Result, opts: Options) -> list[Panel]:
    panels: list[Panel] = []
    surf = r.default_surface()
    has_surf = surf is not None and r.has_values(surf)
    copts = _contour_options(r, surf, opts) if has_surf else opts
    if r.ndim == 2 and has_surf and min(r.shape) >= 2:
        if has_trajectory(r):
            panels.append((f"{label_of(surf)} with the training trajectory", "",
                           lambda ax: draw_trajectory(ax, r, surf, copts)))
        else:
            panels.append((f"{label_of(surf)}, contours" + (" (log levels)" if copts.log else ""), "",
                           lambda ax: draw_contour(ax, r, surf, copts)))
        panels.append((f"{label_of(surf)}, 3D", "3d", lambda ax: draw_surface3d(ax, r, surf, opts)))
    if r.ndim == 1 and any(r.has_values(n) for n in r.surfaces):
        panels.append(("1D surface", "", lambda ax: draw_line(ax, r, opts.log, opts=opts)))
    elif r.ndim >= 2 and has_surf:
        panels.append(("1D cuts through the centre", "", lambda ax: draw_slices(ax, r, surf, opts.log, opts=opts)))
    if r.ndim == 3 and has_surf:
        k = r.center_index()[2]
        panels.append((f"{label_of(surf)} at γ = {r.coords['z'][k]:.3g}", "",
                       lambda ax: _volume_center(ax, r, surf, opts)))
    if r.ndim == 2:
        conv = [n for n in curvature_surfaces(r) if n.endswith("convexity")]
        if conv:
            panels.append(("convexity map |λmin/λmax|", "",
                           lambda ax: draw_heatmap(ax, r, conv[0], Options(cmap=opts.cmap))))
    if r.paths:
        name = "interpolation" if "interpolation" in r.paths else next(iter(r.paths))
        if "alpha" in r.paths[name]:
            panels.append((f"linear path '{name}'", "", lambda ax: draw_path(ax, r, name, opts.log, opts)))
    if has_spectrum(r):
        panels.append(("Hessian spectral density", "", lambda ax: draw_density(ax, r)))
    if _layer_quantities(r):
        panels.append(("per-layer conditioning (K-FAC)", "", lambda ax: draw_layerwise(ax, r)))
    panels += track_panels(r)  # type: ignore[arg-type]
    return panels


def _volume_center(ax, r: Result, surf: str, opts: Options):
    """The z = centre slice of a 3D volume, drawn as a 2D heatmap through a 2D view of the result."""
    k = r.center_index()[2]
    view = Result(path=r.path, format=r.format, format_version=r.format_version, kind=r.kind, ndim=2,
                  coords={"x": r.coords["x"], "y": r.coords["y"]}, surfaces={surf: r.surfaces[surf][:, :, k]},
                  attrs=r.attrs, config=r.config, directions_meta=r.directions_meta)
    return draw_heatmap(ax, view, surf, opts)


def _layer_quantities(r: Result) -> dict[str, str]:
    lw = r.layerwise or {}
    picks = {}
    for q, label in (("sigma_x_lambda_max", "λmax(Σx) (inputs)"), ("sigma_delta_lambda_max", "λmax(Σδ) (gradients)")):
        if q in lw:
            picks[q] = label
    for q in ("kron_kappa_p90", "kron_kappa", "sigma_x_kappa"):
        if q in lw:
            picks[q] = "κ" + ("₉₀" if q.endswith("p90") else "") + ("(F)" if q.startswith("kron") else "(Σx)")
            break
    return picks


def draw_layerwise(ax, r: Result) -> None:
    """λmax of Σx and Σδ per layer on a log axis (solid), and the condition number κ of the K-FAC block
    on a second log axis (dashed): without BatchNorm the λmax fall exponentially with depth."""
    picks = _layer_quantities(r)
    lw = r.layerwise
    layers = list(lw.get("layers", []))
    handles = []
    ax2 = None
    for q, label in picks.items():
        v = np.asarray(lw[q], dtype=float)
        depth = np.arange(1, len(v) + 1)
        v = np.where(np.isfinite(v) & (v > 0), v, np.nan)
        if "kappa" in q:
            ax2 = ax2 or twin(ax)
            (h,) = ax2.plot(depth, v, "s--", color="0.3", ms=4, label=label)
            ax2.set_yscale("log")
            ax2.set_ylabel("condition number κ (log)")
        else:
            (h,) = ax.plot(depth, v, "o-", ms=4, label=label)
        handles.append(h)
    ax.set_yscale("log")
    ax.set_ylabel("largest eigenvalue (log)")
    ax.set_xlabel("layer")
    n = max((len(np.asarray(lw[q])) for q in picks), default=0)
    ax.set_xticks(np.arange(1, n + 1))
    if layers and len(layers) == n and n <= 12:
        ax.set_xticklabels([_short_layer(s) for s in layers], rotation=45, ha="right", fontsize=7)
    ax.grid(True, alpha=0.3)
    outside_legend(ax, handles, fontsize=7, below=0.5 + (0.45 if layers and len(layers) == n and n <= 12 else 0))


def _short_layer(name: str, n: int = 14) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1):]


# ---------------------------------------------------------------------------- metrics table
def metric_rows(r: Result, width: int | None = None) -> list[list[str]]:
    """``[name, value, parameters]`` for every scalar-ish metric (arrays stored as extras of another metric,
    attribute ``of``, are summarized by their parent). Parameters are given in full; with ``width`` they
    are wrapped (at commas) into lines of at most that many characters, never cut."""
    rows = []
    for name, (v, attrs) in r.metrics.items():
        if "of" in attrs:
            continue
        if isinstance(v, np.ndarray):
            flat = v.reshape(-1)
            value = ", ".join(f"{float(x):.4g}" for x in flat[:3]) + (" …" if flat.size > 3 else "")
        elif isinstance(v, float | int | np.floating):
            value = f"{float(v):.4g}"
        else:
            value = str(v)
        params = ", ".join(f"{k}={full_text(x)}" for k, x in attrs.items())
        if width:
            params = "\n".join(textwrap.wrap(params, width, break_long_words=True, break_on_hyphens=False))
        rows.append([name, value, params])
    return rows


def full_text(v) -> str:
    """A parameter value in full (numbers to 6 significant digits; lists and dicts whole)."""
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, float | np.floating):
        return f"{float(v):.6g}"
    if isinstance(v, list | tuple | np.ndarray):
        items = list(np.asarray(v).reshape(-1)) if isinstance(v, np.ndarray) else list(v)
        return "[" + ", ".join(full_text(x) for x in items) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {full_text(x)}" for k, x in v.items()) + "}"
    return str(v.item() if isinstance(v, np.generic) else v)


def _row_lines(row: list[str]) -> int:
    return max(len(c.split("\n")) for c in row)


def _draw_table(ax, rows: list[list[str]]) -> None:
    """The metrics with every parameter (wrapped rows grow in height instead of being cut)."""
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=["metric", "value", "parameters"], loc="upper center",
                     cellLoc="left", colLoc="left", colWidths=[0.2, 0.12, 0.68])
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    lines = [1] + [_row_lines(r) for r in rows]
    unit = 1.0 / (sum(lines) + 0.5)
    for (row, _), cell in table.get_celld().items():
        cell.set_height(unit * lines[row])
        cell.set_edgecolor("0.8")
        if row == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#eeeeee")
    ax.set_title("sharpness metrics (/metrics)", loc="left")


# ---------------------------------------------------------------------------- the figure
def report_paths(result_path: str, out: str | None = None, formats: tuple[str, ...] = ("png", "pdf")) -> list[str]:
    """``FILE_report.png`` and ``.pdf`` beside the input, or ``out`` (its extension, if any, is replaced)."""
    base = os.path.splitext(out)[0] if out else os.path.splitext(result_path)[0] + "_report"
    return [f"{base}.{fmt}" for fmt in formats]


def report_options(result: Result, opts: Options) -> None:
    """Refuse an option that no panel of this report can use (each applies to the panels that can)."""
    kinds = [k for k in available_kinds(result) if k not in ("contourf", "heatmap", "curvature")]
    if kinds:
        check_options(kinds, opts, every=False)


def report_figure(result: Result, opts: Options | None = None):
    """The report of ``result`` as a matplotlib Figure (not saved). Only the panels the file can fill are
    laid out: a last row with fewer panels is centred, no empty axes are drawn."""
    opts = opts or Options()
    report_options(result, opts)
    panels = _panels(result, opts)
    rows = metric_rows(result, width=110)
    if not panels and not rows:
        raise LandscapeError(f"{result.path} holds nothing to report (no surface, path, curvature, metrics, track or "
                             f"layer-wise data); see 'landscape info {result.path}'")
    n = len(panels)
    ncols = 1 if n <= 1 else 2 if n in (2, 4) else 3
    nrows = -(-n // ncols) if panels else 0
    table_h = 0.5 + 0.17 * sum(_row_lines(r) + 0.5 for r in [["h"], *rows]) if rows else 0.0
    width = 5.2 * ncols if panels else 10.0
    height = 4.6 * nrows + table_h + 0.7
    fig = new_figure(*(opts.figsize or (max(width, 10.0 if rows else width), height)))
    ratios = [4.6] * nrows + ([table_h] if rows else [])
    gs = fig.add_gridspec(len(ratios), 2 * ncols, height_ratios=ratios)
    for i, (title, proj, draw) in enumerate(panels):
        row, col = divmod(i, ncols)
        in_row = min(ncols, n - row * ncols)
        start = 2 * col + (ncols - in_row)  # half-column steps: a short last row sits in the middle
        ax = fig.add_subplot(gs[row, start:start + 2], **({"projection": proj} if proj else {}))
        draw(ax)
        ax.set_title(title)
    if rows:
        _draw_table(fig.add_subplot(gs[-1, :]), rows)
    suptitle(fig, opts.title or result.title("report"))
    return fig


def make_report(result: Result, out: str | None = None, opts: Options | None = None,
                formats: tuple[str, ...] = ("png", "pdf")) -> list[str]:
    """Draw the report of ``result`` and save it in each of ``formats``; returns the paths."""
    opts = opts or Options()
    with style():
        fig = report_figure(result, opts)
        paths = report_paths(result.path, out, formats)
        save(fig, paths, opts.dpi)
    return paths
