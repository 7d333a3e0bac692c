"""A run's output file while the run fills it: values of several metrics at a fixed set of points (a grid, an
α line, a checkpoint series) and a ``done`` mask, written at most every ``flush_every`` seconds.

:class:`_RunStore` holds what every such file shares -- the writer lock, the done mask read when the run
starts, the flush timer, one flush's order and its failure message -- and each store says only how its
values are written (:meth:`_RunStore._write_values`): :class:`GridStore` for surfaces and paths, the
track's store in :mod:`landscape.track`.

Why the file is valid at every moment, even under ``kill -9``: a flush only overwrites bytes of datasets
allocated whole when the file was made (:mod:`landscape.store.raw`), never HDF5 metadata; it writes the
values first and the ``done`` mask last, so a point is marked done only once its values are in the file;
and it writes through the descriptor the run locked, never through the path.
"""

from __future__ import annotations

import time
import warnings

import h5py
import numpy as np

from ..errors import LandscapeError
from ..results import first_line
from ..schema import AXES
from .files import atomic_create, ensure_space
from .h5io import _json, write_named, write_samples
from .lock import WriterLock, close_h5
from .raw import RawDataset, write_points


class _RunStore:
    """The bookkeeping of a run's output file (see the module docstring); a subclass writes its values.

    ``done``: the path of the mask dataset; ``raw``: datasets to write as raw bytes where their layout
    allows (the mask always is). Only rank 0 makes one.
    """

    #: what a point is called in messages ("the 12 points saved before are intact")
    unit = "points"

    def __init__(self, path: str, done: str, flush_every: float, lock: WriterLock | None = None,
                 raw: tuple[str, ...] = ()):
        self.path, self.done_name, self.flush_every = path, done, flush_every
        self._lock = lock or WriterLock(path)  # every flush writes through this descriptor, never the path
        self._file: h5py.File | None = None
        self._last_flush = time.monotonic()
        f = self._lock.h5("r")
        try:
            self.done = np.asarray(f[done][()], dtype=bool).reshape(-1)
            self._raw = {name: RawDataset.of(f[name]) for name in (*raw, done)}
        finally:
            close_h5(f)

    # ------------------------------------------------------------------ reading
    def todo(self) -> np.ndarray:
        return np.flatnonzero(~self.done)

    @property
    def n_done(self) -> int:
        return int(self.done.sum())

    def h5(self) -> h5py.File:
        """The locked file, open for writing (close it with :func:`close_h5`); for the end of a run."""
        self._close_file()
        return self._lock.h5("r+")

    # ------------------------------------------------------------------ writing
    def _due(self) -> bool:
        return time.monotonic() - self._last_flush >= self.flush_every

    def _pending_count(self) -> int:
        raise NotImplementedError

    def _write_values(self) -> np.ndarray:
        """Write the pending values; return the flat indices of their points (marked done next)."""
        raise NotImplementedError

    def _clear_pending(self) -> None:
        raise NotImplementedError

    def _h5(self) -> h5py.File:
        """The locked file, opened once for the flushes that go through HDF5 and kept open between them."""
        if self._file is None:
            self._file = self._lock.h5("r+")
        return self._file

    def _close_file(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            close_h5(f)

    def _write(self, name: str, flat_idx: np.ndarray, values: np.ndarray) -> None:
        """``name.flat[flat_idx] = values``: raw bytes where the layout allows, else through HDF5 (flushed to the
        file before this returns, so a later write -- the mask -- never lands before it)."""
        raw = self._raw.get(name)
        if raw is not None:
            raw.write(self._lock.fd, flat_idx, values)
            return
        f = self._h5()
        write_points(f[name], flat_idx, values)
        f.flush()

    def _saved(self) -> str:
        return f"the {self.n_done} {self.unit} saved before are intact"  # (a sum over the grid: messages only)

    def flush(self) -> None:
        if not self._pending_count():
            self._last_flush = time.monotonic()
            return
        try:
            # the values rewrite pre-allocated bytes; the margin keeps HDF5 clear of a full disk
            ensure_space(self.path, 0)
        except LandscapeError as e:
            raise LandscapeError(f"{e}; {self._saved()}: run the same command again to resume once there is "
                                 "space") from None
        try:
            idx = self._write_values()
            # values first: a mask in the file never claims a point whose value is not there
            self._write(self.done_name, idx, np.ones(len(idx), np.uint8))
        except OSError as e:
            # disk full, quota, I/O error: the mask in the file still describes the last good flush
            try:
                self._close_file()
            except OSError:
                pass
            raise LandscapeError(f"writing {self.path} failed ({first_line(e)}); {self._saved()}: free some space "
                                 "(or choose another `out`) and run the same command again to resume") from None
        self.done[idx] = True  # only once written (no copy of the grid-sized mask: O(new points) per flush)
        self._clear_pending()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._clear_pending()  # a failed flush is not retried at every later close
            try:
                self._close_file()
            finally:
                self._lock.release()


class GridStore(_RunStore):
    """Values of several metrics on a fixed set of points, plus a done mask.

    ``names`` are dataset paths (``surfaces/train_loss``) of pre-allocated arrays of ``shape``; ``done`` is the
    mask's dataset path. Used by surfaces (the grid) and paths (the α line). A flush writes each new value as
    raw bytes at its place (:class:`~landscape.store.raw.RawDataset`): its cost is proportional to the new
    points, not to the grid (``benchmarks/speed/bench_flush.py``).
    """

    def __init__(self, path: str, names: list[str], done: str, shape: tuple[int, ...], flush_every: float = 10.0,
                 lock: WriterLock | None = None):
        self.names, self.shape = names, shape
        self._pending: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        self.warned_nonfinite = False
        super().__init__(path, done, flush_every, lock, raw=tuple(names))

    def add(self, indices: np.ndarray, values: dict[str, np.ndarray]) -> None:
        self._pending.append((np.asarray(indices, dtype=np.int64), values))
        if not self.warned_nonfinite and any(not np.all(np.isfinite(v)) for k, v in values.items()
                                             if k.endswith("loss")):
            self.warned_nonfinite = True
            warnings.warn("the loss is NaN or infinite at some points; they are stored as such and masked in plots",
                          stacklevel=2)
        if self._due():
            self.flush()

    def _pending_count(self) -> int:
        return len(self._pending)

    def _write_values(self) -> np.ndarray:
        idx = np.concatenate([i for i, _ in self._pending])
        for name in self.names:
            key = name.rsplit("/", 1)[-1]
            self._write(name, idx, np.concatenate([np.asarray(v[key]).reshape(-1) for _, v in self._pending]))
        return idx

    def _clear_pending(self) -> None:
        self._pending.clear()


def create_surface_file(path: str, *, attrs: dict, identity: dict, coords: tuple[np.ndarray, ...], directions,
                        metrics: list[str], info: dict | None = None,
                        replacing: WriterLock | None = None) -> WriterLock:
    """Write a new, complete surface file (NaN values, empty done mask); returns its lock (see
    :func:`atomic_create`, also for ``replacing``).

    ``info``: the problem's ``info`` (its ``<split>_indices`` are written to ``/samples``).

    Every surface dataset is contiguous, whatever the grid's size: flushes write raw bytes in place
    (:mod:`~landscape.store.raw`), and a run's consecutive points then share disk pages, which a flush finds
    still dirty in the page cache (chunks of 8³ scattered them: 1.4–2.2× instead of 2.6–3.4× for a run's flush on
    201³ against 51², ``benchmarks/speed/bench_flush.py``).
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

    return atomic_create(path, build, replacing=replacing, keep_lock=True)
