"""The plot-kind registry: which pictures exist, when a file can give each, which options each can use.

A kind is a :class:`PlotKind`: a name (``landscape plot --kind NAME``, ``landscape.plot.figure(r, NAME)``),
``available(result) -> bool`` and ``figure(result, opts, surface, path) -> Figure``. Everything else --
the ``--kind`` choices, ``--kind all``, the refusal of an option a kind cannot use, the file names -- is
read from the registry, so a new kind is one module with those two functions plus one line::

    register_plot_kind(PlotKind("gradient", gradient.available, gradient.figure, options=("cmap",)))

Example:
    >>> from landscape.plot.kinds import PLOT_KINDS
    >>> list(PLOT_KINDS)[:4]
    ['contour', 'contourf', 'heatmap', 'surface3d']
    >>> PLOT_KINDS["surface3d"].options
    ('cmap', 'vmin', 'vmax', 'log', 'elev', 'azim')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from ..errors import LandscapeError
from ..results import Result
from .options import Options, check_colormap
from .path import has_trajectory, path_figure, trajectory_figure
from .spectrum import density_figure, has_spectrum
from .surface import curvature_surfaces, surface_figure
from .track import has_track, plot_track, track_figures

#: the options every kind can use; the others (cmap, vmin, ...) only where a kind lists them
EVERY_KIND = ("dpi", "figsize", "title")
#: why an option is refused, when the reason is the option's own (else the kind's ``why_not``)
WHY = {"cmap": "it has no colour scale", "levels": "it draws no contour lines", "elev": "it is not a 3D view",
       "azim": "it is not a 3D view"}

@dataclass(frozen=True)
class PlotKind:
    """One kind of picture.

    ``figure(result, opts, surface, path)`` draws it (``opts`` an :class:`Options`; ``surface`` and ``path``
    the names the user picked, or None) without saving it. ``options`` are the :class:`Options` fields it
    uses besides ``figsize``, ``title`` and ``dpi``; ``why_not`` says why the others mean nothing to it.
    ``files(result, surface)`` gives ``(name parts, figure keywords)`` per file written (default: one file
    ``<stem>_<surface>_<kind>``); ``write(result, out_dir, fmt, opts)`` replaces saving for a kind of several
    figures. ``on_grid``: drawn from the surface grid (a file with no computed point yet says so);
    ``picks_surface``: ``surface`` must then name one of the file's surfaces."""

    name: str
    available: Callable[[Result], bool]
    figure: Callable[[Result, Options, str | None, str | None], Figure]
    options: tuple[str, ...] = ()
    why_not: str = ""
    files: Callable[[Result, str], list[tuple[tuple[str, ...], dict]]] | None = None
    write: Callable[[Result, str, str, Options], list[str]] | None = None
    on_grid: bool = False
    picks_surface: bool = True


#: every kind, by name, in the order ``--kind all`` draws them
PLOT_KINDS: dict[str, PlotKind] = {}


def register_plot_kind(kind: PlotKind) -> PlotKind:
    """Add ``kind`` to :data:`PLOT_KINDS` (replacing one of the same name); returns it."""
    unknown = sorted(set(kind.options) - set(vars(Options())) - {"dpi"})
    if unknown:
        raise LandscapeError(f"`options` of plot kind {kind.name!r}: {', '.join(unknown)} are not fields of Options")
    PLOT_KINDS[kind.name] = kind
    return kind


def kind_names() -> tuple[str, ...]:
    """The registered kinds' names, in drawing order (``landscape plot --kind`` choices, besides ``all``)."""
    return tuple(PLOT_KINDS)


def applies() -> dict[str, tuple[str, ...]]:
    """``{option: kinds that can use it}`` for the options not every kind can use."""
    names = sorted({o for k in PLOT_KINDS.values() for o in k.options} | set(WHY), key=list(vars(Options())).index)
    return {o: tuple(n for n, k in PLOT_KINDS.items() if o in k.options) for o in names}


def available_kinds(result: Result) -> list[str]:
    """The kinds of picture ``result`` holds the data for, in registry order."""
    return [name for name, kind in PLOT_KINDS.items() if kind.available(result)]


def check_options(kinds: list[str] | tuple[str, ...], opts: Options, every: bool = True) -> None:
    """Refuse, by name, an option that means nothing for the kind(s) drawn (``every``: for each of them;
    else, ``--kind all`` or a report: for all of them, the option then applying where it can)."""
    for name in opts.given():
        if name == "cmap":
            check_colormap(opts.cmap)
        if name in EVERY_KIND:
            continue
        bad = [k for k in kinds if name not in PLOT_KINDS[k].options]
        if bad and (every or len(bad) == len(kinds)):
            k = bad[0]
            why = WHY.get(name) or PLOT_KINDS[k].why_not
            fits = [n for n, kind in PLOT_KINDS.items() if name in kind.options]
            # "--kind": the kinds are named as `landscape plot --kind` names them, whatever the command
            raise LandscapeError(f"`{name}` does not apply to --kind {k}" + (f" ({why})" if why else "")
                                 + f"; it applies to {', '.join(fits)}")


def check_kind(result: Result, kind: str, surface: str | None) -> PlotKind:
    """The registered ``kind``, once ``result`` is known to hold what it draws (else a one-line error)."""
    if kind not in PLOT_KINDS:
        raise LandscapeError(f"`kind` {kind!r} is not one of all, {', '.join(PLOT_KINDS)}")
    k = PLOT_KINDS[kind]
    have = available_kinds(result)
    if kind not in have and k.on_grid and result.ndim and not any(map(result.has_values, result.surfaces)):
        raise LandscapeError(f"{result.path} has no computed point yet (0/{int(np.prod(result.shape))} done); wait "
                             "for the run, or resume it by re-running its command")
    if kind not in have:
        why = {1: "a 1D surface", 2: "a 2D surface", 3: "a 3D volume"}.get(result.ndim, "no surface")
        raise LandscapeError(f"`kind` {kind} is not available for {result.path} ({why}); it can give: "
                             f"{', '.join(have) or 'nothing (see landscape info ' + result.path + ')'}")
    if surface is not None and surface not in result.surfaces and k.picks_surface:
        raise LandscapeError(f"`surface` {surface!r} is not in {result.path}; it has "
                             f"{', '.join(result.surface_names()) or 'no surfaces'}")
    return k


# ---------------------------------------------------------------------------- the kinds landscape draws
def _has_surface(result: Result) -> bool:
    return any(result.has_values(n) for n in result.surfaces)


def _grid_kind(name: str, available: Callable[[Result], bool], options: tuple[str, ...], **kw) -> PlotKind:
    """A kind :func:`~landscape.plot.surface.surface_figure` draws from the surface grid."""
    return PlotKind(name, available, lambda r, o, surface, path: surface_figure(r, name, surface, o), options,
                    on_grid=True, **kw)


def _path_files(result: Result, surface: str) -> list[tuple[tuple[str, ...], dict]]:
    return [(("path", name), {"path": name}) for name, p in result.paths.items() if "alpha" in p]


def _full_2d(r: Result) -> bool:
    return r.ndim == 2 and _has_surface(r) and min(r.shape) >= 2


_COLOUR = ("cmap", "vmin", "vmax", "levels", "log")
_CURVATURE_WHY = "λmax, λmin and |λmin/λmax| share no scale (λmin is signed)"

for _kind in (
    _grid_kind("contour", _full_2d, _COLOUR),
    _grid_kind("contourf", _full_2d, _COLOUR),
    _grid_kind("heatmap", lambda r: r.ndim == 2 and _has_surface(r), ("cmap", "vmin", "vmax", "log")),
    _grid_kind("surface3d", _full_2d, ("cmap", "vmin", "vmax", "log", "elev", "azim")),
    _grid_kind("line", lambda r: r.ndim >= 1 and _has_surface(r), ("vmin", "vmax", "log"),
               files=lambda r, surface: [((surface, "line") if r.ndim > 1 else ("line",), {})]),
    _grid_kind("volume", lambda r: r.ndim == 3 and _has_surface(r), ("cmap", "vmin", "vmax", "log")),
    PlotKind("path", lambda r: any("alpha" in p for p in r.paths.values()),
             lambda r, o, surface, path: path_figure(r, path, o), ("vmin", "vmax", "log"), files=_path_files,
             picks_surface=False),
    PlotKind("density", has_spectrum, lambda r, o, surface, path: density_figure(r, o),
             why_not="the spectrum is always on a log density axis; its scales come from the file",
             files=lambda r, surface: [(("density",), {})], picks_surface=False),
    PlotKind("trajectory", has_trajectory, lambda r, o, surface, path: trajectory_figure(r, surface, o),
             _COLOUR),
    PlotKind("curvature", lambda r: r.ndim in (1, 2) and bool(curvature_surfaces(r)),
             lambda r, o, surface, path: surface_figure(r, "curvature", None, o), ("cmap",), why_not=_CURVATURE_WHY,
             files=lambda r, surface: [(("curvature",), {})], on_grid=True),
    # the figure: the first of its pictures (EoS when tracked); saving writes them all
    PlotKind("track", has_track, lambda r, o, surface, path: next(iter(track_figures(r, o).values())),
             write=lambda r, out_dir, fmt, o: plot_track(r, out_dir, fmt, o.dpi, o)),
):
    register_plot_kind(_kind)
del _kind
