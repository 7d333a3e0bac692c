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

from ..errors import LandscapeError
from ..results import Result, open_result
from .common import FORMATS, output_path, save, style
from .kinds import (
    EVERY_KIND,
    PLOT_KINDS,
    PlotKind,
    applies,
    available_kinds,
    check_kind,
    check_options,
    kind_names,
    register_plot_kind,
)
from .options import Options

__all__ = ["KINDS", "FORMATS", "Options", "PlotKind", "PLOT_KINDS", "register_plot_kind", "available_kinds",
           "figure", "plot_kind", "plot_all", "check_options"]


def __getattr__(name: str):
    """``KINDS`` (the kinds' names) and ``APPLIES`` (``{option: kinds that use it}``), read from the registry
    when asked, so that a kind registered later is counted."""
    if name == "KINDS":
        return kind_names()
    if name == "APPLIES":
        return applies()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def figure(result: Result | str, kind: str, surface: str | None = None, path: str | None = None, **opts):
    """A matplotlib :class:`~matplotlib.figure.Figure` of one ``kind`` of picture, for a notebook::

        import landscape
        r = landscape.open("outputs/demo/surface_2d.h5")
        fig = landscape.plot.figure(r, "contour", cmap="magma", levels=20, title="my MLP")

    ``result`` is a :class:`~landscape.results.Result` or a file name; ``opts`` are the fields of
    :class:`Options` (``cmap``, ``figsize``, ``title``, ``elev``, ``azim``, ``vmin``, ``vmax``, ``levels``,
    ``log``); ``path`` picks an interpolation path by name. The figure is made without pyplot: it shows as
    the cell's output, and ``fig.savefig(...)`` writes it."""
    if isinstance(result, str):
        result = open_result(result)
    unknown = sorted(set(opts) - set(vars(Options())))
    if unknown:
        raise LandscapeError(f"unknown plot option(s) {', '.join(unknown)}; choose among "
                             f"{', '.join(vars(Options()))}")
    o = Options(**opts)
    k = check_kind(result, kind, surface)
    check_options([kind], o)
    with style():
        return k.figure(result, o, surface, path)


def plot_kind(result: Result, kind: str, out_dir: str, fmt: str = "png", surface: str | None = None,
              opts: Options | None = None) -> list[str]:
    """Draw one ``kind`` of picture into ``out_dir``; returns the paths written. A kind the file cannot give
    is a :class:`LandscapeError` naming the kinds it can; an option the kind cannot use is refused by name."""
    opts = opts or Options()
    if fmt not in FORMATS:
        raise LandscapeError(f"`format` {fmt!r}: choose png, pdf or svg")
    k = check_kind(result, kind, surface)
    check_options([kind], opts)
    if k.write is not None:  # several figures (track: EoS, spectrum evolution, overlaps)
        return k.write(result, out_dir, fmt, opts)
    surf = surface or result.default_surface() or ""
    files = k.files(result, surf) if k.files else [((surf, kind), {})]
    o = {name: v for name, v in vars(opts).items() if name != "dpi"}
    paths = []
    for parts, extra in files:
        fig = figure(result, kind, surface, **extra, **o)
        with style():
            paths.append(save(fig, output_path(out_dir, result.name, *parts, fmt=fmt), opts.dpi))
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
        paths += plot_kind(result, kind, out_dir, fmt, surface, fitting(kind, opts))
    return paths


def fitting(kind: str, opts: Options) -> Options:
    """``opts`` less the options ``kind`` cannot use (they go to the kinds that can)."""
    uses = PLOT_KINDS[kind].options
    return Options(**{k: v for k, v in vars(opts).items() if k in EVERY_KIND or k in uses})
