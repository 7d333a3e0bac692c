"""The Hessian's spectral density (SLQ, docs/curvature.md) on a log y axis, with the top eigenvalues marked.

A log axis because the density of a network's Hessian is a bulk near zero holding almost all the
mass plus a few outliers whose density is orders of magnitude smaller (Ghorbani et al. 2019,
Papyan 2020): on a linear axis the outliers -- the directions that matter for sharpness -- vanish.
"""

from __future__ import annotations

import numpy as np

from ..errors import LandscapeError
from ..results import Result
from .common import OPERATOR_LABELS, new_figure, outside_legend, save, style, suptitle

#: densities below this are drawn as this (a log axis cannot show 0; SLQ tails underflow)
FLOOR = 1e-12


#: /curvature/<operator> groups of ``landscape hessian --operator ggn|fisher`` (overlaid on the Hessian's density)
OTHER_OPERATORS = {"ggn": (OPERATOR_LABELS["ggn"], "#ff7f0e"), "fisher": (OPERATOR_LABELS["fisher"], "#9467bd")}


def other_spectra(result: Result) -> dict[str, dict]:
    """The GGN / empirical-Fisher results stored beside the Hessian's (``/curvature/ggn``, ``/curvature/fisher``)."""
    c = result.curvature or {}
    return {k: c[k] for k in OTHER_OPERATORS if isinstance(c.get(k), dict)
            and ("density" in c[k] or "eigenvalues" in c[k])}


def has_spectrum(result: Result) -> bool:
    c = result.curvature or {}
    return "density" in c or "eigenvalues" in c or bool(other_spectra(result))


def _draw_other(ax, result: Result) -> None:
    """Each GGN / Fisher density (and top eigenvalue) over the Hessian's, in its own colour."""
    for op, g in other_spectra(result).items():
        label, color = OTHER_OPERATORS[op]
        d = g.get("density")
        if isinstance(d, dict) and "grid" in d and "values" in d:
            t = np.asarray(d["grid"], dtype=float).reshape(-1)
            phi = np.asarray(d["values"], dtype=float).reshape(-1)
            ok = np.isfinite(t) & np.isfinite(phi)
            ax.semilogy(t[ok], np.maximum(phi[ok], FLOOR), "-", color=color, lw=1.2, alpha=0.85,
                        label=f"{label} density (SLQ)")
        eig = np.asarray(g.get("eigenvalues", []), dtype=float).reshape(-1)
        eig = eig[np.isfinite(eig)]
        if eig.size:
            ax.axvline(float(eig.max()), color=color, ls="--", lw=1.0, label=f"{label} λ1={float(eig.max()):.3g}")


def draw_density(ax, result: Result, top: int = 5) -> None:
    """Density φ(t) (log y) and up to ``top`` eigenvalues as dashed vertical lines, with tr(H) ± stderr and
    the SLQ settings in the legend. With eigenvalues only, draws them as stems."""
    c = result.curvature or {}
    if not has_spectrum(result):
        raise LandscapeError(f"{result.path} holds no spectral density or eigenvalues; compute them with "
                             "'landscape hessian ... --density --out FILE'")
    eig = np.asarray(c.get("eigenvalues", []), dtype=float).reshape(-1)
    eig = eig[np.isfinite(eig)]
    others = other_spectra(result)
    if others:
        _draw_other(ax, result)
    if "density" in c and "grid" in c["density"] and "values" in c["density"]:
        t = np.asarray(c["density"]["grid"], dtype=float).reshape(-1)
        phi = np.asarray(c["density"]["values"], dtype=float).reshape(-1)
        ok = np.isfinite(t) & np.isfinite(phi)
        da = c["density"].get("attrs", {})
        bits = [f"{k} {da[k]}" for k in ("runs", "steps") if k in da]
        if "sigma" in da:
            bits.append(f"σ {float(da['sigma']):.2g}")
        ax.semilogy(t[ok], np.maximum(phi[ok], FLOOR), "-", color="#1f77b4",
                    label="spectral density (SLQ" + (f": {', '.join(bits)}" if bits else "") + ")")
        ax.set_ylabel("density φ(λ) (log scale)")
        ymax = max(float(np.nanmax(phi[ok])) if ok.any() else 1.0, FLOOR * 10)
        ax.set_ylim(max(FLOOR, ymax * 1e-10), ymax * 3)
    elif others:
        ax.set_ylabel("density φ(λ) (log scale)")
    else:
        ax.set_yscale("log")
        ax.set_ylabel("(no density stored)")
        ax.set_ylim(1e-3, 1.0)
    shown = np.sort(eig)[::-1][:top]
    for i, lam in enumerate(shown):
        ax.axvline(lam, color="#d62728", ls="--", lw=1.0, label="top eigenvalues (Lanczos)" if i == 0 else None)
        # labels staggered in height: close eigenvalues (the usual case below λ1) would overprint
        ax.annotate(f"λ{i + 1}={lam:.3g}", xy=(lam, 0.02 + 0.2 * (i % 3)), xycoords=("data", "axes fraction"),
                    xytext=(-2, 0), textcoords="offset points", fontsize=7, color="#d62728", ha="right",
                    va="bottom", rotation=90)
    if "smallest" in c and np.isfinite(c["smallest"]):
        ax.axvline(float(c["smallest"]), color="#2ca02c", ls=":", lw=1.0, label=f"λmin={float(c['smallest']):.3g}")
    if "trace" in c:
        se = (c.get("trace_attrs") or {}).get("stderr")
        text = f"tr(H) = {float(c['trace']):.4g}" + (f" ± {float(se):.2g}" if se is not None else "")
        ax.plot([], [], " ", label=text)
    ax.axvline(0.0, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("Hessian eigenvalue λ" if not others else "eigenvalue λ (Hessian" + "".join(
        f", {OTHER_OPERATORS[k][0]}" for k in others) + ")")
    ax.grid(True, which="major", alpha=0.3)
    # under the axes: inside, it sat over the eigenvalue lines (the outliers are what the plot is for)
    outside_legend(ax, ax.get_legend_handles_labels()[0], ncols=1, fontsize=7)


def density_figure(result: Result, opts=None):
    """The spectrum figure (not saved); only ``figsize`` and ``title`` of ``opts`` apply."""
    figsize = getattr(opts, "figsize", None) or (6.0, 4.6)
    fig = new_figure(*figsize)
    ax = fig.add_subplot()
    draw_density(ax, result)
    suptitle(fig, getattr(opts, "title", None) or result.title("Hessian spectrum", surface=False))
    return fig


def plot_density(result: Result, path: str, dpi: int = 150, opts=None) -> str:
    with style():
        return save(density_figure(result, opts), path, dpi)
