"""Writing result files (layout: :mod:`landscape.schema`), resuming them, and refusing the wrong one.

Why a file is valid at every moment, even under ``kill -9``:

* it is created complete -- every dataset allocated, contiguous, NaN-filled -- in a temporary file
  that is renamed into place, so the path never holds a half-made file;
* afterwards a run only overwrites raw bytes of those pre-allocated datasets, which never touches
  HDF5 metadata; a flush writes the values first and the ``done`` mask last, so a point is marked
  done only once its values are on disk;
* the file is opened, written and closed at each flush (every ``flush_every`` seconds), so
  between flushes nothing is open for writing at all.

HDF5's own file locking is switched off (readers such as ``landscape plot`` can open the file
while a run writes, the deadlock Li et al.'s users hit); instead the writer holds an exclusive
``flock`` on the file for the whole run, and a second writer is refused with a clear message.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import time

import h5py
import numpy as np
import torch

from . import __version__
from .errors import LandscapeError, ResumeMismatch
from .params import Named
from .schema import AXES, FORMAT, FORMAT_VERSION, SPLITS

H5_KW = {"locking": False}


def _json(obj) -> str:
    def default(o):
        if isinstance(o, np.ndarray | torch.Tensor):
            return f"<array {tuple(o.shape)}>"
        if isinstance(o, np.generic):
            return o.item()
        return str(o)

    return json.dumps(obj, sort_keys=True, default=default)


def base_attrs(command: str, config: dict, model_fingerprint: str, data_fingerprint: str, kind: str) -> dict:
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "landscape_version": __version__,
        "torch_version": str(torch.__version__), "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": command, "config": _json(config), "model_fingerprint": model_fingerprint,
        "data_fingerprint": data_fingerprint, "kind": kind,
    }


class WriterLock:
    """An exclusive, non-blocking ``flock`` on the output file, released on close or process death."""

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise LandscapeError(f"{path} is being written by another landscape process; wait for it to finish "
                                 "or choose another --out (reading it with 'landscape info' is fine)") from None

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def check_readable(path: str) -> None:
    """A one-line error for a file that is not a readable HDF5 file of ours."""
    try:
        with h5py.File(path, "r", **H5_KW) as f:
            fmt = f.attrs.get("format")
            if fmt != FORMAT:
                raise LandscapeError(f"{path} exists but is not a landscape result file; "
                                     "choose another --out or pass --overwrite to replace it")
            f.attrs.get("config")
    except (OSError, KeyError, RuntimeError, ValueError) as e:
        raise LandscapeError(f"{path} exists but cannot be read as HDF5 ({str(e).splitlines()[0]}); it may be "
                             "truncated or corrupted: inspect it with 'landscape info', pass --overwrite to replace it "
                             "or choose another --out") from None


def read_attrs(path: str) -> dict:
    with h5py.File(path, "r", **H5_KW) as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


def write_named(group: h5py.Group, named: Named, attrs: dict | None = None) -> None:
    for k, v in named.items():
        group.create_dataset(k, data=v.detach().to("cpu", torch.float32).numpy())
    for k, v in (attrs or {}).items():
        if v is not None:
            group.attrs[k] = v if isinstance(v, str | int | float | bool | np.ndarray) else _json(v)


def read_named(group: h5py.Group, device=None) -> Named:
    return {k: torch.from_numpy(np.asarray(group[k][()])).to(device) for k in group.keys()}


def atomic_create(path: str, build) -> None:
    """Run ``build(h5file)`` on a temporary file, then rename it to ``path`` (never half-made)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with h5py.File(tmp, "w", track_order=True, **H5_KW) as f:
            build(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class GridStore:
    """A run's output file: values of several metrics on a fixed set of points, plus a done mask.

    ``values`` maps dataset paths (``surfaces/train_loss``) to pre-allocated arrays of ``shape``;
    ``done`` is the mask's dataset path. Used by surfaces (the grid) and paths (the α line).
    Only rank 0 creates one.
    """

    def __init__(self, path: str, names: list[str], done: str, shape: tuple[int, ...], flush_every: float = 10.0):
        self.path, self.names, self.done_name, self.shape = path, names, done, shape
        self.flush_every = flush_every
        self._pending: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        self._last_flush = time.monotonic()
        self._lock = WriterLock(path)
        with h5py.File(path, "r", **H5_KW) as f:
            self.done = np.asarray(f[done][()], dtype=bool).reshape(-1)
        self.warned_nonfinite = False

    # ------------------------------------------------------------------ reading
    def todo(self) -> np.ndarray:
        return np.flatnonzero(~self.done)

    @property
    def n_done(self) -> int:
        return int(self.done.sum())

    # ------------------------------------------------------------------ writing
    def add(self, indices: np.ndarray, values: dict[str, np.ndarray]) -> None:
        self._pending.append((np.asarray(indices, dtype=np.int64), values))
        if not self.warned_nonfinite and any(not np.all(np.isfinite(v)) for k, v in values.items()
                                             if k.endswith("loss")):
            self.warned_nonfinite = True
            import warnings

            warnings.warn("the loss is NaN or infinite at some points; they are stored as such and masked in plots",
                          stacklevel=2)
        if time.monotonic() - self._last_flush >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            self._last_flush = time.monotonic()
            return
        idx = np.concatenate([i for i, _ in self._pending])
        order = np.argsort(idx)
        idx = idx[order]
        done = self.done.copy()
        done[idx] = True
        try:
            with h5py.File(self.path, "r+", **H5_KW) as f:
                for name in self.names:
                    key = name.rsplit("/", 1)[-1]
                    vals = np.concatenate([v[key] for _, v in self._pending])[order]
                    ds = f[name]
                    flat = np.asarray(ds[()]).reshape(-1)
                    flat[idx] = vals
                    ds[...] = flat.reshape(ds.shape)
                f.flush()
                f[self.done_name][...] = done.reshape(self.shape).astype(np.uint8)
        except OSError as e:
            # disk full, quota, I/O error: the mask on disk still describes the last good flush
            # (values land before the mask), so the file stays readable and resumable.
            raise LandscapeError(
                f"writing {self.path} failed ({_first_line(e)}); the {self.n_done} points saved before are intact: "
                "free some space (or choose another --out) and run the same command again to resume") from None
        self.done = done
        self._pending.clear()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._pending.clear()  # a failed flush is not retried at every later close
            self._lock.release()


def make_output_folder(path: str, flag: str, purpose: str) -> None:
    """Create the folder ``path`` given with ``flag`` (for ``purpose``); one line if it is a file or cannot be made."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise LandscapeError(f"{flag} {path!r} is a file; give a folder for {purpose} (it is created if missing)")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise LandscapeError(f"{flag} {path!r}: cannot create the folder ({e.strerror or e})") from None


# ---------------------------------------------------------------------------- surfaces
def surface_identity(config: dict, coords: tuple[np.ndarray, ...], model_fp: str, data_fp: str, dirs_fp: str) -> dict:
    """What must agree between a file and a run for the run to resume it."""
    return {
        "model weights (model_fingerprint)": model_fp,
        "data (data_fingerprint)": data_fp,
        "directions": dirs_fp,
        **{f"--{a}": [float(c[0]), float(c[-1]), len(c)] for a, c in zip(AXES, coords)},
        "grid dimensions": len(coords),
        **{f"--{k.replace('_', '-')}": config.get(k) for k in ("model", "model_args", "loss", "samples", "data",
                                                               "test_data", "curvature_map", "precision")},
    }


#: identity entries older files lack, and the value they were made with
_IDENTITY_DEFAULTS = {"--precision": "fp32"}


def _describe(key: str, v) -> str:
    if isinstance(v, list) and len(v) == 3 and key.startswith("--") and len(key) == 3:
        return f"{v[0]:g}:{v[1]:g}:{v[2]}"
    if isinstance(v, str) and len(v) == 64:
        return v[:10] + "…"
    return json.dumps(v)


def compare_identity(path: str, stored: dict, wanted: dict) -> None:
    for key, want in wanted.items():
        have = stored.get(key, _IDENTITY_DEFAULTS.get(key))
        if json.loads(_json(have)) != json.loads(_json(want)):
            raise ResumeMismatch(f"{path} was made by another run ({key}: file has {_describe(key, have)}, this run "
                                 f"has {_describe(key, want)}); pass --overwrite to replace it or choose another --out")


def existing_attrs(path: str, kind: str, noun: str) -> dict | None:
    """Root attributes of an existing, readable result file of ``kind``; None if ``path`` does not exist."""
    if not os.path.exists(path):
        return None
    check_readable(path)
    attrs = read_attrs(path)
    if attrs.get("kind") != kind:
        raise LandscapeError(f"{path} holds a {attrs.get('kind')!r} result, not {noun}; "
                             "choose another --out or pass --overwrite")
    return attrs


def peek_surface(path: str) -> dict | None:
    """Config and identity of an existing landscape surface file, or None if ``path`` does not exist."""
    attrs = existing_attrs(path, "surface", "a surface")
    if attrs is None:
        return None
    try:
        out = {"config": json.loads(attrs.get("config", "{}")), "identity": json.loads(attrs.get("identity", "{}"))}
    except (TypeError, ValueError) as e:
        raise LandscapeError(f"{path} has an unreadable config/identity attribute ({_first_line(e)}); it is corrupted: "
                             "inspect it with 'landscape info' or pass --overwrite to recompute it") from None
    try:
        with h5py.File(path, "r", **H5_KW) as f:
            _read_everything(f)
            problem = surface_problems(f)
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as e:
        problem = f"part of it cannot be read ({_first_line(e).strip(chr(39))})"
    if problem:
        raise LandscapeError(f"{path} is corrupted: {problem}; inspect it with 'landscape info' or pass --overwrite "
                             "to recompute it")
    return out


def _read_everything(f: h5py.File) -> None:
    """Open every object and read every dataset and attribute: damaged metadata raises here, not mid-run."""
    def visit(name, obj):
        dict(obj.attrs)
        if isinstance(obj, h5py.Dataset):
            obj[()]

    dict(f.attrs)
    f.visititems(visit)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def surface_problems(f: h5py.File) -> str | None:
    """Why an open surface file cannot have been written by a run (garbage on disk), or None.

    No run writes a done mask other than 0/1, a negative loss (cross-entropy and MSE are sums of
    non-negative terms; NaN and +inf are stored overflows), an accuracy outside [0, 1], or
    coordinates other than the recorded grid (non-increasing ones in files without a record);
    random bytes over a dataset almost surely do one of these.
    Readers (``plot``, ``info``) can call this too.
    """
    if "surfaces" not in f or "done" not in f["surfaces"]:
        return "it has no /surfaces/done mask"
    done_raw = np.asarray(f["surfaces/done"][()])
    bad = ~np.isin(done_raw, (0, 1))
    if bad.any():
        return f"/surfaces/done holds {int(done_raw[bad].reshape(-1)[0])} where only 0 and 1 are written"
    done = done_raw.astype(bool)
    try:  # the grid the run recorded ({"--x": [min, max, num], ...}); files of other tools have none
        identity = json.loads(f.attrs["identity"]) if "identity" in f.attrs else {}
    except (TypeError, ValueError):
        identity = {}
    for a in AXES:
        if f"coords/{a}" in f:
            c = np.asarray(f[f"coords/{a}"][()], dtype=np.float64)
            if not np.all(np.isfinite(c)) or (c.size > 1 and not np.all(np.diff(c) > 0)):
                return f"/coords/{a} is not a finite increasing sequence"
            spec = identity.get(f"--{a}") if isinstance(identity, dict) else None
            if isinstance(spec, list) and len(spec) == 3:  # what every run writes: linspace(min, max, num)
                try:  # (the count first: a damaged record must not make us allocate a huge grid)
                    lo, hi, num = float(spec[0]), float(spec[1]), int(spec[2])
                except (TypeError, ValueError, OverflowError):
                    continue  # an unreadable record: nothing to compare with
                if num != c.size or not np.allclose(c, np.linspace(lo, hi, num), rtol=1e-12, atol=0):
                    grid = _describe(f"--{a}", [lo, hi, num])
                    return f"/coords/{a} does not hold the grid the file records (--{a} {grid})"
    for name, ds in f["surfaces"].items():
        if name == "done" or not isinstance(ds, h5py.Dataset) or ds.shape != done.shape:
            continue
        v = np.asarray(ds[()], dtype=np.float64)[done]
        if name.endswith("_loss"):
            wrong = (v < -1e-6 * np.maximum(1.0, np.abs(v))) | (v == -np.inf)
        elif name.endswith("_acc"):
            wrong = (v < -1e-9) | (v > 1 + 1e-9)
        else:
            continue
        if wrong.any():
            return f"/surfaces/{name} holds {v[wrong][0]:g} at a done point, a value no run writes"
    return None


def write_samples(f: h5py.File, info: dict) -> None:
    """``/samples/<split>``: the indices of the examples a ``--samples`` run evaluates (none if it uses all)."""
    for split in SPLITS:
        idx = info.get(f"{split}_indices")
        total = info.get(f"{split}_total")
        if idx is None or total is None or len(idx) == total:
            continue
        ds = f.create_dataset(f"samples/{split}", data=np.asarray(idx, dtype=np.int64))
        ds.attrs["of"] = int(total)
        ds.attrs["seed"] = int(info.get("seed") or 0)


def create_surface_file(path: str, *, attrs: dict, identity: dict, coords: tuple[np.ndarray, ...], directions,
                        metrics: list[str], info: dict | None = None) -> None:
    """Write a new, complete surface file (NaN values, empty done mask).

    ``info``: the problem's ``info`` (its ``<split>_indices`` are written to ``/samples``).
    """
    shape = tuple(len(c) for c in coords)

    def build(f: h5py.File) -> None:
        for k, v in attrs.items():
            f.attrs[k] = v
        f.attrs["identity"] = _json(identity)
        write_samples(f, info or {})
        for a, c in zip(AXES, coords):
            f.create_dataset(f"coords/{a}", data=np.asarray(c, dtype=np.float64))
        for a, vec, meta in zip(AXES, directions.vectors, directions.meta):
            write_named(f.create_group(f"directions/{a}", track_order=True), vec, meta)
        for name, (data, dattrs) in getattr(directions, "extras", {}).items():
            ds = f.create_dataset(name, data=np.asarray(data))
            for k, v in (dattrs or {}).items():
                ds.attrs[k] = v if isinstance(v, str | int | float | bool | np.ndarray) else _json(v)
        for m in metrics:
            f.create_dataset(f"surfaces/{m}", data=np.full(shape, np.nan), track_times=False)
        f.create_dataset("surfaces/done", data=np.zeros(shape, np.uint8), track_times=False)

    atomic_create(path, build)


def load_directions(path: str, model_tensors: Named, ndim: int | None = None):
    """Directions stored in a result file (``--directions FILE.h5``), checked against the model."""
    from .directions import Directions

    if not os.path.isfile(path):
        raise LandscapeError(f"--directions: {path!r} does not exist")
    try:
        with h5py.File(path, "r", **H5_KW) as f:
            if "directions" not in f:
                raise LandscapeError(f"--directions: {path} holds no /directions group (was it made by landscape?)")
            axes = [a for a in AXES if a in f["directions"]]
            vectors, meta = [], []
            for a in axes:
                g = f["directions"][a]
                vectors.append(read_named(g))
                meta.append({k: (v.item() if isinstance(v, np.generic) else v) for k, v in g.attrs.items()})
            dir_type = meta[0].get("dir_type", "weights") if meta else "weights"
    except (OSError, KeyError, RuntimeError, ValueError) as e:
        raise LandscapeError(f"--directions: {path} cannot be read as HDF5 ({_first_line(e)}); it may be truncated "
                             "or corrupted: inspect it with 'landscape info'") from None
    if ndim is not None and len(vectors) < ndim:
        raise LandscapeError(f"--directions: {path} has {len(vectors)} direction(s); this grid needs {ndim}")
    vectors = vectors[:ndim] if ndim else vectors
    for vec in vectors:
        missing = [k for k in model_tensors if k not in vec]
        extra = [k for k in vec if k not in model_tensors]
        shapes = [k for k in vec if k in model_tensors and tuple(vec[k].shape) != tuple(model_tensors[k].shape)]
        if missing or extra or shapes:
            what = (f"missing {missing[:2]}" if missing else f"unexpected {extra[:2]}" if extra
                    else f"shape of {shapes[:2]} differs")
            raise LandscapeError(f"--directions: {path} was made for another model ({what}); "
                                 "use directions made with the same --model and --model-args")
    center = {k: v.detach().clone() for k, v in model_tensors.items()}
    dev = next(iter(center.values())).device
    vectors = [{k: v[k].to(device=dev, dtype=center[k].dtype) for k in center} for v in vectors]
    for m in meta:
        m["source"] = path
    return Directions(center, vectors, dir_type, meta[: len(vectors)])


class update_file:  # noqa: N801 - used as a context manager, reads like a function
    """``with update_file(path, kind, attrs) as f:`` add groups to a result file.

    An existing landscape file (a surface, say) is opened in place under the writer lock, so
    metrics and curvature can sit beside the surfaces they describe; otherwise a new file of
    ``kind`` is created atomically with ``attrs`` as its root attributes.
    """

    def __init__(self, path: str, kind: str, attrs: dict):
        self.path, self.kind, self.attrs = path, kind, attrs
        self._lock: WriterLock | None = None
        self._file: h5py.File | None = None

    def __enter__(self) -> h5py.File:
        if not os.path.exists(self.path):
            atomic_create(self.path, lambda f: f.attrs.update(self.attrs))
        else:
            check_readable(self.path)
        self._lock = WriterLock(self.path)
        self._file = h5py.File(self.path, "r+", **H5_KW)
        return self._file

    def __exit__(self, *exc) -> None:
        try:
            if self._file is not None:
                self._file.close()
        finally:
            if self._lock is not None:
                self._lock.release()


def replace_group(parent: h5py.Group, name: str) -> h5py.Group:
    if name in parent:
        del parent[name]
    return parent.create_group(name, track_order=True)


def set_attrs(obj, attrs: dict) -> None:
    for k, v in attrs.items():
        if v is None:
            continue
        obj.attrs[k] = v if isinstance(v, str | int | float | bool | np.ndarray | np.generic) else _json(v)
