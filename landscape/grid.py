"""Grids of coordinates along the directions, and point indexing.

A range is ``min:max:num`` (``num`` evenly spaced values including both ends). A grid of
``ndim`` axes has shape ``(nx[, ny[, nz]])``; points are addressed by their flat C-order index,
so ``Z.reshape(-1)[flat] == Z[i, j, k]`` with ``(i, j, k) = np.unravel_index(flat, shape)``, and
``Z[i, j, k]`` is always the value at ``(x[i], y[j], z[k])``, whatever the shape.

Example:
    >>> g = Grid.from_ranges(x="-1:1:3", y="0:1:2")
    >>> g.shape, g.points(np.array([0, 5])).tolist()
    ((3, 2), [[-1.0, 0.0], [1.0, 1.0]])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import LandscapeError
from .schema import AXES

#: the most points a grid may have: a 1e9-point grid would need 8 GB per metric before any point is computed
MAX_POINTS = 50_000_000


@dataclass(frozen=True)
class Range:
    lo: float
    hi: float
    num: int

    def values(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.num, dtype=np.float64)

    def __str__(self) -> str:
        return f"{self.lo:g}:{self.hi:g}:{self.num}"


def parse_range(text: str, name: str = "x") -> Range:
    """Parse ``min:max:num``; one-sided ranges (``0:1:11``) and ranges without 0 are fine. ``name`` is the
    parameter the text came from (``x``, ``alpha``; a flag spelling ``--x`` is read as ``x``): errors name it."""
    p = "`" + name.lstrip("-").replace("-", "_") + "`"
    parts = str(text).split(":")
    if len(parts) != 3:
        raise LandscapeError(f"{p}={text!r} is not min:max:num (example: {p}=-1:1:51)")
    try:
        lo, hi = float(parts[0]), float(parts[1])
        num = int(parts[2])
    except ValueError:
        raise LandscapeError(f"{p}={text!r}: min and max must be numbers and num an integer "
                             f"(example: {p}=-1:1:51)") from None
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise LandscapeError(f"{p}={text!r}: min and max must be finite")
    if num < 1:
        raise LandscapeError(f"{p}={text!r}: num must be at least 1")
    if num > 1 and lo == hi:
        raise LandscapeError(f"{p}={text!r}: {num} points need min < max (example: "
                             f"{p}={lo - 1:g}:{lo + 1:g}:{num}; one point is {p}={lo:g}:{lo:g}:1)")
    if num > 1 and not lo < hi:
        raise LandscapeError(f"{p}={text!r}: min must be smaller than max "
                             f"(did you mean {p}={hi:g}:{lo:g}:{num}?)")
    if num == 1 and lo != hi:
        raise LandscapeError(f"{p}={text!r}: one point needs min == max (example: {p}=0:0:1)")
    return Range(lo, hi, num)


@dataclass(frozen=True)
class Grid:
    """Coordinates per axis (``x``, then ``y``, then ``z``)."""

    coords: tuple[np.ndarray, ...]

    @classmethod
    def from_ranges(cls, x: str, y: str | None = None, z: str | None = None) -> Grid:
        if z is not None and y is None:
            raise LandscapeError("`z` needs `y` as well (a 3D volume has x, y and z)")
        axes = [parse_range(x, "x")]
        if y is not None:
            axes.append(parse_range(y, "y"))
        if z is not None:
            axes.append(parse_range(z, "z"))
        size = 1
        for a in axes:
            size *= a.num
        if size > MAX_POINTS:
            flags = " × ".join(f"`{ax}` {a.num}" for ax, a in zip(AXES, axes))
            raise LandscapeError(f"a grid of {size:,} points ({flags}) is too large: at most {MAX_POINTS:,} points "
                                 "(each metric's values are held in memory and on disk); use fewer points per axis")
        return cls(tuple(a.values() for a in axes))

    @property
    def ndim(self) -> int:
        return len(self.coords)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.coords)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def axes(self) -> tuple[str, ...]:
        return AXES[: self.ndim]

    def unravel(self, flat: np.ndarray) -> tuple[np.ndarray, ...]:
        return np.unravel_index(np.asarray(flat, dtype=np.int64), self.shape)

    def points(self, flat: np.ndarray) -> np.ndarray:
        """``(K, ndim)`` coordinates of the points with these flat indices."""
        idx = self.unravel(flat)
        return np.stack([c[i] for c, i in zip(self.coords, idx)], axis=-1)

    def describe(self) -> str:
        return " × ".join(f"{a}∈[{c[0]:g},{c[-1]:g}]({len(c)})" for a, c in zip(self.axes, self.coords))
