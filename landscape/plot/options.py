"""What a user may change about a picture: the options shared by ``landscape plot``, ``report`` and ``view``."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

from ..errors import LandscapeError


@dataclass
class Options:
    """What the user may change about a picture (the flags shared by ``landscape plot``, ``report`` and
    ``view``). ``vmin``/``vmax`` bound the colour scale of 2D kinds and the value axis of 1D ones;
    ``figsize`` (inches) and ``title`` replace the defaults; ``elev``/``azim`` turn 3D views (degrees)."""

    log: bool = False
    vmin: float | None = None
    vmax: float | None = None
    levels: int = 30
    dpi: int = 150
    cmap: str | None = None
    figsize: tuple[float, float] | None = None
    title: str | None = None
    elev: float | None = None
    azim: float | None = None

    def given(self) -> list[str]:
        """The options set away from their defaults, by flag name (for refusing those a kind cannot use)."""
        return [k for k, v in vars(self).items() if k != "dpi" and v != getattr(Options, k)]


def check_colormap(cmap: str | None) -> None:
    """One line when ``cmap`` (None: the kind's default) is not a matplotlib colormap."""
    if cmap is not None and cmap not in matplotlib.colormaps:
        raise LandscapeError(f"`cmap` {cmap!r} is not a matplotlib colormap (try viridis, magma, cividis, RdBu_r, ...)")
