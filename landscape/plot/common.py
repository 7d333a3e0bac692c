"""What every figure shares: the style, making and saving a figure, masking non-finite values.

Figures are made with :class:`matplotlib.figure.Figure` directly, never through ``pyplot``: no
global figure list can grow across many plots, no display is ever needed (Agg renders PNG, PDF and
SVG by itself), and a figure is freed as soon as it is saved and dropped.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib
import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.transforms import ScaledTranslation

#: publication defaults: readable at column width, vector-friendly fonts, light grids
STYLE = {
    "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
    "legend.fontsize": 8, "figure.titlesize": 11, "axes.grid": False, "grid.alpha": 0.3, "lines.linewidth": 1.6,
    "savefig.facecolor": "white", "figure.facecolor": "white", "pdf.fonttype": 42, "ps.fonttype": 42,
    "svg.fonttype": "none", "image.cmap": "viridis", "axes.formatter.useoffset": False,
}
FORMATS = ("png", "pdf", "svg")
SPLIT_COLORS = {"train": "#1f77b4", "test": "#d62728"}
#: the curvature operators a file can hold (its ``operator`` attributes), as figures name them
OPERATOR_LABELS = {"hessian": "Hessian", "ggn": "Gauss–Newton (GGN)", "fisher": "empirical Fisher"}
_warned: set[tuple[str, str]] = set()


@contextmanager
def style() -> Iterator[None]:
    """The project's rcParams for the duration of one figure (the user's own settings are left alone)."""
    extra = {}
    if matplotlib.rcParams.get("text.usetex") and not _have_latex():
        # a matplotlibrc asking for LaTeX where none is installed: draw with mathtext instead of failing
        key = ("usetex", "")
        if key not in _warned:
            _warned.add(key)
            warnings.warn("the matplotlibrc sets text.usetex: True but latex/dvipng are not installed; drawing "
                          "with matplotlib's own text instead", stacklevel=3)
        extra["text.usetex"] = False
    with matplotlib.rc_context({**STYLE, **extra}):
        yield


def _have_latex() -> bool:
    return all(shutil.which(tool) for tool in ("latex", "dvipng"))


def new_figure(width: float, height: float, layout: str | None = "constrained"):
    """A pyplot-free figure of ``width`` × ``height`` inches (its pixel size is exactly that × dpi)."""
    return Figure(figsize=(width, height), layout=layout)


def save(fig, path: str | list[str], dpi: int = 150) -> str:
    """Save ``fig`` to one path or several (format from each extension) and release it; returns the first
    path. Not ``bbox_inches='tight'``: a fixed pixel size keeps figures of a series the same size and lets
    tests check it."""
    paths = [path] if isinstance(path, str) else list(path)
    for p in paths:
        os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
        fig.savefig(p, dpi=dpi)
    fig.clear()
    return paths[0]


def twin(ax):
    """A right-hand y axis drawn *under* ``ax``, so the legend of ``ax`` covers the twin's lines instead of
    being crossed by them (matplotlib draws a twin on top by default)."""
    ax2 = ax.twinx()
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    return ax2


def outside_legend(ax, handles: list, ncols: int | None = None, fontsize: float = 8, below: float = 0.5):
    """The legend under the axes, below the tick labels and the x label, so it never covers data (a
    ``loc="best"`` legend still crosses curves when they fill the box). Constrained layout counts it,
    making room for it below the axes."""
    handles = [h for h in handles if h.get_label() and not h.get_label().startswith("_")]
    if not handles:
        return None
    ncols = ncols or (1 if any(len(h.get_label()) > 38 for h in handles) else 2)
    offset = ScaledTranslation(0, -below, ax.figure.dpi_scale_trans)  # inches: under tick labels and x label
    return ax.legend(handles=handles, labels=[h.get_label() for h in handles], loc="upper center",
                     bbox_to_anchor=(0.5, 0.0), bbox_transform=ax.transAxes + offset, ncols=ncols,
                     fontsize=fontsize, frameon=False, borderaxespad=0.0)


def suptitle(fig, text: str) -> None:
    """The figure title, broken at " — " into lines that fit the figure's width (long model names)."""
    width = max(20, int(fig.get_figwidth() * 10.5))
    lines, line = [], ""
    for part in text.split(" — "):
        cand = f"{line} — {part}" if line else part
        if line and len(cand) > width:
            lines.append(line)
            line = part
        else:
            line = cand
    lines.append(line)
    fig.suptitle("\n".join(lines))


def finite_masked(z: np.ndarray, label: str, key: str = "", log: bool = False,
                  done: np.ndarray | None = None) -> np.ma.MaskedArray:
    """``z`` with NaN/inf (and, for a log scale, values ≤ 0) masked, so they are left blank rather
    than drawn as extreme colours or broken lines. Warns once per ``(key, label)``: the same surface
    drawn in four kinds of plot should not repeat the same news four times. With the ``done`` mask,
    points not computed yet are told apart from points that diverged."""
    z = np.asarray(z, dtype=np.float64)
    nan = np.isnan(z)
    bad = ~np.isfinite(z)
    if log:
        bad |= np.isfinite(z) & (z <= 0)
    if bad.any() and (key, label) not in _warned and bad.sum() < z.size:
        _warned.add((key, label))
        what = []
        if done is not None and np.shape(done) == z.shape:
            todo = int((nan & ~np.asarray(done, bool)).sum())
            diverged = int((nan & np.asarray(done, bool)).sum())
            if todo:
                what.append(f"{todo} not computed yet")
            if diverged:
                what.append(f"{diverged} NaN")
        elif nan.any():
            what.append(f"{int(nan.sum())} NaN (not computed or diverged)")
        n_inf = int(np.isinf(z).sum())
        if n_inf:
            what.append(f"{n_inf} infinite")
        n_nonpos = int((np.isfinite(z) & (z <= 0)).sum()) if log else 0
        if n_nonpos:
            what.append(f"{n_nonpos} ≤ 0 (no logarithm)")
        warnings.warn(f"{label}: {int(bad.sum())} of {z.size} values left blank in the plots ({', '.join(what)})",
                      stacklevel=2)
    return np.ma.masked_array(z, mask=bad)


def value_range(z: np.ma.MaskedArray, vmin: float | None, vmax: float | None, log: bool) -> tuple[float, float]:
    """Colour limits: the user's, else the finite data's; widened when flat so a norm can be built."""
    data = z.compressed() if np.ma.isMaskedArray(z) else np.asarray(z).reshape(-1)
    lo = float(vmin) if vmin is not None else (float(data.min()) if data.size else 0.0)
    hi = float(vmax) if vmax is not None else (float(data.max()) if data.size else 1.0)
    if log:
        lo = max(lo, float(data[data > 0].min()) if (data > 0).any() else 1e-12, 1e-300)
        hi = max(hi, lo * 10 if hi <= lo else hi)
    if hi <= lo:
        pad = abs(lo) * 1e-3 or 1e-3
        lo, hi = lo - pad, hi + pad
    return lo, hi


def make_levels(lo: float, hi: float, n: int, log: bool) -> np.ndarray:
    """``n`` contour levels spaced evenly between ``lo`` and ``hi`` (geometrically on a log scale)."""
    n = max(int(n), 2)
    return np.geomspace(lo, hi, n) if log else np.linspace(lo, hi, n)


def make_norm(lo: float, hi: float, log: bool):
    return LogNorm(vmin=lo, vmax=hi) if log else Normalize(vmin=lo, vmax=hi)


def output_path(folder: str, stem: str, *parts: str, fmt: str = "png") -> str:
    """``folder/stem_part1_part2.fmt`` (``outputs/r20_train_loss_contour.png``)."""
    return os.path.join(folder, "_".join([stem, *[p for p in parts if p]]) + f".{fmt}")
