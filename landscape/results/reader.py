"""A read-only, in-memory view of a result file, for ``plot``, ``report``, ``info`` and ``export``.

Two layouts are read: ours (:mod:`landscape.schema`) and Li et al.'s loss-landscape files (root
datasets ``xcoordinates``, ``ycoordinates``, ``train_loss``, ...). Whatever the source, a
:class:`Result` holds ``Z[i, j(, k)]`` = the value at ``(x[i], y[j](, z[k]))``, NaN where nothing was
computed, so every consumer works in one orientation only.

Why everything is copied into memory and the file closed at once: a surface run rewrites the file
every few seconds (see :mod:`landscape.store`), so a reader must hold it open as briefly as possible.
HDF5 file locking is switched off (``locking=False``) for the same reason -- otherwise ``landscape plot``
on a file being written either blocks or fails, the problem Li et al.'s users hit.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from ..errors import LandscapeError
from ..schema import AXES, FORMAT, FORMAT_VERSION
from .checks import first_line, surface_problems

#: readers and writers open files without HDF5's own locking (see :mod:`landscape.store`)
H5_KW = {"locking": False}
LI_FORMAT = "li2018"


@dataclass
class Result:
    """Everything in a result file that plots and reports use (directions' tensors are left on disk).

    ``kind`` is the run that made the file (``surface``, ``interpolation``, ``sharpness``, ``hessian``,
    ...), ``format`` is ``"landscape"`` or ``"li2018"``; ``ndim`` is 0 when the file holds no surface
    (a path, metrics or curvature only).
    """

    path: str
    format: str
    format_version: int | None
    kind: str
    ndim: int
    coords: dict[str, np.ndarray] = field(default_factory=dict)
    surfaces: dict[str, np.ndarray] = field(default_factory=dict)
    done: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    directions_meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    paths: dict[str, dict[str, Any]] = field(default_factory=dict)
    trajectory: dict[str, Any] | None = None
    curvature: dict[str, Any] | None = None
    metrics: dict[str, tuple[Any, dict[str, Any]]] = field(default_factory=dict)
    layerwise: dict[str, Any] = field(default_factory=dict)
    plane: dict[str, Any] | None = None
    groups: list[str] = field(default_factory=list)
    #: ``--samples`` runs: {split: {"n": evaluated, "of": data set size, "seed": seed}} (indices in /samples/<split>)
    samples: dict[str, dict[str, int]] = field(default_factory=dict)
    #: ``landscape track``: /track's datasets (rows not done are NaN) and its attributes, or None
    track: dict[str, Any] | None = None

    # ------------------------------------------------------------------ conveniences
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(self.coords[a]) for a in AXES[: self.ndim])

    @property
    def name(self) -> str:
        """The file name without folder and extension, used to name the pictures made from it."""
        return os.path.splitext(os.path.basename(self.path))[0]

    def surface_names(self) -> list[str]:
        """Surfaces in display order: losses first, then accuracies, then curvature maps."""
        order = {m: i for i, m in enumerate(("loss", "acc", "lambda_max", "lambda_min", "convexity"))}
        splits = {"train": 0, "test": 1}
        return sorted(self.surfaces, key=lambda n: (order.get(n.split("_", 1)[-1], 99),
                                                    splits.get(n.split("_", 1)[0], 9), n))

    def has_values(self, name: str) -> bool:
        """True when a surface holds at least one finite value (accuracy of a regression is all NaN)."""
        return name in self.surfaces and bool(np.isfinite(self.surfaces[name]).any())

    def default_surface(self) -> str | None:
        """``train_loss`` when there, else the first loss, else the first surface with values."""
        names = [n for n in self.surface_names() if self.has_values(n)] or self.surface_names()
        if "train_loss" in names:
            return "train_loss"
        losses = [n for n in names if n.endswith("_loss")]
        return (losses or names or [None])[0]

    def center_index(self) -> tuple[int, ...]:
        """Grid index nearest the origin of every axis (the trained weights θ), per axis."""
        return tuple(int(np.argmin(np.abs(self.coords[a]))) for a in AXES[: self.ndim])

    def axis_label(self, axis: str) -> str:
        """``α (x direction: random)`` style labels, with the explained variance of PCA axes."""
        meta = self.directions_meta.get(axis, {})
        kind = meta.get("kind")
        label = {"x": "α", "y": "β", "z": "γ"}[axis]
        if self.trajectory is not None and kind in (None, "pca") and axis in ("x", "y"):
            ev = self.trajectory.get("explained_variance")
            i = AXES.index(axis)
            if ev is not None and i < len(ev):
                return f"PC{i + 1} ({100 * float(ev[i]):.1f}% of variance)"
        if kind == "hessian":
            ev = meta.get("eigenvalue")
            extra = f", λ={float(ev):.3g}" if ev is not None else ""
            return f"{label} (Hessian eigenvector {AXES.index(axis) + 1}{extra})"
        if kind:
            return f"{label} ({axis} direction, {kind})"
        return f"{label} ({axis} direction)"

    def title(self, what: str = "", surface: bool = True) -> str:
        """One title line naming the model, the directions (kind, normalization) and the grid size
        (left out with ``surface=False``, for pictures of paths or spectra that do not use them)."""
        parts = []
        model = self.config.get("model") or self.attrs.get("model")
        if self.format == LI_FORMAT:
            parts.append(f"Li et al. file {os.path.basename(self.path)}")
        elif model:
            margs = self.config.get("model_args")
            if isinstance(margs, dict):
                margs = ",".join(f"{k}={v}" for k, v in margs.items())
            parts.append(f"{model}({margs})" if margs and isinstance(margs, str) else str(model))
        meta = self.directions_meta.get("x", {}) if surface else {}
        if meta.get("kind"):
            kind = str(meta["kind"])
            norm = meta.get("norm")
            bits = [f"{norm}-normalized" if norm and kind == "random" else ""]
            ign = meta.get("ignore")
            if kind == "random" and ign and ign != "none":
                bits.append(f"{ign} ignored")
            bits = [b for b in bits if b]
            parts.append(f"{kind} directions" + (f" ({', '.join(bits)})" if bits else ""))
        if self.ndim == 1 and surface:
            parts.append(f"{self.shape[0]} points")
        elif self.ndim and surface:
            parts.append("×".join(str(n) for n in self.shape) + " grid")
        if what:
            parts.append(what)
        return " — ".join(parts) if parts else os.path.basename(self.path)


# ---------------------------------------------------------------------------- reading
def _attr(v: Any) -> Any:
    """h5py attribute → plain Python (bytes → str, numpy scalars → numbers, JSON strings left as is)."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray) and v.dtype.kind in "SO":
        return [_attr(x) for x in v.tolist()]
    return v


def _json_attr(v: Any) -> Any:
    """Attributes that hold JSON (lists, dicts) decoded; anything else returned unchanged."""
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _attrs(obj, decode_json: bool = True) -> dict[str, Any]:
    out = {k: _attr(v) for k, v in obj.attrs.items()}
    return {k: _json_attr(v) for k, v in out.items()} if decode_json else out


def _hint(path: str) -> str:
    return "re-run the command that made it with --overwrite to recompute it (or restore a copy)"


def _check_surfaces(path: str, f, ndim: int) -> None:
    """Refuse values no run writes (garbage on disk) with one line; a partly done file is not damage.

    Every object header is opened first (not the data: directions can be large), so damaged metadata that
    would hide a surface raises here instead of leaving the surface out silently.
    """
    f.visititems(lambda name, obj: None)
    why = "/surfaces is there but /coords is not" if not ndim else surface_problems(f)
    if why:
        raise LandscapeError(f"{path} is damaged ({why}): {_hint(path)}")


def open_result(path: str) -> Result:
    """Read ``path`` (ours or Li et al.'s) into memory; a one-line :class:`LandscapeError` otherwise."""
    if not os.path.exists(path):
        raise LandscapeError(f"{path} does not exist (check the path; result files are written to outputs/ "
                             "by default)")
    if os.path.isdir(path):
        raise LandscapeError(f"{path} is a folder; give a result file such as {os.path.join(path, 'run.h5')}")
    if os.path.getsize(path) == 0:
        raise LandscapeError(f"{path} is empty (0 bytes); the run that made it was probably killed before it "
                             "wrote anything: re-run it with --overwrite")
    try:
        is_h5 = h5py.is_hdf5(path)
    except OSError as e:
        raise LandscapeError(f"{path} cannot be opened ({first_line(e)}); check its permissions") from None
    if not is_h5:
        raise LandscapeError(f"{path} is not an HDF5 file; give a .h5 file written by landscape (or by Li et al.'s "
                             "loss-landscape code); if landscape wrote it and was killed, re-run that command with "
                             "--overwrite")
    try:
        with h5py.File(path, "r", **H5_KW) as f:
            fmt = _attr(f.attrs.get("format"))
            if fmt == FORMAT:
                return _read_ours(path, f)
            if "xcoordinates" in f or "train_loss" in f and not isinstance(f["train_loss"], h5py.Group):
                return _read_li(path, f)
            keys = ", ".join(list(f.keys())[:6]) or "nothing"
            raise LandscapeError(f"{path} is HDF5 but neither a landscape result file (no format='landscape' "
                                 f"attribute) nor a Li et al. file (no xcoordinates); it holds {keys}: give a file "
                                 "written by landscape surface/interpolate/hessian/sharpness")
    except LandscapeError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError, TypeError, AttributeError) as e:
        raise LandscapeError(f"{path} cannot be read ({first_line(e)}); it may be truncated or corrupted: "
                             f"{_hint(path)}") from None


def _read_ours(path: str, f) -> Result:
    attrs = _attrs(f, decode_json=False)
    version = attrs.get("format_version")
    if isinstance(version, int | float) and int(version) > FORMAT_VERSION:
        raise LandscapeError(f"{path} has format_version {version}, newer than this landscape reads "
                             f"({FORMAT_VERSION}); upgrade landscape")
    config: dict[str, Any] = {}
    for key in ("config", "identity"):  # JSON written by every run: text that does not parse is damage
        if isinstance(attrs.get(key), str):
            try:
                value = json.loads(attrs[key])
            except ValueError:
                raise LandscapeError(f"{path} is damaged (its {key} attribute is not the JSON landscape wrote): "
                                     f"{_hint(path)}") from None
            if key == "config":
                config = value
    res = Result(path=path, format=FORMAT, format_version=version, kind=str(attrs.get("kind", "")), ndim=0,
                 attrs=attrs, config=config if isinstance(config, dict) else {}, groups=sorted(f.keys()))

    if isinstance(f.get("samples"), h5py.Group):
        for split, ds in f["samples"].items():
            if isinstance(ds, h5py.Dataset):
                res.samples[split] = {"n": int(ds.shape[0]) if ds.shape else 0,
                                      **{k: int(ds.attrs[k]) for k in ("of", "seed") if k in ds.attrs}}
    if "coords" in f:
        for a in AXES:
            if a in f["coords"]:
                res.coords[a] = np.asarray(f["coords"][a][()], dtype=np.float64).reshape(-1)
        res.ndim = len(res.coords)
    if "directions" in f:
        for a in AXES:
            if a in f["directions"]:
                res.directions_meta[a] = _attrs(f["directions"][a])
    if "surfaces" in f:
        _check_surfaces(path, f, res.ndim)
        shape = res.shape
        g = f["surfaces"]
        done = np.asarray(g["done"][()], dtype=bool) if "done" in g else None
        if done is not None and done.shape != shape:
            raise LandscapeError(f"{path}: /surfaces/done has shape {done.shape} but the coordinates give {shape}; "
                                 f"the file is inconsistent: {_hint(path)}")
        for name, ds in g.items():
            if name == "done" or not isinstance(ds, h5py.Dataset):
                continue
            z = np.array(ds[()], dtype=np.float64)
            if z.shape != shape:
                raise LandscapeError(f"{path}: /surfaces/{name} has shape {z.shape} but the coordinates give "
                                     f"{shape}; the file is inconsistent: {_hint(path)}")
            if done is not None:
                z[~done] = np.nan  # values land before the mask: a point counts only once marked done
            res.surfaces[name] = z
        res.done = done if done is not None else np.zeros(shape, bool)
    if "paths" in f:
        for name, g in f["paths"].items():
            if not isinstance(g, h5py.Group):
                continue
            p: dict[str, Any] = dict(_attrs(g))
            for k, ds in g.items():
                if isinstance(ds, h5py.Dataset):
                    p[k] = np.asarray(ds[()])
            if "done" in p and "alpha" in p:
                d = np.asarray(p["done"], bool)
                for k in list(p):
                    if k not in ("alpha", "done") and isinstance(p[k], np.ndarray) and p[k].shape == d.shape:
                        p[k] = np.where(d, p[k].astype(np.float64), np.nan)
            res.paths[name] = p
    if "trajectory" in f:
        g = f["trajectory"]
        t: dict[str, Any] = dict(_attrs(g))
        if isinstance(g, h5py.Group):
            for k, ds in g.items():
                if isinstance(ds, h5py.Dataset):
                    t[k] = np.asarray(ds[()], dtype=np.float64)
            if "coords" in g:
                t.update({k: v for k, v in _attrs(g["coords"]).items() if k not in t})
        res.trajectory = t
    if "plane" in f and isinstance(f["plane"], h5py.Group) and "coords" in f["plane"]:
        # the three models a --plane A B C surface passes through (Garipov et al. 2018)
        ds = f["plane"]["coords"]
        res.plane = {"coords": np.asarray(ds[()], dtype=np.float64), **_attrs(ds)}
    if "curvature" in f:
        res.curvature = _read_tree(f["curvature"])
        se = res.curvature.get("trace_attrs", {}).get("stderr")
        if "trace" in res.curvature and se is not None:
            res.curvature["trace_stderr"] = float(se)
    if "metrics" in f:
        for name, ds in f["metrics"].items():
            if isinstance(ds, h5py.Dataset):
                v = np.asarray(ds[()])
                res.metrics[name] = (v.item() if v.ndim == 0 else v, _attrs(ds))
    if "track" in f and isinstance(f["track"], h5py.Group):
        res.track = _read_track(f["track"])
    if "layerwise" in f:
        lw: dict[str, Any] = {}
        for q, ds in f["layerwise"].items():
            if isinstance(ds, h5py.Dataset):
                lw[q] = np.asarray(ds[()], dtype=np.float64)
                layers = _attrs(ds).get("layers")
                if isinstance(layers, list) and "layers" not in lw:
                    lw["layers"] = [str(x) for x in layers]
                if "params" not in lw:
                    lw["params"] = {k: v for k, v in _attrs(ds).items() if k != "layers"}
        if "layers" not in lw:
            n = max((len(v) for k, v in lw.items() if isinstance(v, np.ndarray)), default=0)
            lw["layers"] = [f"layer {i + 1}" for i in range(n)]
        res.layerwise = lw
    return res


def _read_track(g) -> dict[str, Any]:
    """/track (``landscape track``): every dataset, rows of checkpoints not done set to NaN; attributes under
    ``attrs`` (``checkpoints`` and ``config`` decoded from JSON)."""
    out: dict[str, Any] = {"attrs": _attrs(g)}
    done = np.asarray(g["done"][()], dtype=bool) if "done" in g else None

    def visit(name, obj):
        if not isinstance(obj, h5py.Dataset):
            return
        v = np.asarray(obj[()])
        if (done is not None and name not in ("done", "step") and not name.startswith("density/")
                and v.ndim and v.shape[0] == done.shape[0] and v.dtype.kind == "f"):
            v = v.astype(np.float64)
            v[~done] = np.nan
        out[name] = v
        if (name.startswith("density/") or name == "subspace_overlap") and done is not None and not done.all():
            out[name] = np.full(np.shape(v), np.nan)  # made at the end of a run: not there yet

    g.visititems(visit)
    return out


def _read_tree(g) -> dict[str, Any]:
    """A group as nested dicts: datasets as arrays (scalars as floats), attrs under ``"attrs"`` and,
    per dataset, under ``"<name>_attrs"``. Eigenvectors are skipped: they are model-sized and unused here."""
    out: dict[str, Any] = {"attrs": _attrs(g)}
    for k, obj in g.items():
        if isinstance(obj, h5py.Group):
            if k == "eigenvectors":
                out["n_eigenvectors"] = len(obj)
                continue
            out[k] = _read_tree(obj)
        else:
            v = np.asarray(obj[()])
            out[k] = float(v) if v.ndim == 0 and v.dtype.kind in "fiu" else v
            a = _attrs(obj)
            if a:
                out[f"{k}_attrs"] = a
    return out


def _read_li(path: str, f) -> Result:
    """Li et al.'s layout: ``xcoordinates`` (+ ``ycoordinates``), surfaces at the root, stored in
    meshgrid order (the flat buffer runs over x fastest). Reshaping the flat buffer to (ny, nx) and
    transposing recovers Z[i, j] at (x[i], y[j]) whatever shape they declared -- their code allocates
    (nx, ny) but fills it in meshgrid order, which swaps the axes of non-square grids. Their unfilled
    points hold -1 (losses and accuracies are never negative), read here as NaN."""
    coords = {}
    for a, key in zip(AXES, ("xcoordinates", "ycoordinates", "zcoordinates")):
        if key in f:
            coords[a] = np.asarray(f[key][()], dtype=np.float64).reshape(-1)
    if "x" not in coords:
        raise LandscapeError(f"{path} looks like a Li et al. file but has no xcoordinates; {_hint(path)}")
    ndim = len(coords)
    shape = tuple(len(coords[a]) for a in AXES[:ndim])
    attrs = _attrs(f)
    res = Result(path=path, format=LI_FORMAT, format_version=None, kind="surface", ndim=ndim, coords=coords,
                 attrs=attrs, groups=sorted(f.keys()))
    for key, ds in f.items():
        if not isinstance(ds, h5py.Dataset) or key in ("xcoordinates", "ycoordinates", "zcoordinates"):
            continue
        if not key.startswith(("train_", "test_")) or ds.dtype.kind not in "fiu":
            continue
        z = np.asarray(ds[()], dtype=np.float64)
        if z.size != int(np.prod(shape)):
            continue  # e.g. a per-epoch array, not a surface
        z = z.reshape(shape[::-1]).transpose(tuple(range(ndim))[::-1]).copy()
        z[z < 0] = np.nan
        res.surfaces[key] = z
    if not res.surfaces:
        raise LandscapeError(f"{path} has Li et al. coordinates but no surface of {shape} values "
                             "(train_loss, test_loss, ...); the run may not have started: re-run it")
    done = np.zeros(shape, bool)
    for z in res.surfaces.values():
        done |= np.isfinite(z)
    res.done = done
    for key in ("dir_file",):
        if key in f and isinstance(f[key], h5py.Dataset):
            res.attrs[key] = _attr(f[key][()])
    return res
