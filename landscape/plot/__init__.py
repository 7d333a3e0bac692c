"""Pictures and exports of result files (no model needed).

``surface`` (1D/2D/3D surfaces, curvature maps), ``spectrum`` (Hessian density), ``path``
(interpolation, PCA trajectory), ``track`` (EoS, spectrum evolution, overlaps), ``report`` (one summary
figure), ``vtk`` (VTK, npz, csv). This module knows which kinds of picture a file can give and draws them by name::

    from landscape.results import open_result
    from landscape.plot import available_kinds, plot_kind
    r = open_result("outputs/r20.h5")
    available_kinds(r)                 # ['contour', 'contourf', 'heatmap', 'surface3d', 'line']
    plot_kind(r, "contour", "outputs")  # ['outputs/r20_train_loss_contour.png']
"""

from __future__ import annotations

import numpy as np

from ..errors import LandscapeError
from ..results import Result
from .common import FORMATS, output_path
from .surface import KINDS_2D, Options

KINDS = ("contour", "contourf", "heatmap", "surface3d", "line", "volume", "path", "density", "trajectory",
         "curvature", "track")

__all__ = ["KINDS", "FORMATS", "Options", "available_kinds", "figure", "plot_kind", "plot_all", "check_options"]


def available_kinds(result: Result) -> list[str]:
    """The kinds of picture ``result`` holds the data for, in :data:`KINDS` order."""
    from .path import has_trajectory
    from .spectrum import has_spectrum
    from .surface import curvature_surfaces

    have_surface = any(result.has_values(n) for n in result.surfaces)
    kinds = []
    if result.ndim == 2 and have_surface:
        kinds += [k for k in KINDS_2D if k == "heatmap" or min(result.shape) >= 2]
    if result.ndim >= 1 and have_surface:
        kinds.append("line")
    if result.ndim == 3 and have_surface:
        kinds.append("volume")
    if any("alpha" in p for p in result.paths.values()):
        kinds.append("path")
    if has_spectrum(result):
        kinds.append("density")
    if has_trajectory(result):
        kinds.append("trajectory")
    if result.ndim in (1, 2) and curvature_surfaces(result):
        kinds.append("curvature")
    from .track import has_track

    if has_track(result):
        kinds.append("track")
    return [k for k in KINDS if k in kinds]


#: the options each kind can use (figsize, title and dpi fit every kind); others are refused by name
APPLIES = {
    "cmap": ("contour", "contourf", "heatmap", "surface3d", "volume", "curvature", "trajectory"),
    "vmin": ("contour", "contourf", "heatmap", "surface3d", "line", "volume", "path", "trajectory"),
    "vmax": ("contour", "contourf", "heatmap", "surface3d", "line", "volume", "path", "trajectory"),
    "levels": ("contour", "contourf", "trajectory"),
    "log": ("contour", "contourf", "heatmap", "surface3d", "line", "volume", "path", "trajectory"),
    "elev": ("surface3d",),
    "azim": ("surface3d",),
}
#: why an option is refused: per option, then per kind
WHY = {"cmap": "it has no colour scale", "levels": "it draws no contour lines", "elev": "it is not a 3D view",
       "azim": "it is not a 3D view"}
WHY_KIND = {"density": "the spectrum is always on a log density axis; its scales come from the file",
            "curvature": "λmax, λmin and |λmin/λmax| share no scale (λmin is signed)"}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_options(kinds: list[str] | tuple[str, ...], opts: Options, every: bool = True) -> None:
    """Refuse, by name, an option that means nothing for the kind(s) drawn (``every``: for each of them;
    else, ``--kind all`` or a report: for all of them, the option then applying where it can)."""
    import matplotlib

    for name in opts.given():
        if name == "cmap" and opts.cmap not in matplotlib.colormaps:
            raise LandscapeError(f"--cmap {opts.cmap!r} is not a matplotlib colormap (try viridis, magma, "
                                 "cividis, RdBu_r, ...)")
        if name not in APPLIES:
            continue
        bad = [k for k in kinds if k not in APPLIES[name]]
        if bad and (every or len(bad) == len(kinds)):
            k = bad[0]
            why = WHY.get(name) or WHY_KIND.get(k, "")
            raise LandscapeError(f"{flag(name)} does not apply to --kind {k}" + (f" ({why})" if why else "")
                                 + f"; it applies to {', '.join(APPLIES[name])}")


def figure(result: Result | str, kind: str, surface: str | None = None, path: str | None = None, **opts):
    """A matplotlib :class:`~matplotlib.figure.Figure` of one ``kind`` of picture, for a notebook::

        import landscape
        r = landscape.open("outputs/demo/surface_2d.h5")
        fig = landscape.plot.figure(r, "contour", cmap="magma", levels=20, title="my MLP")

    ``result`` is a :class:`~landscape.results.Result` or a file name; ``opts`` are the fields of
    :class:`Options` (``cmap``, ``figsize``, ``title``, ``elev``, ``azim``, ``vmin``, ``vmax``, ``levels``,
    ``log``); ``path`` picks an interpolation path by name. The figure is made without pyplot: it shows as
    the cell's output, and ``fig.savefig(...)`` writes it."""
    from ..results import open_result
    from .common import style
    from .path import path_figure, trajectory_figure
    from .spectrum import density_figure
    from .surface import surface_figure

    if isinstance(result, str):
        result = open_result(result)
    unknown = sorted(set(opts) - set(vars(Options())))
    if unknown:
        raise LandscapeError(f"unknown plot option(s) {', '.join(unknown)}; choose among "
                             f"{', '.join(vars(Options()))}")
    o = Options(**opts)
    _check_kind(result, kind, surface)
    check_options([kind], o)
    with style():
        if kind == "path":
            return path_figure(result, path, o)
        if kind == "density":
            return density_figure(result, o)
        if kind == "trajectory":
            return trajectory_figure(result, surface, o)
        if kind == "track":  # the first of its figures (EoS when tracked); plot_kind writes them all
            from .track import track_figures

            return next(iter(track_figures(result, o).values()))
        return surface_figure(result, kind, None if kind == "curvature" else surface, o)


def _check_kind(result: Result, kind: str, surface: str | None) -> None:
    if kind not in KINDS:
        raise LandscapeError(f"--kind {kind!r} is not one of all, {', '.join(KINDS)}")
    have = available_kinds(result)
    surface_kinds = ("contour", "contourf", "heatmap", "surface3d", "line", "volume", "curvature")
    if kind not in have and kind in surface_kinds and result.ndim and not any(map(result.has_values, result.surfaces)):
        raise LandscapeError(f"{result.path} has no computed point yet (0/{int(np.prod(result.shape))} done); wait "
                             "for the run, or resume it by re-running its command")
    if kind not in have:
        why = {1: "a 1D surface", 2: "a 2D surface", 3: "a 3D volume"}.get(result.ndim, "no surface")
        raise LandscapeError(f"--kind {kind} is not available for {result.path} ({why}); it can give: "
                             f"{', '.join(have) or 'nothing (see landscape info ' + result.path + ')'}")
    if surface is not None and surface not in result.surfaces and kind not in ("path", "density"):
        raise LandscapeError(f"--surface {surface!r} is not in {result.path}; it has "
                             f"{', '.join(result.surface_names()) or 'no surfaces'}")


def plot_kind(result: Result, kind: str, out_dir: str, fmt: str = "png", surface: str | None = None,
              opts: Options | None = None) -> list[str]:
    """Draw one ``kind`` of picture into ``out_dir``; returns the paths written. A kind the file cannot give
    is a :class:`LandscapeError` naming the kinds it can; an option the kind cannot use is refused by name."""
    from .common import save, style

    opts = opts or Options()
    if fmt not in FORMATS:
        raise LandscapeError(f"--format {fmt!r}: choose png, pdf or svg")
    _check_kind(result, kind, surface)
    stem = result.name
    surf = surface or result.default_surface() or ""
    o = vars(opts).copy()
    o.pop("dpi")
    if kind == "track":  # several figures: EoS, spectrum evolution, overlaps
        from .track import plot_track

        check_options([kind], opts)
        return plot_track(result, out_dir, fmt, opts.dpi, opts)
    if kind == "path":
        names = [name for name, p in result.paths.items() if "alpha" in p]
        targets = [(output_path(out_dir, stem, "path", name, fmt=fmt), dict(path=name)) for name in names]
    elif kind == "density":
        targets = [(output_path(out_dir, stem, "density", fmt=fmt), {})]
    elif kind == "curvature":
        targets = [(output_path(out_dir, stem, "curvature", fmt=fmt), {})]
    elif kind == "line" and result.ndim == 1:
        targets = [(output_path(out_dir, stem, "line", fmt=fmt), {})]
    else:
        targets = [(output_path(out_dir, stem, surf, kind, fmt=fmt), {})]
    paths = []
    for out, extra in targets:
        fig = figure(result, kind, surface, **extra, **o)
        with style():
            paths.append(save(fig, out, opts.dpi))
    return paths


def plot_all(result: Result, out_dir: str, fmt: str = "png", surface: str | None = None,
             opts: Options | None = None) -> list[str]:
    """Every kind the file can give (``--kind all``); each option goes to the kinds that can use it (one
    that fits none of them is refused)."""
    opts = opts or Options()
    kinds = available_kinds(result)
    check_options(kinds, opts, every=False)
    paths: list[str] = []
    for kind in kinds:
        o = Options(**{k: v for k, v in vars(opts).items() if k not in APPLIES or kind in APPLIES[k]})
        paths += plot_kind(result, kind, out_dir, fmt, surface, o)
    return paths
