"""Exporters: legacy ASCII VTK (the default, dependency-free; for ParaView/VisIt renderings, as in Li et
al.'s ``h52vtp``), VTK XML ``.vts`` (binary structured grid, written here) and, through meshio, ``.vtu``
(binary) and STL/OBJ/PLY meshes of a 2D surface (to render or 3D-print a landscape), NumPy ``.npz``, CSV.

VTK layout: a 2D surface becomes a ``STRUCTURED_GRID`` whose points are (x, y, loss) -- the landscape
is a real height field in 3D -- with every surface attached as point data; a 3D volume becomes
``STRUCTURED_POINTS`` (image data: origin and spacing from the coordinates) or, when a coordinate is
not evenly spaced, a ``RECTILINEAR_GRID``. VTK orders points with x fastest, then y, then z, i.e.
the flat order of ``Z.T``. Points not computed are written as ``nan`` in the point data (VTK 9 reads
it) and get the lowest finite height, so the mesh stays valid; ``computed`` (0/1) marks them.
"""

from __future__ import annotations

import base64
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
                             f"{result.ndim}D: use `format` csv or npz")
    title = result.title().encode("ascii", "replace").decode()[:250]
    lines = ["# vtk DataFile Version 3.0", title or "landscape", "ASCII"]
    x, y = result.coords["x"], result.coords["y"]
    if result.ndim == 2:
        h, _ = height(result, surface, log, zmax)  # missing points at the lowest height
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


def height(result: Result, surface: str | None = None, log: bool = False,
           zmax: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The height field of a 2D surface for meshes: ``(h, missing)`` with ``h[i, j]`` the (log₁₀, clipped)
    value at ``(x[i], y[j])`` and missing points filled with the lowest finite height (``missing`` marks them)."""
    name = surface or result.default_surface()
    if name not in result.surfaces:
        raise LandscapeError(f"{result.path} has no surface {name!r}; choose `surface` among "
                             f"{', '.join(result.surface_names())}")
    h = np.array(result.surfaces[name], dtype=np.float64)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            h = np.where(h > 0, np.log10(h), np.nan)
    if zmax is not None:
        h = np.minimum(h, zmax)
    missing = ~np.isfinite(h)
    h[missing] = float(h[~missing].min()) if (~missing).any() else 0.0
    return h, missing


def _points(result: Result, h: np.ndarray | None) -> np.ndarray:
    """Grid points in VTK order (x fastest, then y, then z): (x, y, h) for 2D, (x, y, z) for 3D."""
    axes = [result.coords[a] for a in AXES[: result.ndim]]
    grids = list(np.meshgrid(*axes, indexing="ij"))
    if result.ndim == 2:
        grids.append(h)
    return np.stack([g.transpose().reshape(-1) for g in grids], axis=1)


def _point_arrays(result: Result) -> dict[str, np.ndarray]:
    out = {_vtk_name(n): np.ascontiguousarray(result.surfaces[n].T.reshape(-1)) for n in result.surface_names()}
    done = result.done if result.done is not None else np.ones(result.shape, bool)
    out["computed"] = np.asarray(done, np.uint8).T.reshape(-1)
    return out


def _b64(a: np.ndarray) -> str:
    """VTK XML ``format="binary"`` data: base64 of a UInt64 byte count followed by the raw little-endian bytes."""
    raw = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
    return base64.b64encode(np.uint64(len(raw)).tobytes() + raw).decode("ascii")


def _vtk_type(a: np.ndarray) -> str:
    return {"f8": "Float64", "u1": "UInt8", "f4": "Float32", "i8": "Int64"}[a.dtype.str[1:]]


def write_vts(result: Result, path: str, surface: str | None = None, log: bool = False,
              zmax: float | None = None) -> str:
    """VTK XML structured grid (``.vts``, binary): a 2D surface as the height field (x, y, h) or a 3D volume
    as its (x, y, z) lattice, every surface and ``computed`` as point data. Written directly (meshio has no
    structured-grid writer); ParaView and VisIt open it."""
    if result.ndim not in (2, 3):
        raise LandscapeError(f"`format` vts needs a 2D or 3D surface; {result.path} is {result.ndim}D: use "
                             "`format` csv or npz")
    h = height(result, surface, log, zmax)[0] if result.ndim == 2 else None
    pts = _points(result, h)
    dims = list(result.shape) + [1] * (3 - result.ndim)
    extent = " ".join(f"0 {n - 1}" for n in dims)
    arrays = "".join(f'<DataArray type="{_vtk_type(v)}" Name="{k}" format="binary">{_b64(v)}</DataArray>'
                     for k, v in _point_arrays(result).items())
    text = ('<?xml version="1.0"?>\n<VTKFile type="StructuredGrid" version="1.0" byte_order="LittleEndian" '
            f'header_type="UInt64">\n<StructuredGrid WholeExtent="{extent}">\n<Piece Extent="{extent}">\n'
            f'<PointData>{arrays}</PointData>\n<Points><DataArray type="Float64" NumberOfComponents="3" '
            f'format="binary">{_b64(pts.astype(np.float64))}</DataArray></Points>\n</Piece>\n</StructuredGrid>\n'
            '</VTKFile>\n')
    with open(path, "w", encoding="ascii") as f:
        f.write(text)
    return path


def _quads(nx: int, ny: int) -> np.ndarray:
    """Cells of an nx × ny grid (points x fastest) as quads (counter-clockwise seen from +z)."""
    i, j = np.meshgrid(np.arange(nx - 1), np.arange(ny - 1), indexing="ij")
    a = (j * nx + i).reshape(-1)
    return np.stack([a, a + 1, a + 1 + nx, a + nx], axis=1)


def write_mesh(result: Result, path: str, fmt: str, surface: str | None = None, log: bool = False,
               zmax: float | None = None) -> str:
    """A 2D surface as a mesh through meshio: ``vtu`` (binary unstructured grid, quads with every surface as
    point data; a 3D volume as hexahedra), ``stl``/``obj``/``ply`` (two triangles per grid cell, cells
    touching a point not computed left out). Needs ``pip install 'landscape[mesh]'``."""
    try:
        import meshio
    except ImportError:
        raise LandscapeError(f"`format` {fmt} needs meshio: pip install 'landscape[mesh]' (or pip install meshio); "
                             "`format` vtk needs nothing") from None
    if fmt == "vtu" and result.ndim == 3:
        nx, ny, nz = result.shape
        pts = _points(result, None)
        q = _quads(nx, ny)
        hexes = np.concatenate([q + k * nx * ny for k in range(nz - 1)], axis=0)
        hexes = np.concatenate([hexes, hexes + nx * ny], axis=1)
        mesh = meshio.Mesh(pts, [("hexahedron", hexes)], point_data=_point_arrays(result))
        mesh.write(path, file_format="vtu", binary=True)
        return path
    if result.ndim != 2:
        raise LandscapeError(f"`format` {fmt} needs a 2D surface (a height field); {result.path} is "
                             f"{result.ndim}D" + (": use `format` vtu, vts or vtk" if result.ndim == 3 else
                                                  ": use `format` csv or npz"))
    nx, ny = result.shape
    if nx < 2 or ny < 2:
        raise LandscapeError(f"`format` {fmt}: a mesh needs at least 2 points along x and y; {result.path} has "
                             f"{nx}×{ny}")
    h, missing = height(result, surface, log, zmax)
    pts = _points(result, h)
    quads = _quads(nx, ny)
    if fmt == "vtu":
        mesh = meshio.Mesh(pts, [("quad", quads)], point_data=_point_arrays(result))
        mesh.write(path, file_format="vtu", binary=True)
        return path
    keep = ~missing.T.reshape(-1)[quads].any(axis=1)
    q = quads[keep]
    tris = np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]], axis=0).astype(np.int32)
    if not len(tris):
        raise LandscapeError(f"{result.path}: no grid cell has all four corners computed; nothing to mesh")
    kw = {"binary": True} if fmt in ("stl", "ply") else {}
    meshio.Mesh(pts, [("triangle", tris)]).write(path, file_format=fmt, **kw)
    return path


MESH_FORMATS = ("vts", "vtu", "stl", "obj", "ply")


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
        raise LandscapeError(f"{result.path} has no surface or path to write as CSV; use `format` npz for its "
                             "metrics and curvature")
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row in zip(*cols):
            w.writerow([_num(float(v)) if isinstance(v, float | np.floating) else int(v) for v in row])
    return path


def export(result: Result, fmt: str, out: str | None = None, **kw) -> str:
    """Write ``result`` as ``fmt`` (vtk, npz, csv) to ``out`` (default: beside the input, same stem)."""
    ext = {f: f".{f}" for f in ("vtk", "npz", "csv", *MESH_FORMATS)}
    if fmt not in ext:
        raise LandscapeError(f"`format` {fmt!r}: choose {', '.join(ext)}")
    path = out or os.path.splitext(result.path)[0] + ext[fmt]
    if fmt == "vtk":
        return write_vtk(result, path, **kw)
    if fmt == "vts":
        return write_vts(result, path, **kw)
    if fmt in MESH_FORMATS:
        return write_mesh(result, path, fmt, **kw)
    if fmt == "npz":
        return write_npz(result, path)
    return write_csv(result, path)
