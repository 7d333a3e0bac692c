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

__all__ = ["KINDS", "FORMATS", "Options", "available_kinds", "plot_kind", "plot_all"]


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


def plot_kind(result: Result, kind: str, out_dir: str, fmt: str = "png", surface: str | None = None,
              opts: Options | None = None) -> list[str]:
    """Draw one ``kind`` of picture into ``out_dir``; returns the paths written. A kind the file cannot give
    is a :class:`LandscapeError` naming the kinds it can."""
    from .path import plot_path, plot_trajectory
    from .spectrum import plot_density
    from .surface import plot_surface

    opts = opts or Options()
    if kind not in KINDS:
        raise LandscapeError(f"--kind {kind!r} is not one of all, {', '.join(KINDS)}")
    if fmt not in FORMATS:
        raise LandscapeError(f"--format {fmt!r}: choose png, pdf or svg")
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
    stem = result.name
    surf = surface or result.default_surface() or ""
    if kind == "path":
        return [plot_path(result, output_path(out_dir, stem, "path", name, fmt=fmt), name, opts.log, opts.dpi)
                for name, p in result.paths.items() if "alpha" in p]
    if kind == "track":
        from .track import plot_track

        return plot_track(result, out_dir, fmt, opts.dpi)
    if kind == "density":
        return [plot_density(result, output_path(out_dir, stem, "density", fmt=fmt), opts.dpi)]
    if kind == "trajectory":
        return [plot_trajectory(result, output_path(out_dir, stem, surf, "trajectory", fmt=fmt), surface, opts,
                                opts.dpi)]
    if kind == "curvature":
        return [plot_surface(result, "curvature", output_path(out_dir, stem, "curvature", fmt=fmt), None, opts)]
    if kind == "line" and result.ndim == 1:
        return [plot_surface(result, "line", output_path(out_dir, stem, "line", fmt=fmt), surface, opts)]
    return [plot_surface(result, kind, output_path(out_dir, stem, surf, kind, fmt=fmt), surface, opts)]


def plot_all(result: Result, out_dir: str, fmt: str = "png", surface: str | None = None,
             opts: Options | None = None) -> list[str]:
    """Every kind the file can give (``--kind all``)."""
    paths: list[str] = []
    for kind in available_kinds(result):
        paths += plot_kind(result, kind, out_dir, fmt, surface, opts)
    return paths
