"""The analysis of a loss path (numpy only): its bumps, largest rise, barrier and verdict (docs/paths.md).

The verdict of ``landscape interpolate`` and the path figure (:mod:`landscape.plot.path`) both take their
bumps from here, so a figure marks exactly the bumps the verdict counts.

**Bumps** (:func:`find_bumps`). A bump is a rise of the loss above an earlier value; the path
is *monotonic* when the largest rise ::

    Δ = max_{i<j} (L_j − L_i)        (0 when L never rises)

is at most a tolerance (1e-3, the paper's MNIST tables). Peaks are separated with hysteresis:
the loss must rise more than ``tol`` above the running valley to start a bump and fall more than
``tol`` below its peak to end it, so noise below the tolerance and plateaus make no bumps. Each
peak j is reported as ``(α_start, α_peak, height)`` with ``height = L_j − min L`` over the points
since the last point higher than L_j (the biggest rise above an earlier value that ends at this
peak), and α_start where that minimum is; the largest height equals Δ whenever Δ > tol. A bump
*returns* when the loss later falls below its starting value L(α_start); a rise that never comes
back down (the path ends high) still counts, with its height up to its peak, and is flagged
``returns = False``. The verdict uses the points with 0 ≤ α ≤ 1 (the segment between the two
models; beyond θ₁ the loss rises by construction); the whole path is stored and plotted.

**Barrier** (mode connectivity): ``max_{α∈[0,1]} L(θ_α) − max(L(θ₀), L(θ₁)) ≥ 0``.

Example:
    >>> import numpy as np
    >>> a = np.linspace(0, 1, 6)
    >>> [round(b.height, 2) for b in find_bumps(a, np.array([1.0, 0.8, 1.1, 0.6, 0.5, 0.4]))]
    [0.3]
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

DEFAULT_TOLERANCE = 1e-3


class Bump(NamedTuple):
    """A rise of ``height`` from α = ``start`` to the peak at α = ``peak``; ``returns``: the loss later falls
    below its value at ``start``. A tuple, so ``(start, peak, height)`` also read as ``b[0], b[1], b[2]``."""

    start: float
    peak: float
    height: float
    returns: bool = True

    def as_list(self) -> list[float]:
        return [float(self.start), float(self.peak), float(self.height)]


def max_rise(loss: np.ndarray) -> float:
    """Δ = max_{i<j} (L_j − L_i), 0 when the sequence never rises (non-finite values skipped)."""
    v = np.asarray(loss, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return 0.0
    running_min = np.minimum.accumulate(v)
    return float(max(0.0, np.max(v[1:] - running_min[:-1])))


def find_bumps(alpha: np.ndarray, loss: np.ndarray, tol: float = DEFAULT_TOLERANCE) -> list[Bump]:
    """The bumps of a loss sequence ordered by α (module docstring: hysteresis ``tol``, heights as rises
    above the lowest earlier value since the last higher point). Non-finite values are skipped."""
    a = np.asarray(alpha, dtype=np.float64)
    v = np.asarray(loss, dtype=np.float64)
    ok = np.isfinite(v)
    a, v = a[ok], v[ok]
    n = len(v)
    bumps: list[Bump] = []
    if n < 2:
        return bumps

    def confirm(j: int) -> None:
        higher = np.flatnonzero(v[:j] > v[j])
        lo = int(higher[-1]) + 1 if len(higher) else 0
        seg = v[lo : j + 1]
        i = lo + int(len(seg) - 1 - np.argmin(seg[::-1]))  # the last lowest point: where the rise begins
        height = float(v[j] - v[i])
        if height > tol:
            bumps.append(Bump(float(a[i]), float(a[j]), height, bool(np.any(v[j + 1 :] < v[i]))))

    valley, peak, rising = 0, -1, False
    for k in range(1, n):
        if not rising:
            if v[k] <= v[valley]:
                valley = k
            elif v[k] > v[valley] + tol:
                rising, peak = True, k
        elif v[k] > v[peak]:
            peak = k
        elif v[k] < v[peak] - tol:
            confirm(peak)
            rising, valley = False, k
    if rising:
        confirm(peak)
    return bumps


def _value_at(alpha: np.ndarray, loss: np.ndarray, a0: float) -> float:
    ok = np.isfinite(loss)
    hit = np.flatnonzero(np.isclose(alpha, a0, rtol=0, atol=1e-9) & ok)
    if len(hit):
        return float(loss[hit[0]])
    if ok.sum() < 2 or not (alpha[ok].min() <= a0 <= alpha[ok].max()):
        return float("nan")
    return float(np.interp(a0, alpha[ok], loss[ok]))


def barrier(alpha: np.ndarray, loss: np.ndarray) -> float:
    """``max_{α∈[0,1]} L(θ_α) − max(L(θ₀), L(θ₁))`` (NaN when the grid does not cover [0, 1])."""
    alpha = np.asarray(alpha, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    l0, l1 = _value_at(alpha, loss, 0.0), _value_at(alpha, loss, 1.0)
    if not (math.isfinite(l0) and math.isfinite(l1)):
        return float("nan")
    inside = (alpha >= -1e-9) & (alpha <= 1 + 1e-9) & np.isfinite(loss)
    top = max([l0, l1, *loss[inside].tolist()])
    return float(top - max(l0, l1))


def verdict_window(alpha: np.ndarray) -> np.ndarray:
    """Mask of the points the verdict uses: 0 ≤ α ≤ 1, or every point when fewer than 2 are inside."""
    alpha = np.asarray(alpha, dtype=np.float64)
    inside = (alpha >= -1e-9) & (alpha <= 1 + 1e-9)
    return inside if inside.sum() >= 2 else np.ones_like(inside)


def path_summary(alpha: np.ndarray, loss: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """Bumps, Δ, monotonicity and barrier of a loss path (the ``/paths/<name>`` attributes)."""
    alpha = np.asarray(alpha, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    order = np.argsort(alpha, kind="stable")
    alpha, loss = alpha[order], loss[order]
    win = verdict_window(alpha)
    bumps = find_bumps(alpha[win], loss[win], tolerance)
    delta = max_rise(loss[win])
    return {
        "bumps": [b.as_list() for b in bumps],
        "bump_returns": [b.returns for b in bumps],
        "n_bumps": len(bumps),
        "max_bump": delta,
        "monotonic": bool(delta <= tolerance),
        "tolerance": float(tolerance),
        "verdict_window": [float(alpha[win].min()), float(alpha[win].max())] if win.any() else [],
        "barrier": barrier(alpha, loss),
        "nonfinite": int((~np.isfinite(loss[win])).sum()),
    }


def verdict_line(summary: dict) -> str:
    """One line: monotonic or not, Δ, bumps and where, distances, barrier, BatchNorm handling."""
    tol = summary.get("tolerance", DEFAULT_TOLERANCE)
    if summary.get("monotonic"):
        head = f"monotonic (largest rise Δ={summary['max_bump']:.3g} ≤ tolerance {tol:g})"
    else:
        where = ", ".join(f"α {b[0]:.3g}→{b[1]:.3g} Δ={b[2]:.3g}" + ("" if r else " (never comes back down)")
                          for b, r in zip(summary["bumps"], summary.get("bump_returns", [True] * 99)))
        n = summary["n_bumps"]
        head = (f"NON-monotonic: largest bump Δ={summary['max_bump']:.3g} > tolerance {tol:g}; "
                f"{n} bump{'s' if n != 1 else ''} ({where})")
    parts = [head]
    if "distance" in summary:
        parts.append(f"‖θ₁−θ₀‖={summary['distance']:.4g} (relative {summary['relative_distance']:.3g})")
    if math.isfinite(summary.get("barrier", float("nan"))):
        parts.append(f"barrier {summary['barrier']:.3g}")
    if "bn_reestimated" in summary:
        if summary["bn_reestimated"]:
            parts.append("BatchNorm statistics re-estimated at every α on the training batches")
        elif summary.get("has_batchnorm"):
            parts.append("BatchNorm statistics interpolated, NOT re-estimated (--no-bn-reestimate)")
    if summary.get("nonfinite"):
        parts.append(f"{summary['nonfinite']} non-finite loss value(s) skipped")
    return "; ".join(parts)


def path_bumps(p: dict, alpha: np.ndarray, loss: np.ndarray) -> list:
    """The bumps of a stored path ``p`` (``/paths/<name>``'s datasets and attributes) as ``[start, peak, height]``
    lists: those its file records (the verdict's), else found again by the same rule (:func:`path_summary`) with
    the file's tolerance."""
    bumps = p.get("bumps")
    if isinstance(bumps, list):
        return bumps
    return path_summary(alpha, loss, float(p.get("tolerance", DEFAULT_TOLERANCE)))["bumps"]
