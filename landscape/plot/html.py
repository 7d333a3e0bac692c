"""``landscape view``: one self-contained, interactive HTML page of everything a result file holds.

The page is made with plotly (``pip install 'landscape[html]'``): every figure is a plotly.js chart
whose data are written into the page as plain JSON lists (NaN as ``null``: a point not computed is a
hole), and plotly.js itself is inlined, so the page opens offline, from a mail attachment or a
cluster's scratch folder, in any browser. Sections, each only when the file has what it needs:

- a 2D surface as a rotatable 3D mesh and as contours; hovering a point shows its coordinates and the
  value of every surface there (loss, accuracy, curvature); a menu switches the surface shown;
- 1D curves (a 1D surface, or cuts through the centre of a 2D/3D grid);
- a 3D volume as slices with one slider per axis, and as isosurfaces;
- each interpolation path with its bumps and barrier marked;
- the training trajectory over the contours of its PCA plane (equal aspect: PCA axes share units);
- the Hessian's spectral density on a log axis with the top eigenvalues;
- curvature maps, per-layer conditioning, a training track (``/track``: every 1D series against the
  step, every checkpoints × grid array as a heatmap; whatever is not recognised is listed, not fatal);
- the metrics with all their parameters, and ``landscape info``'s description of the file.

Figure ids (``surface3d``, ``contour``, ``volume-z``, ...) are stable: the browser test reads the data
back from them. ``document.body.dataset.rendered`` is set to the number of figures once all are drawn.
"""

from __future__ import annotations

import html
import json
import math
import os
from typing import Any

import h5py
import numpy as np
from matplotlib import colormaps

from ..errors import LandscapeError
from ..results import H5_KW, Result, describe, label_of
from .kinds import available_kinds, check_options
from .options import Options
from .path import _at, _loss_key, has_trajectory, path_bumps
from .report import full_text
from .spectrum import FLOOR, has_spectrum
from .surface import curvature_surfaces, shared_units

#: pixels per inch for ``--figsize`` (CSS pixels)
PX = 96


def _need_plotly():
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise LandscapeError("the HTML page needs plotly: pip install 'landscape[html]' (or pip install plotly)") \
            from None


def _list(a) -> Any:
    """An array as nested lists with NaN/inf as None (JSON null: plotly leaves a hole)."""
    a = np.asarray(a, dtype=np.float64)
    out = np.where(np.isfinite(a), a, np.nan).astype(object)
    out[~np.isfinite(a)] = None
    return out.tolist()


def colorscale(name: str | None, default: str = "viridis") -> list:
    """A matplotlib colormap as a plotly colorscale, so ``--cmap`` means the same in both."""
    cmap = colormaps[name or default]
    return [[float(t), "rgb({:.0f},{:.0f},{:.0f})".format(*(255 * np.asarray(cmap(t)[:3])))]
            for t in np.linspace(0, 1, 11)]


def _default_cmap(name: str) -> str:
    return "RdBu_r" if name.endswith("lambda_min") else "viridis_r" if name.endswith("_acc") else "viridis"


def _size(opts: Options, default: tuple[float, float]) -> dict:
    w, h = opts.figsize or default
    return {"width": int(w * PX), "height": int(h * PX)} if opts.figsize else {"height": int(h * PX)}


def _scale(z: np.ndarray, opts: Options) -> tuple[np.ndarray, str]:
    """Values as drawn: log₁₀ with ``--log`` (non-positive → hole), clipped to ``--vmin/--vmax``."""
    z = np.asarray(z, dtype=np.float64)
    if opts.log:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(z > 0, np.log10(z), np.nan)
        return z, "log₁₀ "
    return z, ""


def _limits(opts: Options) -> tuple[float | None, float | None]:
    lo, hi = opts.vmin, opts.vmax
    if opts.log:
        lo = math.log10(lo) if lo is not None and lo > 0 else None
        hi = math.log10(hi) if hi is not None and hi > 0 else None
    return lo, hi


def _camera(opts: Options) -> dict:
    elev = 30.0 if opts.elev is None else opts.elev
    azim = -60.0 if opts.azim is None else opts.azim
    e, a, r = math.radians(elev), math.radians(azim), 2.2
    return {"eye": {"x": r * math.cos(e) * math.cos(a), "y": r * math.cos(e) * math.sin(a), "z": r * math.sin(e)}}


def _hover_surfaces(r: Result) -> list[str]:
    return [n for n in r.surface_names() if r.has_values(n)]


def _customdata(r: Result, names: list[str], transpose: bool = True) -> list:
    """Per grid point the values of every surface, in the (row = y, column = x) order of plotly's 2D traces."""
    stack = np.stack([r.surfaces[n] for n in names], axis=-1)  # (nx, ny, k)
    if transpose:
        stack = np.transpose(stack, (1, 0, 2))
    return _list(stack)


def _hovertemplate(r: Result, names: list[str], xa: str = "x", ya: str = "y") -> str:
    lines = [f"{r.axis_label(xa).split(' (')[0]} = %{{x:.4g}}", f"{r.axis_label(ya).split(' (')[0]} = %{{y:.4g}}"]
    lines += [f"{label_of(n)} = %{{customdata[{i}]:.6g}}" for i, n in enumerate(names)]
    return "<br>".join(lines) + "<extra></extra>"


# ---------------------------------------------------------------------------- 2D
def _surface_menu(r: Result, opts: Options, key: str) -> list:
    """A drop-down that swaps the surface drawn (loss, accuracy, curvature maps) in a 2D figure."""
    names = _hover_surfaces(r)
    if len(names) < 2:
        return []
    buttons = []
    for n in names:
        z, pre = _scale(r.surfaces[n], opts)
        buttons.append({"label": label_of(n), "method": "restyle",
                        "args": [{"z": [_list(z.T)], key: pre + label_of(n),
                                  "colorscale": [colorscale(opts.cmap, _default_cmap(n))]}, [0]]})
    return [{"buttons": buttons, "x": 0.0, "y": 1.12, "xanchor": "left", "yanchor": "top", "showactive": True}]


def fig_surface3d(r: Result, opts: Options) -> dict:
    name = r.default_surface()
    names = _hover_surfaces(r)
    z, pre = _scale(r.surfaces[name], opts)
    lo, hi = _limits(opts)
    trace = {"type": "surface", "x": _list(r.coords["x"]), "y": _list(r.coords["y"]), "z": _list(z.T),
             "customdata": _customdata(r, names), "hovertemplate": _hovertemplate(r, names),
             "colorscale": colorscale(opts.cmap, _default_cmap(name)), "cmin": lo, "cmax": hi,
             "colorbar": {"title": {"text": pre + label_of(name)}}, "name": name,
             "contours": {"z": {"show": True, "usecolormap": True, "project": {"z": True}}}}
    scene = {"xaxis": {"title": {"text": r.axis_label("x")}}, "yaxis": {"title": {"text": r.axis_label("y")}},
             "zaxis": {"title": {"text": pre + label_of(name)}, "range": [lo, hi] if lo is not None
                       and hi is not None else None}, "camera": _camera(opts)}
    if shared_units(r):
        scene["aspectmode"] = "manual"  # PCA / plane axes share units: keep their true proportion
        dx, dy = np.ptp(r.coords["x"]), np.ptp(r.coords["y"])
        scene["aspectratio"] = {"x": 1.4, "y": 1.4 * float(dy / dx) if dx else 1.4, "z": 0.8}
    layout = {"scene": scene, "updatemenus": _surface_menu(r, opts, "colorbar.title.text"),
              "margin": {"l": 0, "r": 0, "t": 40, "b": 0}, **_size(opts, (7.0, 6.0))}
    return {"data": [trace], "layout": layout}


def _equal_aspect(r: Result, layout: dict) -> None:
    x, y = r.coords["x"], r.coords["y"]
    dx, dy = np.ptp(x), np.ptp(y)
    if dx > 0 and dy > 0 and (shared_units(r) or 2 / 3 <= dy / dx <= 3 / 2):
        layout["yaxis"].update(scaleanchor="x", scaleratio=1, constrain="domain")
        layout["xaxis"]["constrain"] = "domain"  # shrink the plot area, not widen the range


def fig_contour(r: Result, opts: Options, trajectory: bool = False) -> dict:
    name = r.default_surface()
    names = _hover_surfaces(r)
    z, pre = _scale(r.surfaces[name], opts)
    lo, hi = _limits(opts)
    fin = z[np.isfinite(z)]
    a = lo if lo is not None else float(fin.min())
    b = hi if hi is not None else float(fin.max())
    contours = {"start": a, "end": b, "size": (b - a) / max(opts.levels - 1, 1) if b > a else 1.0,
                "showlabels": True, "labelfont": {"size": 9, "color": "white"}}
    data = [{"type": "contour", "x": _list(r.coords["x"]), "y": _list(r.coords["y"]), "z": _list(z.T),
             "customdata": _customdata(r, names), "hovertemplate": _hovertemplate(r, names),
             "colorscale": colorscale(opts.cmap, _default_cmap(name)), "zmin": lo, "zmax": hi,
             "autocontour": False, "contours": contours, "line": {"width": 0.6},
             "colorbar": {"title": {"text": pre + label_of(name)}}, "name": name}]
    if r.plane is not None and np.asarray(r.plane["coords"]).shape[-1] >= 2:
        pc = np.asarray(r.plane["coords"])[:, :2]
        labels = r.plane.get("labels") or ["A", "B", "C"]
        data.append({"type": "scatter", "x": _list(pc[:, 0]), "y": _list(pc[:, 1]), "mode": "markers+text",
                     "text": [str(s) for s in labels], "textposition": "top right", "name": "models",
                     "marker": {"color": "black", "size": 9}})
    else:
        data.append({"type": "scatter", "x": [0.0], "y": [0.0], "mode": "markers", "name": "θ (centre)",
                     "marker": {"symbol": "star", "color": "black", "size": 12}})
    if trajectory:
        tc = np.asarray(r.trajectory["coords"], dtype=float)
        data.append({"type": "scatter", "x": _list(tc[:, 0]), "y": _list(tc[:, 1]), "mode": "lines+markers",
                     "name": "training trajectory (checkpoints in order)",
                     "marker": {"color": list(range(len(tc))), "colorscale": "YlOrRd", "size": 8,
                                "line": {"color": "black", "width": 0.5}},
                     "line": {"color": "#d62728", "width": 1.5},
                     "hovertemplate": "checkpoint %{pointNumber}<br>(%{x:.4g}, %{y:.4g})<extra></extra>"})
    layout = {"xaxis": {"title": {"text": r.axis_label("x")}}, "yaxis": {"title": {"text": r.axis_label("y")}},
              "updatemenus": _surface_menu(r, opts, "colorbar.title.text"),
              "legend": {"orientation": "h", "y": -0.18}, "margin": {"t": 40}, **_size(opts, (7.0, 6.0))}
    _equal_aspect(r, layout)
    return {"data": data, "layout": layout}


def fig_heatmap(r: Result, name: str, opts: Options) -> dict:
    names = _hover_surfaces(r)
    z = r.surfaces[name]
    cmap = opts.cmap or _default_cmap(name)
    trace = {"type": "heatmap", "x": _list(r.coords["x"]), "y": _list(r.coords["y"]), "z": _list(z.T),
             "customdata": _customdata(r, names), "hovertemplate": _hovertemplate(r, names),
             "colorscale": colorscale(cmap), "colorbar": {"title": {"text": label_of(name)}}}
    if name.endswith("lambda_min"):
        m = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
        trace.update(zmid=0.0, zmin=-m, zmax=m)
    layout = {"title": {"text": label_of(name)}, "xaxis": {"title": {"text": r.axis_label("x")}},
              "yaxis": {"title": {"text": r.axis_label("y")}}, **_size(opts, (5.5, 4.6))}
    _equal_aspect(r, layout)
    return {"data": [trace], "layout": layout}


# ---------------------------------------------------------------------------- 1D
def _ylog(opts: Options, title: str) -> dict:
    ax: dict = {"title": {"text": title}}
    if opts.log:
        ax["type"] = "log"
    if opts.vmin is not None or opts.vmax is not None:
        lo, hi = _limits(opts)
        ax["range"] = [lo, hi]
        ax["autorange"] = False if lo is not None and hi is not None else True
    return ax


def fig_lines(r: Result, opts: Options) -> dict:
    """The 1D surface (ndim 1) or the cuts through the centre of a 2D/3D grid, every surface with values."""
    data = []
    colors = {"train": "#1f77b4", "test": "#d62728"}
    acc_colors = {"train": "#2ca02c", "test": "#ff7f0e"}  # cuts are told apart by dash: metrics by colour
    if r.ndim == 1:
        for n in _hover_surfaces(r):
            acc = not n.endswith("_loss")
            data.append({"type": "scatter", "x": _list(r.coords["x"]), "y": _list(r.surfaces[n]), "name": label_of(n),
                         "mode": "lines", "yaxis": "y2" if acc else "y",
                         "line": {"color": colors.get(n.split("_")[0]), "dash": "dash" if acc else "solid"}})
        xtitle = r.axis_label("x")
    else:
        center = r.center_index()
        styles = {"x": "solid", "y": "dash", "z": "dot"}
        for n in _hover_surfaces(r):
            acc = not n.endswith("_loss")
            for ai, axis in enumerate("xyz"[: r.ndim]):
                idx = list(center)
                idx[ai] = slice(None)
                data.append({"type": "scatter", "x": _list(r.coords[axis]), "y": _list(r.surfaces[n][tuple(idx)]),
                             "name": f"{label_of(n)} along {axis}", "mode": "lines", "yaxis": "y2" if acc else "y",
                             "visible": True if n.endswith("_loss") or n.endswith("_acc") else "legendonly",
                             "line": {"color": (colors if not acc else acc_colors).get(n.split("_")[0]),
                                      "dash": styles[axis]}})
        xtitle = "coordinate along the direction (others at the centre)"
    layout = {"xaxis": {"title": {"text": xtitle}}, "yaxis": _ylog(opts, "loss"),
              "yaxis2": {"title": {"text": "accuracy / other"}, "overlaying": "y", "side": "right",
                         "showgrid": False},
              "legend": {"orientation": "h", "y": -0.25}, **_size(opts, (8.0, 4.6))}
    return {"data": data, "layout": layout}


# ---------------------------------------------------------------------------- 3D volume
def fig_volume_slices(r: Result, axis: str, opts: Options) -> dict:
    """Slices of a 3D volume perpendicular to ``axis`` with a slider over ``axis``'s coordinates."""
    name = r.default_surface()
    vol, pre = _scale(r.surfaces[name], opts)
    ai = "xyz".index(axis)
    hx, hy = [a for a in "xyz" if a != axis]
    k0 = r.center_index()[ai]

    def plane(k: int) -> list:
        s = np.take(vol, k, axis=ai)  # (n_hx, n_hy)
        return _list(s.T)

    lo, hi = _limits(opts)
    fin = vol[np.isfinite(vol)]
    lo = float(fin.min()) if lo is None and fin.size else lo
    hi = float(fin.max()) if hi is None and fin.size else hi
    trace = {"type": "heatmap", "x": _list(r.coords[hx]), "y": _list(r.coords[hy]), "z": plane(k0),
             "colorscale": colorscale(opts.cmap, _default_cmap(name)), "zmin": lo, "zmax": hi,
             "colorbar": {"title": {"text": pre + label_of(name)}},
             "hovertemplate": f"{hx} = %{{x:.4g}}<br>{hy} = %{{y:.4g}}<br>{pre}{label_of(name)} = %{{z:.6g}}"
                              "<extra></extra>"}
    coord = r.coords[axis]
    steps = [{"label": f"{c:.3g}", "method": "restyle", "args": [{"z": [plane(k)]}, [0]]} for k, c in enumerate(coord)]
    layout = {"xaxis": {"title": {"text": r.axis_label(hx)}}, "yaxis": {"title": {"text": r.axis_label(hy)}},
              "sliders": [{"active": k0, "steps": steps, "currentvalue": {"prefix": f"{axis} = "},
                           "pad": {"t": 50}}], "margin": {"t": 30}, **_size(opts, (6.0, 5.6))}
    return {"data": [trace], "layout": layout}


def fig_isosurface(r: Result, opts: Options) -> dict:
    name = r.default_surface()
    vol, pre = _scale(r.surfaces[name], opts)
    X, Y, Z = np.meshgrid(r.coords["x"], r.coords["y"], r.coords["z"], indexing="ij")
    fin = vol[np.isfinite(vol)]
    lo, hi = _limits(opts)
    lo = float(np.percentile(fin, 5)) if lo is None else lo
    hi = float(np.percentile(fin, 60)) if hi is None else hi
    trace = {"type": "isosurface", "x": _list(X.ravel()), "y": _list(Y.ravel()), "z": _list(Z.ravel()),
             "value": _list(np.where(np.isfinite(vol), vol, np.nanmax(fin) if fin.size else 0).ravel()),
             "isomin": lo, "isomax": hi, "surface": {"count": 4}, "caps": {"x": {"show": False},
                                                                           "y": {"show": False},
                                                                           "z": {"show": False}},
             "colorscale": colorscale(opts.cmap, _default_cmap(name)), "opacity": 0.6,
             "colorbar": {"title": {"text": pre + label_of(name)}}}
    layout = {"scene": {"xaxis": {"title": {"text": "x"}}, "yaxis": {"title": {"text": "y"}},
                        "zaxis": {"title": {"text": "z"}}, "camera": _camera(opts)},
              "margin": {"l": 0, "r": 0, "t": 30, "b": 0}, **_size(opts, (6.5, 6.0))}
    return {"data": [trace], "layout": layout}


# ---------------------------------------------------------------------------- path, spectrum, layers
def fig_path(r: Result, name: str, opts: Options) -> dict:
    p = r.paths[name]
    alpha = np.asarray(p["alpha"], dtype=float)
    colors = {"train": "#1f77b4", "test": "#d62728"}
    data, shapes, notes = [], [], []
    for key in sorted((k for k in p if isinstance(p[k], np.ndarray) and k.endswith(("_loss", "_acc"))
                       and np.shape(p[k]) == alpha.shape), key=lambda k: (k.endswith("_acc"), k)):
        acc = key.endswith("_acc")
        data.append({"type": "scatter", "x": _list(alpha), "y": _list(p[key]), "name": label_of(key),
                     "mode": "lines", "yaxis": "y2" if acc else "y",
                     "line": {"color": colors.get(key.split("_")[0]), "dash": "dash" if acc else "solid"}})
    for a0 in (0.0, 1.0):
        shapes.append({"type": "line", "x0": a0, "x1": a0, "yref": "paper", "y0": 0, "y1": 1,
                       "line": {"color": "gray", "dash": "dot", "width": 1}})
        notes.append({"x": a0, "yref": "paper", "y": 1.0, "text": "θ₀" if a0 == 0 else "θ₁", "showarrow": False,
                      "yanchor": "bottom"})
    key = _loss_key(p)
    if key is not None:
        loss = np.asarray(p[key], dtype=float)
        bumps = path_bumps(p, alpha, loss)
        pts = [(float(b[1]), _at(alpha, loss, float(b[1])), float(b[2])) for b in bumps if len(b) >= 3]
        if pts:
            data.append({"type": "scatter", "x": [q[0] for q in pts], "y": [q[1] for q in pts], "mode": "markers",
                         "name": "bumps (peak)", "marker": {"symbol": "triangle-down", "size": 11, "color": "#ff7f0e"},
                         "customdata": [q[2] for q in pts],
                         "hovertemplate": "bump at α=%{x:.3g}<br>height Δ=%{customdata:.4g}<extra></extra>"})
        inside = (alpha >= 0) & (alpha <= 1) & np.isfinite(loss)
        if inside.any() and alpha.min() <= 0 and alpha.max() >= 1:
            ends = max(_at(alpha, loss, 0.0), _at(alpha, loss, 1.0))
            j = int(np.flatnonzero(inside)[np.argmax(loss[inside])])
            barrier = float(p["barrier"]) if "barrier" in p and np.isfinite(p["barrier"]) else float(loss[j] - ends)
            data.append({"type": "scatter", "x": [0.0, 1.0], "y": [ends, ends], "mode": "lines",
                         "name": f"barrier = {barrier:.4g}", "line": {"color": "gray", "dash": "dash"}})
            if barrier > 0:
                notes.append({"x": float(alpha[j]), "y": ends + barrier, "ax": float(alpha[j]), "ay": ends,
                              "axref": "x", "ayref": "y", "showarrow": True, "arrowhead": 3, "arrowside": "end+start",
                              "text": ""})
    facts = [f"{k}={p[k]}" for k in ("monotonic", "n_bumps", "max_bump", "barrier", "distance", "relative_distance",
                                     "bn_reestimated") if k in p]
    layout = {"xaxis": {"title": {"text": "α   (θ_α = (1 − α)·θ₀ + α·θ₁)"}}, "yaxis": _ylog(opts, "loss"),
              "yaxis2": {"title": {"text": "accuracy"}, "overlaying": "y", "side": "right", "showgrid": False},
              "shapes": shapes, "annotations": notes, "legend": {"orientation": "h", "y": -0.25},
              "title": {"text": ", ".join(facts), "font": {"size": 11}}, **_size(opts, (8.0, 4.8))}
    return {"data": data, "layout": layout}


def fig_density(r: Result, opts: Options, top: int = 10) -> dict:
    c = r.curvature or {}
    data, shapes, notes = [], [], []
    if "density" in c and "grid" in c["density"] and "values" in c["density"]:
        t = np.asarray(c["density"]["grid"], dtype=float).reshape(-1)
        phi = np.asarray(c["density"]["values"], dtype=float).reshape(-1)
        data.append({"type": "scatter", "x": _list(t), "y": _list(np.maximum(phi, FLOOR)), "mode": "lines",
                     "name": "spectral density (SLQ)", "line": {"color": "#1f77b4"},
                     "hovertemplate": "λ = %{x:.4g}<br>φ(λ) = %{y:.3g}<extra></extra>"})
    eig = np.asarray(c.get("eigenvalues", []), dtype=float).reshape(-1)
    eig = np.sort(eig[np.isfinite(eig)])[::-1][:top]
    for i, lam in enumerate(eig):
        shapes.append({"type": "line", "x0": lam, "x1": lam, "yref": "paper", "y0": 0, "y1": 1,
                       "line": {"color": "#d62728", "dash": "dash", "width": 1}})
        notes.append({"x": float(lam), "yref": "paper", "y": 1.0 - 0.07 * (i % 4), "text": f"λ{i + 1}={lam:.4g}",
                      "showarrow": False, "font": {"color": "#d62728", "size": 10}, "xanchor": "right"})
    if eig.size:
        data.append({"type": "scatter", "x": _list(eig), "y": [1.0] * eig.size, "yaxis": "y2", "mode": "markers",
                     "name": "top eigenvalues (Lanczos)", "marker": {"color": "#d62728", "symbol": "line-ns-open",
                                                                     "size": 14},
                     "hovertemplate": "λ = %{x:.6g}<extra></extra>"})
    if "smallest" in c and np.isfinite(c["smallest"]):
        shapes.append({"type": "line", "x0": float(c["smallest"]), "x1": float(c["smallest"]), "yref": "paper",
                       "y0": 0, "y1": 1, "line": {"color": "#2ca02c", "dash": "dot", "width": 1}})
    title = []
    if "trace" in c:
        se = (c.get("trace_attrs") or {}).get("stderr")
        title.append(f"tr(H) = {float(c['trace']):.5g}" + (f" ± {float(se):.2g}" if se is not None else ""))
    if "smallest" in c:
        title.append(f"λmin = {float(c['smallest']):.4g}")
    layout = {"xaxis": {"title": {"text": "Hessian eigenvalue λ"}},
              "yaxis": {"type": "log", "title": {"text": "density φ(λ) (log scale)"}, "exponentformat": "power"},
              "yaxis2": {"overlaying": "y", "visible": False, "range": [0, 1.05]}, "shapes": shapes,
              "annotations": notes, "title": {"text": ", ".join(title), "font": {"size": 12}},
              "legend": {"orientation": "h", "y": -0.2}, **_size(opts, (8.0, 4.8))}
    return {"data": data, "layout": layout}


def fig_layerwise(r: Result, opts: Options) -> dict:
    lw = r.layerwise
    layers = list(lw.get("layers", []))
    data = []
    for q, v in lw.items():
        if not isinstance(v, np.ndarray) or v.ndim != 1:
            continue
        data.append({"type": "scatter", "x": layers if len(layers) == len(v) else list(range(1, len(v) + 1)),
                     "y": _list(np.where(v > 0, v, np.nan)), "name": q, "mode": "lines+markers",
                     "visible": True if q.endswith("lambda_max") or q.startswith("kron_kappa") else "legendonly"})
    layout = {"yaxis": {"type": "log", "title": {"text": "value (log)"}}, "xaxis": {"title": {"text": "layer"}},
              "legend": {"orientation": "h", "y": -0.3}, **_size(opts, (8.0, 4.6))}
    return {"data": data, "layout": layout}


# ---------------------------------------------------------------------------- track (``landscape track``)
def read_track(path: str) -> dict[str, np.ndarray] | None:
    """Every numeric dataset under ``/track`` (nested names joined by '/'), or None without a track. Read
    here, not in :mod:`landscape.results`, so the page shows tracks whatever their exact layout."""
    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r", **H5_KW) as f:
            g = f.get("track")
            if not isinstance(g, h5py.Group):
                return None

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "fiub" and obj.size:
                    out[name] = np.asarray(obj[()], dtype=np.float64)

            g.visititems(visit)
    except (OSError, KeyError, ValueError):
        return None
    return out


def track_figures(track: dict[str, np.ndarray], opts: Options) -> tuple[list[tuple[str, str, dict]], list[str]]:
    """(figures, names not shown): every 1D series as long as the steps against the step, every (steps ×
    grid) array as a heatmap over the step (log colour when it is a density)."""
    step_key = next((k for k in ("step", "steps", "checkpoint_step", "epoch") if k in track), None)
    n = None
    if step_key is not None:
        steps = track[step_key].reshape(-1)
        n = len(steps)
    else:
        lens = [v.shape[0] for v in track.values() if v.ndim == 1]
        n = max(set(lens), key=lens.count) if lens else None
        steps = np.arange(n, dtype=float) if n else np.zeros(0)
    figs, skipped = [], []
    series = [(k, v) for k, v in track.items() if k != step_key and v.ndim == 1 and v.shape[0] == n]
    if series:
        data = [{"type": "scatter", "x": _list(steps), "y": _list(v), "name": k, "mode": "lines+markers",
                 "visible": True if i < 4 else "legendonly"} for i, (k, v) in enumerate(series)]
        figs.append(("track", "Along training: every series of /track (click the legend to show or hide)",
                     {"data": data, "layout": {"xaxis": {"title": {"text": step_key or "checkpoint"}},
                                               "legend": {"orientation": "h", "y": -0.25},
                                               **_size(opts, (9.0, 5.0))}}))
    for k, v in track.items():
        if v.ndim == 2 and v.shape[0] == n and v.shape[1] > 1:
            base = k.rsplit("/", 1)[0] if "/" in k else ""
            grid_key = next((g for g in (f"{base}/grid" if base else "", k.replace("values", "grid"), f"{k}_grid",
                                         "density_grid", "grid") if g and g in track and g != k
                             and track[g].reshape(-1).shape[0] == v.shape[1]), None)
            y = track[grid_key].reshape(-1) if grid_key else np.arange(v.shape[1], dtype=float)
            dens = "density" in k or "spectrum" in k
            z = np.log10(np.maximum(v, 1e-12)) if dens else v
            figs.append((f"track-{k.replace('/', '-')}", f"{k} over training" + (" (log₁₀)" if dens else ""),
                         {"data": [{"type": "heatmap", "x": _list(steps), "y": _list(y), "z": _list(z.T),
                                    "colorscale": colorscale(opts.cmap),
                                    "colorbar": {"title": {"text": ("log₁₀ " if dens else "") + k}}}],
                          "layout": {"xaxis": {"title": {"text": step_key or "checkpoint"}},
                                     "yaxis": {"title": {"text": grid_key or "index"}},
                                     **_size(opts, (8.0, 4.8))}}))
        elif not (k == step_key or (v.ndim == 1 and v.shape[0] == n)) and not k.endswith("grid"):
            skipped.append(f"{k} {tuple(v.shape)}")
    return figs, skipped


# ---------------------------------------------------------------------------- the page
def metric_table(r: Result) -> str:
    if not r.metrics:
        return ""
    rows = []
    for name, (v, attrs) in r.metrics.items():
        value = full_text(v.tolist() if isinstance(v, np.ndarray) else v)
        params = "<br>".join(f"<b>{html.escape(str(k))}</b> = {html.escape(full_text(x))}" for k, x in attrs.items())
        rows.append(f"<tr><td>{html.escape(name)}</td><td class=v>{html.escape(value)}</td><td>{params}</td></tr>")
    return ("<table class=metrics id=metrics><thead><tr><th>metric</th><th>value</th><th>parameters</th></tr>"
            "</thead><tbody>" + "".join(rows) + "</tbody></table>")


def sections(r: Result, opts: Options, track: dict | None = None) -> list[tuple[str, str, dict | str]]:
    """``(id, heading, figure dict or HTML)`` for every part of ``r``, in reading order."""
    out: list[tuple[str, str, dict | str]] = []
    surf = r.default_surface()
    has_surf = surf is not None and r.has_values(surf)
    if r.ndim == 2 and has_surf and min(r.shape) >= 2:
        out.append(("surface3d", f"{label_of(surf)} as a surface (drag to turn, scroll to zoom)",
                    fig_surface3d(r, opts)))
        traj = has_trajectory(r)
        out.append(("contour", f"{label_of(surf)}, contours" + (" with the training trajectory" if traj else "")
                    + " (hover for values)", fig_contour(r, opts, trajectory=traj)))
        for n in curvature_surfaces(r):
            out.append((f"curvature-{n}", f"curvature map: {label_of(n)}", fig_heatmap(r, n, opts)))
    elif r.ndim == 2 and has_surf:
        out.append(("heatmap", label_of(surf), fig_heatmap(r, surf, opts)))
    if r.ndim >= 1 and has_surf:
        out.append(("lines", "1D surface" if r.ndim == 1 else "1D cuts through the centre", fig_lines(r, opts)))
    if r.ndim == 3 and has_surf:
        for axis in "zyx":
            out.append((f"volume-{axis}", f"{label_of(surf)}: slices across {axis} (move the slider)",
                        fig_volume_slices(r, axis, opts)))
        out.append(("isosurface", f"{label_of(surf)}: isosurfaces", fig_isosurface(r, opts)))
    for name, p in r.paths.items():
        if "alpha" in p:
            out.append((f"path-{name}", f"linear path '{name}'", fig_path(r, name, opts)))
    if has_spectrum(r):
        out.append(("density", "Hessian spectral density (log axis) and top eigenvalues", fig_density(r, opts)))
    if any(isinstance(v, np.ndarray) for v in (r.layerwise or {}).values()):
        out.append(("layerwise", "per-layer quantities (K-FAC)", fig_layerwise(r, opts)))
    if track:
        figs, skipped = track_figures(track, opts)
        out += figs
        if skipped:
            out.append(("track-other", "other /track datasets (not drawn)",
                        "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in skipped) + "</ul>"))
    table = metric_table(r)
    if table:
        out.append(("metrics-section", "sharpness metrics (/metrics), with every parameter", table))
    return out


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1200px;padding:12px 24px;
color:#222}
h1{font-size:1.3em} h2{font-size:1.05em;margin:28px 0 4px;border-bottom:1px solid #ddd}
nav a{margin-right:12px;font-size:.9em} pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:.8em}
table.metrics{border-collapse:collapse;font-size:.9em;width:100%} table.metrics td,table.metrics th{border:1px solid
#ccc;padding:4px 8px;text-align:left;vertical-align:top} td.v{font-family:monospace}
"""


def page(r: Result, opts: Options | None = None, track: dict | None = None) -> str:
    """The whole HTML page of ``r`` as a string (plotly.js inlined)."""
    _need_plotly()
    from plotly.offline import get_plotlyjs

    opts = opts or Options()
    parts = sections(r, opts, track)
    if not parts:
        raise LandscapeError(f"{r.path} holds nothing to show (no surface, path, curvature, metrics or layer-wise "
                             f"data); see 'landscape info {r.path}'")
    title = opts.title or r.title()
    figs = {}
    body = [f"<h1>{html.escape(title)}</h1>",
            "<nav>" + "".join(f"<a href='#{i}-h'>{html.escape(h.split(' (')[0])}</a>" for i, h, _ in parts) + "</nav>"]
    for ident, heading, content in parts:
        body.append(f"<h2 id='{ident}-h'>{html.escape(heading)}</h2>")
        if isinstance(content, str):
            body.append(content)
        else:
            body.append(f"<div id='{ident}' class=fig></div>")
            figs[ident] = content
    body.append("<h2>the file</h2><details><summary>landscape info</summary><pre>"
                + html.escape(describe(r)) + "</pre></details>")
    data = json.dumps(figs, allow_nan=False, separators=(",", ":"))
    script = ("const FIGS=" + data + ";\nconst CONFIG={displaylogo:false,responsive:true};\n"
              "Promise.all(Object.keys(FIGS).map(id=>Plotly.newPlot(id,FIGS[id].data,FIGS[id].layout,CONFIG)))"
              ".then(()=>{document.body.dataset.rendered=String(Object.keys(FIGS).length);});\n")
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
            + "\n".join(body) + f"<script>{script}</script></body></html>\n")


def html_path(result_path: str, out: str | None = None) -> str:
    return out or os.path.splitext(result_path)[0] + ".html"


def write_page(r: Result, out: str | None = None, opts: Options | None = None) -> str:
    """Write the page of ``r`` to ``out`` (default: ``FILE.html`` beside the input); returns the path.
    Written to a temporary name first and renamed, so a page being opened is never half written."""
    if available_kinds(r):  # an option no section can use is refused by name, as in plot and report
        check_options(available_kinds(r), opts or Options(), every=False)
    path = html_path(r.path, out)
    text = page(r, opts, read_track(r.path) if r.format != "li2018" else None)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path
