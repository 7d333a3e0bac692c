"""Exporters: legacy ASCII VTK (for ParaView/VisIt renderings, as in Li et al.'s ``h52vtp``), NumPy
``.npz`` and CSV.

VTK layout: a 2D surface becomes a ``STRUCTURED_GRID`` whose points are (x, y, loss) -- the landscape
is a real height field in 3D -- with every surface attached as point data; a 3D volume becomes
``STRUCTURED_POINTS`` (image data: origin and spacing from the coordinates) or, when a coordinate is
not evenly spaced, a ``RECTILINEAR_GRID``. VTK orders points with x fastest, then y, then z, i.e.
the flat order of ``Z.T``. Points not computed are written as ``nan`` in the point data (VTK 9 reads
it) and get the lowest finite height, so the mesh stays valid; ``computed`` (0/1) marks them.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np

from ..errors import LandscapeError
from ..results import Result
from ..schema import AXES


def _num(v: float) -> str:
    if np.isnan(v):
        return "nan"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.9g}"


def _block(values: np.ndarray, per_line: int = 9) -> list[str]:
    flat = [_num(float(v)) for v in np.asarray(values, dtype=np.float64).reshape(-1)]
    return [" ".join(flat[i:i + per_line]) for i in range(0, len(flat), per_line)]


def _vtk_name(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "values"


def _point_data(result: Result, lines: list[str], n: int) -> None:
    lines.append(f"POINT_DATA {n}")
    for name in result.surface_names():
        lines.append(f"SCALARS {_vtk_name(name)} double 1")
        lines.append("LOOKUP_TABLE default")
        lines.extend(_block(result.surfaces[name].T))
    done = result.done if result.done is not None else np.ones(result.shape, bool)
    lines.append("SCALARS computed unsigned_char 1")
    lines.append("LOOKUP_TABLE default")
    flat = np.asarray(done, dtype=np.uint8).T.reshape(-1)
    lines.extend(" ".join(str(int(v)) for v in flat[i:i + 30]) for i in range(0, flat.size, 30))


def write_vtk(result: Result, path: str, surface: str | None = None, log: bool = False,
              zmax: float | None = None) -> str:
    """Write ``result`` as legacy ASCII VTK. For a 2D grid the height is ``surface`` (default: the train
    loss), as log₁₀ with ``log`` and clipped at ``zmax`` when given (Li et al.'s options), both for the
    geometry only; point data always hold the raw values."""
    if result.ndim not in (2, 3):
        raise LandscapeError(f"VTK export needs a 2D or 3D surface; {result.path} is "
                             f"{result.ndim}D: use --format csv or npz")
    title = result.title().encode("ascii", "replace").decode()[:250]
    lines = ["# vtk DataFile Version 3.0", title or "landscape", "ASCII"]
    x, y = result.coords["x"], result.coords["y"]
    if result.ndim == 2:
        name = surface or result.default_surface()
        if name not in result.surfaces:
            raise LandscapeError(f"{result.path} has no surface {name!r}; choose --surface among "
                                 f"{', '.join(result.surface_names())}")
        h = np.array(result.surfaces[name], dtype=np.float64)
        if log:
            with np.errstate(divide="ignore", invalid="ignore"):
                h = np.where(h > 0, np.log10(h), np.nan)
        if zmax is not None:
            h = np.minimum(h, zmax)
        fin = np.isfinite(h)
        h[~fin] = float(h[fin].min()) if fin.any() else 0.0
        nx, ny = len(x), len(y)
        lines += ["DATASET STRUCTURED_GRID", f"DIMENSIONS {nx} {ny} 1", f"POINTS {nx * ny} double"]
        X, Y = np.meshgrid(x, y, indexing="ij")
        pts = np.stack([X.T.reshape(-1), Y.T.reshape(-1), h.T.reshape(-1)], axis=1)
        lines.extend(" ".join(_num(v) for v in p) for p in pts)
        _point_data(result, lines, nx * ny)
    else:
        z = result.coords["z"]
        dims = (len(x), len(y), len(z))
        steps = [np.diff(c) for c in (x, y, z)]
        uniform = all(len(d) == 0 or np.allclose(d, d[0], rtol=1e-6, atol=0) for d in steps)
        if uniform:
            spacing = [float(d[0]) if len(d) else 1.0 for d in steps]
            lines += ["DATASET STRUCTURED_POINTS", f"DIMENSIONS {dims[0]} {dims[1]} {dims[2]}",
                      f"ORIGIN {_num(x[0])} {_num(y[0])} {_num(z[0])}",
                      f"SPACING {' '.join(_num(s) for s in spacing)}"]
        else:
            lines += ["DATASET RECTILINEAR_GRID", f"DIMENSIONS {dims[0]} {dims[1]} {dims[2]}"]
            for a, c in zip(("X", "Y", "Z"), (x, y, z)):
                lines.append(f"{a}_COORDINATES {len(c)} double")
                lines.extend(_block(c))
        _point_data(result, lines, int(np.prod(dims)))
    with open(path, "w", encoding="ascii") as f:
        f.write("\n".join(lines) + "\n")
    return path


def write_npz(result: Result, path: str) -> str:
    """Every array a plot could use: ``x``/``y``/``z``, each surface, ``done``, ``paths/<name>/<key>``,
    ``trajectory/coords``, curvature arrays, metric values and layer-wise arrays, plus ``attrs`` and
    ``config`` as JSON strings (``np.load(..., allow_pickle=False)`` reads it all)."""
    out: dict[str, np.ndarray] = {}
    for a in AXES[: result.ndim]:
        out[a] = result.coords[a]
    for name, z in result.surfaces.items():
        out[name] = z
    if result.done is not None and result.ndim:
        out["done"] = np.asarray(result.done, dtype=np.uint8)
    for name, p in result.paths.items():
        for k, v in p.items():
            if isinstance(v, np.ndarray) and v.dtype.kind in "fiub":
                out[f"paths/{name}/{k}"] = v
    if result.trajectory is not None:
        for k, v in result.trajectory.items():
            if isinstance(v, np.ndarray) and v.dtype.kind in "fiu":
                out[f"trajectory/{k}"] = v
    _flatten_numeric(result.curvature or {}, "curvature", out)
    for name, (v, _) in result.metrics.items():
        arr = np.asarray(v)
        if arr.dtype.kind in "fiub":
            out[f"metrics/{name}"] = arr
    for q, v in (result.layerwise or {}).items():
        if isinstance(v, np.ndarray):
            out[f"layerwise/{q}"] = v
    if "layers" in (result.layerwise or {}):
        out["layerwise/layers"] = np.asarray(result.layerwise["layers"], dtype=str)
    out["attrs"] = np.asarray(json.dumps(result.attrs, default=str))
    out["config"] = np.asarray(json.dumps(result.config, default=str))
    np.savez_compressed(path, **out)
    return path if path.endswith(".npz") else path + ".npz"


def _flatten_numeric(tree: dict, prefix: str, out: dict) -> None:
    for k, v in tree.items():
        if isinstance(v, dict):
            if not k.endswith("attrs"):
                _flatten_numeric(v, f"{prefix}/{k}", out)
        elif isinstance(v, np.ndarray | float | int) and np.asarray(v).dtype.kind in "fiu":
            out[f"{prefix}/{k}"] = np.asarray(v)


def write_csv(result: Result, path: str) -> str:
    """One row per grid point: ``x[,y[,z]]``, each surface, ``done`` (rows in ``Z``'s C order: x slowest).
    A file with no grid but a path gets one row per α instead."""
    if result.ndim:
        axes = list(AXES[: result.ndim])
        names = result.surface_names()
        grids = np.meshgrid(*[result.coords[a] for a in axes], indexing="ij")
        cols = [g.reshape(-1) for g in grids] + [result.surfaces[n].reshape(-1) for n in names]
        done = result.done if result.done is not None else np.ones(result.shape, bool)
        header = axes + names + ["done"]
        cols.append(np.asarray(done, dtype=np.uint8).reshape(-1))
    elif result.paths:
        name = "interpolation" if "interpolation" in result.paths else next(iter(result.paths))
        p = result.paths[name]
        keys = ["alpha"] + sorted(k for k, v in p.items() if isinstance(v, np.ndarray) and k != "alpha"
                                  and np.shape(v) == np.shape(p["alpha"]))
        header, cols = keys, [np.asarray(p[k]).reshape(-1) for k in keys]
    else:
        raise LandscapeError(f"{result.path} has no surface or path to write as CSV; use --format npz for its "
                             "metrics and curvature")
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row in zip(*cols):
            w.writerow([_num(float(v)) if isinstance(v, float | np.floating) else int(v) for v in row])
    return path


def export(result: Result, fmt: str, out: str | None = None, **kw) -> str:
    """Write ``result`` as ``fmt`` (vtk, npz, csv) to ``out`` (default: beside the input, same stem)."""
    ext = {"vtk": ".vtk", "npz": ".npz", "csv": ".csv"}
    if fmt not in ext:
        raise LandscapeError(f"--format {fmt!r}: choose vtk, npz or csv")
    path = out or os.path.splitext(result.path)[0] + ext[fmt]
    if fmt == "vtk":
        return write_vtk(result, path, **kw)
    if fmt == "npz":
        return write_npz(result, path)
    return write_csv(result, path)
