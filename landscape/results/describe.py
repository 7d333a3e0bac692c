"""``landscape info``: what is in a result file, how it was made, and what is missing, as text."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..schema import AXES
from .labels import param_text
from .reader import LI_FORMAT, Result


def _short(v: Any, n: int = 12) -> str:
    s = str(v)
    return s[:n] + "…" if len(s) > n + 1 else s


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _value_text(v: Any) -> str:
    if isinstance(v, np.ndarray):
        flat = v.reshape(-1)
        if flat.size <= 4 and flat.dtype.kind in "fiu":
            return "[" + ", ".join(_fmt(float(x)) for x in flat) + "]"
        return f"array {tuple(v.shape)}"
    if isinstance(v, float):
        return _fmt(v)
    return str(v)


def describe(result: Result) -> str:
    """What is in a result file, how it was made, and what is missing (``landscape info``)."""
    r = result
    lines: list[str] = [r.path]
    if r.format == LI_FORMAT:
        lines.append("  format: Li et al. loss-landscape file (surfaces stored in meshgrid order; shown here "
                     "transposed so Z[i,j] is at (x[i], y[j]))")
        if r.attrs.get("dir_file"):
            lines.append(f"  directions file: {r.attrs['dir_file']}")
    else:
        lines.append(f"  format: landscape, format_version {r.format_version}, kind {r.kind or '?'}")
        a, c = r.attrs, r.config
        made = [f"landscape {a.get('landscape_version', '?')}", f"torch {a.get('torch_version', '?')}"]
        lines.append(f"  created: {a.get('created', '?')} with {', '.join(made)}")
        if a.get("command"):
            lines.append(f"  command: {a['command']}")
        if a.get("metrics_command"):
            lines.append(f"  metrics added by: {a['metrics_command']}")
        what = []
        for key in ("model", "model_args", "checkpoint", "data", "test_data", "loss", "samples"):
            if c.get(key) not in (None, "", {}):
                what.append(f"{key}={c[key]}")
        if what:
            lines.append("  problem: " + ", ".join(what))
        for split, smp in r.samples.items():
            lines.append(f"  {split} samples: {smp['n']} of {smp.get('of', '?')} (seed {smp.get('seed', '?')}; "
                         f"indices in /samples/{split})")
        fps = [f"{k.split('_')[0]} {_short(a[k])}" for k in ("model_fingerprint", "data_fingerprint") if a.get(k)]
        if fps:
            lines.append("  fingerprints: " + ", ".join(fps))
        for axis, meta in r.directions_meta.items():
            keys = ("kind", "norm", "ignore", "dir_type", "seed", "orthogonalized", "eigenvalue", "scale",
                    "explained_variance", "source")
            bits = [f"{k}={_value_text(meta[k]) if not isinstance(meta[k], list) else meta[k]}"
                    for k in keys if k in meta]
            lines.append(f"  direction {axis}: " + (", ".join(bits) or "(no attributes)"))
    if r.ndim:
        lines.append(f"  grid: {r.ndim}D, " + " × ".join(str(n) for n in r.shape) + f" = {int(np.prod(r.shape))} "
                     "points")
        for axis in AXES[: r.ndim]:
            cc = r.coords[axis]
            lines.append(f"    {axis}: {_fmt(cc[0])} … {_fmt(cc[-1])} ({len(cc)} points)")
        total = int(np.prod(r.shape))
        n_done = int(np.asarray(r.done).sum()) if r.done is not None else 0
        lines.append(f"  surfaces: {n_done}/{total} points done" + ("" if n_done == total else
                     " (incomplete: re-run the same command to resume)"))
        for name in r.surface_names():
            z = r.surfaces[name]
            fin = np.isfinite(z)
            n_fin = int(fin.sum())
            if r.done is not None and r.done.any():
                n_nan = int((np.isnan(z) & r.done).sum())
            else:
                n_nan = 0
            n_inf = int(np.isinf(z).sum())
            text = f"    {name}: {n_fin}/{total} finite"
            if n_fin:
                text += f", min {_fmt(float(z[fin].min()))}, max {_fmt(float(z[fin].max()))}"
                if n_fin and name.endswith("_loss"):
                    ci = r.center_index()
                    cv = z[ci]
                    if np.isfinite(cv):
                        at = tuple(float(r.coords[a][i]) for a, i in zip(AXES, ci))
                        if all(c == 0.0 for c in at):
                            text += f", at the centre {_fmt(float(cv))}"
                        else:  # 0 is not on the grid: say which point it is
                            where = ", ".join(f"{c:g}" for c in at)
                            text += f", at the nearest grid point to the centre ({where}) {_fmt(float(cv))}"
            if n_nan or n_inf:
                text += f"  [{n_nan} NaN, {n_inf} inf among computed points]"
            if not n_fin and r.done is not None and r.done.all():
                text += "  (no values: not defined for this problem)"
            lines.append(text)
    else:
        lines.append("  grid: none (no /coords and /surfaces)")
    for name, p in r.paths.items():
        alpha = np.asarray(p.get("alpha", []))
        d = np.asarray(p.get("done", np.ones_like(alpha)), bool)
        text = f"  path {name}: {int(d.sum())}/{alpha.size} α values done"
        if alpha.size:
            text += f", α ∈ [{_fmt(alpha.min())}, {_fmt(alpha.max())}]"
        keys = [k for k in p if isinstance(p[k], np.ndarray) and k not in ("alpha", "done")]
        if keys:
            text += ", " + ", ".join(keys)
        lines.append(text)
        extras = [f"{k}={_value_text(p[k])}" for k in ("monotonic", "n_bumps", "max_bump", "barrier", "distance",
                                                        "relative_distance", "bn_reestimated") if k in p]
        if extras:
            lines.append("    " + ", ".join(extras))
    if r.trajectory is not None:
        tc = r.trajectory.get("coords")
        ev = r.trajectory.get("explained_variance")
        n = 0 if tc is None else len(tc)
        text = f"  trajectory: {n} checkpoints projected on the (x, y) plane"
        if isinstance(ev, list | np.ndarray) and len(ev):
            text += ", explained variance " + ", ".join(f"{100 * float(e):.1f}%" for e in ev)
        lines.append(text)
    if r.curvature is not None:
        cv = r.curvature
        if "eigenvalues" in cv:
            ev = np.asarray(cv["eigenvalues"]).reshape(-1)
            m = cv.get("eigenvalues_attrs", {}).get("method")
            lines.append(f"  curvature: top {ev.size} eigenvalues " + ", ".join(_fmt(float(e)) for e in ev[:5])
                         + (" …" if ev.size > 5 else "") + (f" ({m})" if m else ""))
        if "smallest" in cv:
            lines.append(f"  curvature: smallest eigenvalue {_fmt(float(cv['smallest']))}")
        if "trace" in cv:
            ta = cv.get("trace_attrs", {})
            se = ta.get("stderr")
            lines.append(f"  curvature: trace {_fmt(float(cv['trace']))}"
                         + (f" ± {_fmt(float(se))}" if se is not None else "")
                         + (f" ({ta['method']}, {ta.get('matvecs', '?')} matvecs)" if ta.get("method") else ""))
        if "density" in cv:
            dens = cv["density"]
            grid = np.asarray(dens.get("grid", []))
            da = dens.get("attrs", {})
            lines.append(f"  curvature: spectral density on {grid.size} points"
                         + (f", {da.get('runs')} runs × {da.get('steps')} Lanczos steps" if "runs" in da else ""))
        if "n_eigenvectors" in cv:
            lines.append(f"  curvature: {cv['n_eigenvectors']} eigenvectors stored")
    if r.metrics:
        lines.append(f"  metrics ({len(r.metrics)}):")
        w = max(len(n) for n in r.metrics)
        for name, (v, a) in r.metrics.items():
            params = ", ".join(f"{k}={param_text(x)}" for k, x in a.items())
            lines.append(f"    {name:<{w}}  {_value_text(v)}" + (f"  ({params})" if params else ""))
    if r.layerwise:
        qs = [k for k in r.layerwise if k not in ("layers", "params")]
        layers = r.layerwise.get("layers", [])
        lines.append(f"  layerwise: {len(layers)} layers ({', '.join(layers[:4])}{' …' if len(layers) > 4 else ''})"
                     f", {len(qs)} quantities")
    if r.plane is not None:
        labels = r.plane.get("labels") or []
        pts = ", ".join(f"{lab}=({', '.join(f'{v:.3g}' for v in c)})" for lab, c in zip(labels, r.plane["coords"]))
        lines.append(f"  plane through three models: {pts}")
    if r.track:
        t = r.track
        steps = np.asarray(t.get("step", []))
        done = np.asarray(t.get("done", np.zeros(len(steps))), dtype=bool)
        ta = t.get("attrs", {})
        lam = np.asarray(t.get("lambda_max", []), dtype=float)
        qs = [k for k, v in t.items() if isinstance(v, np.ndarray) and k not in ("step", "done")]
        span = f"steps {int(steps[0])}–{int(steps[-1])}" if len(steps) else "no steps"
        lines.append(f"  track: {int(done.sum())}/{len(steps)} checkpoints done ({span}), operator "
                     f"{ta.get('operator', 'hessian')}" + (f", lr {ta['lr']}" if "lr" in ta else "")
                     + (f", λ_max {np.nanmin(lam):.4g}…{np.nanmax(lam):.4g}" if np.isfinite(lam).any() else "")
                     + f"; {len(qs)} quantities")
    known = {"coords", "directions", "surfaces", "paths", "trajectory", "curvature", "metrics", "layerwise", "plane",
             "samples", "track"}
    other = [g for g in r.groups if g not in known] if r.format != LI_FORMAT else []
    if other:
        lines.append("  other groups: " + ", ".join(other))
    # what other commands can add to this file (--out FILE), and what only comes in files of its own
    addable, own = [], []
    if r.curvature is None:
        addable.append("curvature (landscape hessian --out FILE)")
    if not r.metrics:
        addable.append("metrics (landscape sharpness --out FILE)")
    if not r.layerwise:
        addable.append("layer-wise conditioning (landscape sharpness --metrics layerwise --out FILE)")
    if not r.ndim:
        own.append("surfaces (landscape surface, a file of its own)")
    if not r.paths:
        own.append("interpolation path (landscape interpolate, a file of its own)")
    if addable:
        lines.append("  can be added (same model, data, loss and samples): " + "; ".join(addable))
    if own:
        lines.append("  not in this file: " + "; ".join(own))
    return "\n".join(lines)
