"""Writing result files (layout: :mod:`landscape.schema`), resuming them, and refusing the wrong one.

Why a file is valid at every moment, even under ``kill -9``:

* it is built complete -- every dataset allocated, contiguous, NaN-filled -- in memory, written to a
  temporary file ``FILE.tmp-PID`` and hard-linked to its path, an atomic "create if absent": the path
  never holds a half-made file, and of two runs racing on the same new path exactly one gets it (the
  other is refused, it never writes into the winner's file);
* afterwards a run only overwrites raw bytes of those pre-allocated datasets, which never touches
  HDF5 metadata; a flush writes the values first and the ``done`` mask last, so a point is marked
  done only once its values are on disk;
* every flush writes through the descriptor the run locked (the file it created or resumed), never
  through the path: a file put there by someone else meanwhile is never written to.

HDF5's own file locking is switched off (readers such as ``landscape plot`` can open the file
while a run writes, the deadlock Li et al.'s users hit); instead the writer holds an exclusive
``flock`` on the file for the whole run, and a second writer is refused with a clear message. Locks
are taken lazily (``fcntl`` on POSIX, ``msvcrt`` on Windows), so readers work everywhere; a file
system without locks is told apart from a file locked by another process (a warning, not a refusal).

Space: before a file is created, and before each flush, the free space of its folder (and the
``ulimit -f`` file size limit) is checked with a margin (:data:`FREE_MARGIN`), so a full disk ends in
one line with the last flushed state intact, not in an HDF5 crash. Temporary files of dead processes
(``FILE.tmp-PID``, left by a kill during creation) are removed by the next run on that path.
"""

from __future__ import annotations

import datetime as _dt
import errno
import glob
import io
import json
import os
import shutil
import time
import warnings

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


#: bytes that must stay free beyond what a write needs (HDF5 metadata, the file system's own blocks)
FREE_MARGIN = 1 << 20


class Locked(LandscapeError):
    """The file is locked by another process."""


def _lock_fd(fd: int, path: str) -> bool:
    """An exclusive, non-blocking lock on ``fd``: True when taken, False when the file system has no locks.

    Raises :class:`Locked` when another process holds it.
    """
    busy = Locked(f"{path} is being written by another landscape process; wait for it to finish "
                  "or choose another --out (reading it with 'landscape info' is fine)")
    try:
        import fcntl  # POSIX; imported here so that readers (plot, info) work on Windows
    except ImportError:
        fcntl = None
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover - Windows: one byte far past the end, so readers are never blocked
            import msvcrt

            pos = os.lseek(fd, 0, os.SEEK_CUR)
            os.lseek(fd, 1 << 62, os.SEEK_SET)
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            finally:
                os.lseek(fd, pos, os.SEEK_SET)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, errno.EDEADLK):
            raise busy from None
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.EBADF):
            warnings.warn(f"the file system of {path} has no file locks ({e.strerror}); landscape cannot stop "
                          "another run from writing the same file at the same time", stacklevel=3)
            return False
        raise LandscapeError(f"cannot lock {path} ({e.strerror or e})") from None


def _unlock_fd(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        os.lseek(fd, 1 << 62, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


class WriterLock:
    """A file opened for writing and exclusively locked (released on close or process death).

    Writes go through this descriptor (:meth:`h5`), never through the path: the file locked is the file
    written, even if the path is replaced meanwhile. Pass ``fd`` to adopt a descriptor already open.
    """

    def __init__(self, path: str, fd: int | None = None):
        self.path = path
        if fd is None:
            try:
                fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
            except OSError as e:
                raise LandscapeError(f"cannot open {path} for writing ({e.strerror or e}); check its permissions "
                                     "or choose another --out") from None
        self.fd = fd
        try:
            self.locked = _lock_fd(fd, path)
        except BaseException:
            os.close(fd)
            self.fd = None
            raise

    def h5(self, mode: str = "r+") -> h5py.File:
        """The locked file opened with h5py through (a duplicate of) its descriptor."""
        fo = os.fdopen(os.dup(self.fd), "r+b", buffering=0)
        try:
            f = h5py.File(fo, mode, **H5_KW)
        except BaseException:
            fo.close()
            raise
        f._landscape_fileobj = fo  # closed with the file (see close_h5)
        return f

    def release(self) -> None:
        if self.fd is not None:
            try:
                if self.locked:
                    _unlock_fd(self.fd)
            finally:
                os.close(self.fd)
                self.fd = None


def close_h5(f: h5py.File) -> None:
    """Close a file opened by :meth:`WriterLock.h5` and its file object."""
    fo = getattr(f, "_landscape_fileobj", None)
    try:
        f.close()
    finally:
        if fo is not None:
            fo.close()


def _human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def file_size_limit() -> float:
    """The ``ulimit -f`` limit of this process in bytes (inf without one or where there is none)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return float("inf")
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return float("inf") if soft == resource.RLIM_INFINITY else float(soft)


def ensure_space(path: str, need: int = 0, size_after: int | None = None, what: str = "--out") -> None:
    """Refuse to write ``need`` more bytes to ``path`` (a file ``size_after`` bytes long afterwards) unless its
    folder has that much free space plus :data:`FREE_MARGIN`, and the file size limit allows it."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # no folder yet, or a file system that cannot say: the write itself will tell
    if free < need + FREE_MARGIN:
        raise LandscapeError(f"{what}: not enough free space for {path} ({_human(free)} free in {folder}, "
                             f"{_human(need + FREE_MARGIN)} needed including a {_human(FREE_MARGIN)} margin); "
                             "free some space or choose another --out (files already there are left as they are)")
    limit = file_size_limit()
    size = need if size_after is None else size_after
    if size > limit:
        raise LandscapeError(f"{what}: {path} would be {_human(size)}, over this shell's file size limit "
                             f"(ulimit -f: {_human(limit)}); raise the limit or choose a smaller run")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temporaries(path: str) -> list[str]:
    """Remove ``path.tmp-PID`` files of processes that are gone (a kill during creation left them)."""
    removed = []
    for tmp in glob.glob(glob.escape(path) + ".tmp-*"):
        pid = tmp.rsplit(".tmp-", 1)[1]
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        try:  # a writer on another machine of a shared file system holds a lock on its temporary file
            lock = WriterLock(tmp)
        except LandscapeError:
            continue
        try:
            os.remove(tmp)
            removed.append(tmp)
        except OSError:
            pass
        finally:
            lock.release()
    return removed


def foreign_kind(path: str) -> str | None:
    """What ``path`` is when it is recognisably not a landscape result file (None if it may be one of ours,
    damaged ones included): the name of the format, for a message that says what would be lost."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (a PyTorch checkpoint saved by torch.save?)"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in range(2, 6):
        return "a pickle (a PyTorch checkpoint?)"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 30):
        return "a safetensors checkpoint"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        try:
            with h5py.File(path, "r", **H5_KW) as f:
                fmt = f.attrs.get("format")
                if fmt is not None and fmt != FORMAT:
                    return f"an HDF5 file of another tool (format {fmt!r})"
                if fmt is None and len(f.keys()) and "surfaces" not in f and "coords" not in f:
                    if "xcoordinates" in f or "train_loss" in f:
                        return None  # Li et al.'s surface files: ours to read (and replace)
                    return "an HDF5 file of another tool (no landscape format attribute)"
        except Exception:  # noqa: BLE001 - damaged: may be one of ours
            return None
    return None


def refuse_foreign(path: str) -> None:
    """``overwrite`` replaces landscape result files only: one line naming what else ``path`` is."""
    kind = foreign_kind(path)
    if kind:
        raise LandscapeError(f"{path} is {kind}, not a landscape result file; `overwrite` only replaces landscape "
                             "result files: choose another `out` (or delete the file yourself if you mean it)")


def check_readable(path: str) -> None:
    """A one-line error for a file that is not a readable HDF5 file of ours."""
    kind = foreign_kind(path)
    if kind:
        raise LandscapeError(f"{path} exists and is {kind}, not a landscape result file; landscape does not write "
                             "over it: choose another --out")
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


def atomic_create(path: str, build, *, replacing: WriterLock | None = None,
                  keep_lock: bool = False) -> WriterLock | None:
    """Build the file with ``build(h5file)`` in memory, then put it at ``path`` complete; with ``keep_lock``
    return the lock of the new file (the caller writes through it and releases it).

    The bytes are written to ``path.tmp-PID`` (after a free-space check) and hard-linked to ``path``: the
    link fails if the path exists, so of two runs racing on a new path one is refused, never mixed.
    ``replacing``: the lock held on the file at ``path`` (``--overwrite``), replaced by a rename.
    """
    remove_stale_temporaries(path)
    buf = io.BytesIO()
    with h5py.File(buf, "w", track_order=True, **H5_KW) as f:
        build(f)
    data = buf.getbuffer()
    ensure_space(path, len(data))
    tmp = f"{path}.tmp-{os.getpid()}"
    lock = None
    try:
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o666)
            lock = WriterLock(tmp, fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as e:
            raise LandscapeError(f"writing {path} failed ({e.strerror or _first_line(e)}); nothing was written to it: "
                                 "free some space or choose another --out") from None
        if replacing is not None:
            os.replace(tmp, path)  # the lock follows the inode; the old file's lock is the caller's to release
        else:
            _claim(tmp, path)
        lock.path = path
        if not keep_lock:
            lock.release()
            return None
        return lock
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    finally:
        if os.path.lexists(tmp):
            try:
                os.remove(tmp)
            except OSError:
                pass


def _claim(tmp: str, path: str) -> None:
    """Give ``path`` the complete file ``tmp`` unless ``path`` exists (atomically)."""
    raced = LandscapeError(f"{path} was created by another landscape process while this run was starting (two "
                           "runs on the same --out); choose another --out, or let that run finish and run this "
                           "command again to resume it")
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        raise raced from None
    except OSError:
        pass  # a file system without hard links: claim the name with O_EXCL, then rename over the claim
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        raise raced from None
    os.replace(tmp, path)


#: elements per chunk of a surface dataset (4 KiB of float64, a disk page): a flush rewrites whole chunks, so small
#: chunks keep its cost proportional to the new points (benchmarks/bench_flush.py; 16³ chunks cost 3-5× more)
CHUNK_ELEMENTS = 512
#: grids smaller than this stay contiguous: a point write there touches only its own bytes anyway (and the
#: file keeps the simplest layout, one extent per dataset)
CHUNK_MIN_POINTS = 1 << 16


def chunk_shape(shape: tuple[int, ...], target: int = CHUNK_ELEMENTS,
                min_points: int = CHUNK_MIN_POINTS) -> tuple[int, ...] | None:
    """HDF5 chunk shape of a grid dataset: about ``target`` elements, the same length along every axis
    (512 for a line, 23×23 for a surface, 8×8×8 for a volume), capped by the grid's own size; None
    (contiguous) for grids of fewer than ``min_points`` points."""
    if int(np.prod(shape, dtype=np.int64)) < min_points:
        return None
    side = max(1, round(target ** (1.0 / max(1, len(shape)))))
    return tuple(max(1, min(int(n), side)) for n in shape)


def write_points(ds: h5py.Dataset, flat_idx: np.ndarray, values: np.ndarray) -> int:
    """``ds.flat[flat_idx] = values`` as one HDF5 write of a point selection.

    HDF5 reads and rewrites only the chunks that hold those points (a contiguous dataset -- a small grid,
    or a file written before chunking -- is updated in place at those points). ``flat_idx`` are C-order
    flat indices in any order; where one repeats, its last value wins. Returns the number of
    chunks touched (points for an unchunked dataset).
    """
    flat_idx = np.asarray(flat_idx, dtype=np.int64).reshape(-1)
    values = np.asarray(values).reshape(-1)
    if not len(flat_idx):
        return 0
    shape = ds.shape
    if len(shape) == 0:
        ds[()] = values[-1]
        return 1
    # sorted, unique (the last value of a repeated index): HDF5 then visits each chunk once, in file order
    rev = flat_idx[::-1]
    uniq, first = np.unique(rev, return_index=True)
    vals = np.ascontiguousarray(values[::-1][first], dtype=ds.dtype)
    multi = np.unravel_index(uniq, shape)
    space = ds.id.get_space()
    space.select_elements(np.stack(multi, axis=1).astype(np.uint64))
    ds.id.write(h5py.h5s.create_simple((len(uniq),)), space, vals)
    blocks = ds.chunks
    if blocks is None:
        return len(uniq)
    return len({tuple(k) for k in np.stack([m // b for m, b in zip(multi, blocks)], axis=1).tolist()})


class GridStore:
    """A run's output file: values of several metrics on a fixed set of points, plus a done mask.

    ``values`` maps dataset paths (``surfaces/train_loss``) to pre-allocated arrays of ``shape``;
    ``done`` is the mask's dataset path. Used by surfaces (the grid) and paths (the α line).
    Only rank 0 creates one.
    """

    def __init__(self, path: str, names: list[str], done: str, shape: tuple[int, ...], flush_every: float = 10.0,
                 lock: WriterLock | None = None):
        self.path, self.names, self.done_name, self.shape = path, names, done, shape
        self.flush_every = flush_every
        self._pending: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        self._last_flush = time.monotonic()
        self._lock = lock or WriterLock(path)  # every flush writes through this descriptor, never the path
        f = self._lock.h5("r")
        try:
            self.done = np.asarray(f[done][()], dtype=bool).reshape(-1)
        finally:
            close_h5(f)
        self.warned_nonfinite = False

    def h5(self) -> h5py.File:
        """The locked file, open for writing (close it with :func:`close_h5`)."""
        return self._lock.h5("r+")

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
        try:
            # the values rewrite pre-allocated bytes; the margin keeps HDF5 clear of a full disk
            ensure_space(self.path, 0)
        except LandscapeError as e:
            raise LandscapeError(f"{e}; the {self.n_done} points saved before are intact: run the same command "
                                 "again to resume once there is space") from None
        try:
            f = self._lock.h5("r+")
            try:
                # only the chunks that hold new points are read and rewritten: a flush costs in proportion to
                # the points it adds, not to the grid (a 201³ volume is 64 MB per metric)
                for name in self.names:
                    key = name.rsplit("/", 1)[-1]
                    vals = np.concatenate([v[key] for _, v in self._pending])[order]
                    write_points(f[name], idx, vals)
                f.flush()  # values first: a mask on disk never claims a point whose value is not there
                write_points(f[self.done_name], idx, np.ones(len(idx), np.uint8))
            finally:
                close_h5(f)
        except OSError as e:
            # disk full, quota, I/O error: the mask on disk still describes the last good flush
            # (values land before the mask), so the file stays readable and resumable.
            raise LandscapeError(
                f"writing {self.path} failed ({_first_line(e)}); the {self.n_done} points saved before are intact: "
                "free some space (or choose another --out) and run the same command again to resume") from None
        self.done[idx] = True  # only once written (no copy of the grid-sized mask: O(new points) per flush)
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


def compare_identity(path: str, stored: dict, wanted: dict, seeds: tuple | None = None) -> None:
    """Refuse a file whose identity differs from this run's, naming the first entry that differs.

    ``seeds``: (the file's --seed, this run's); when they differ, a differing data subset or set of directions
    is reported as the seed's doing, which is what the user changed."""
    for key, want in wanted.items():
        have = stored.get(key, _IDENTITY_DEFAULTS.get(key))
        if json.loads(_json(have)) != json.loads(_json(want)):
            if key == "grid dimensions":
                raise ResumeMismatch(f"{path} holds a {have}-D surface and this run asks for a {want}-D grid "
                                     "(--x, --y, --z); give the axes of the run that made it, pass --overwrite to "
                                     "replace it, or choose another --out")
            if seeds and seeds[0] is not None and seeds[0] != seeds[1] and key in (
                    "model weights (model_fingerprint)", "data (data_fingerprint)", "directions"):
                raise ResumeMismatch(f"{path} was made by another run (--seed: file has {seeds[0]}, this run has "
                                     f"{seeds[1]}; the seed picks the --samples subset, random directions and the "
                                     f"initial weights of a model without --checkpoint): pass "
                                     f"--seed {seeds[0]} to resume it, --overwrite to replace it, or choose another "
                                     "--out")
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
                        metrics: list[str], info: dict | None = None,
                        replacing: WriterLock | None = None) -> WriterLock:
    """Write a new, complete surface file (NaN values, empty done mask); returns its lock (see
    :func:`atomic_create`, also for ``replacing``).

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
        chunks = chunk_shape(shape)  # large grids: a flush rewrites only the chunks it adds points to
        for m in metrics:
            f.create_dataset(f"surfaces/{m}", data=np.full(shape, np.nan), chunks=chunks, track_times=False)
        f.create_dataset("surfaces/done", data=np.zeros(shape, np.uint8), chunks=chunks, track_times=False)

    return atomic_create(path, build, replacing=replacing, keep_lock=True)


def load_directions(path: str, model_tensors: Named, ndim: int | None = None):
    """Directions stored in a result file (``--directions FILE.h5``), checked against the model."""
    from .directions._base import Directions

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


def provenance(model_fingerprint: str, data_fingerprint: str, loss: str | None, samples: int | None,
               seed: int | None) -> dict:
    """What a result added to an existing file must share with it: the identity a resume checks."""
    return {"model_fingerprint": model_fingerprint, "data_fingerprint": data_fingerprint, "loss": loss,
            "samples": samples, "seed": seed}


def check_provenance(path: str, wanted: dict, adding: str) -> None:
    """Refuse to add ``adding`` (``/curvature``, ``/metrics``) to ``path`` if the file was made from another model
    (weights), data, loss or ``--samples`` subset: one file must describe one model on one data set."""
    attrs = read_attrs(path)
    try:
        config = json.loads(attrs.get("config", "{}"))
    except (TypeError, ValueError):
        config = {}
    config = config if isinstance(config, dict) else {}
    stored_seed = config.get("sample_seed", config.get("seed"))

    def refuse(what: str, have, want, hint: str) -> None:
        raise ResumeMismatch(f"{path} was made with another {what} (file has {have}, this run has {want}); adding "
                             f"{adding} would mix two runs in one file: {hint}")

    other = "choose another --out"
    if "loss" in config and config["loss"] is not None and config["loss"] != wanted["loss"]:
        refuse("--loss", config["loss"], wanted["loss"], f"pass --loss {config['loss']} or {other}")
    if "samples" in config and config["samples"] != wanted["samples"]:
        refuse("--samples", config["samples"] or "all", wanted["samples"] or "all",
               f"pass the same --samples or {other}")
    fp = attrs.get("model_fingerprint")
    seed_differs = stored_seed is not None and stored_seed != wanted["seed"]
    if fp and wanted["model_fingerprint"] and fp != wanted["model_fingerprint"]:
        if seed_differs and not config.get("checkpoint"):
            refuse("--seed (it initialises a model given without --checkpoint)", stored_seed, wanted["seed"],
                   f"pass --seed {stored_seed} or {other}")
        refuse("model (weights fingerprint)", fp[:10] + "…", wanted["model_fingerprint"][:10] + "…",
               f"pass the same --model, --model-args and --checkpoint as the run that made it, or {other}")
    dfp = attrs.get("data_fingerprint")
    if dfp and wanted["data_fingerprint"] and dfp != wanted["data_fingerprint"]:
        if wanted["samples"] and seed_differs:
            refuse("--seed (it picks the --samples subset)", stored_seed, wanted["seed"],
                   f"pass --seed {stored_seed} or {other}")
        data = config.get("data", config.get("train_data"))
        refuse("--data (data fingerprint)", f"{data} {dfp[:10]}…" if data else dfp[:10] + "…",
               wanted["data_fingerprint"][:10] + "…", f"pass the same --data and --samples or {other}")


class update_file:  # noqa: N801 - used as a context manager, reads like a function
    """``with update_file(path, kind, attrs) as f:`` add groups to a result file.

    An existing landscape file (a surface, say) is opened in place under the writer lock, so
    metrics and curvature can sit beside the surfaces they describe -- if it was made from the same
    model, data, loss and samples (``provenance``, checked with :func:`check_provenance`) and its folder
    has room for ``need`` more bytes; otherwise a new file of ``kind`` is created atomically with
    ``attrs`` as its root attributes. Writes go through the locked descriptor.
    """

    def __init__(self, path: str, kind: str, attrs: dict, provenance: dict | None = None, adding: str = "",
                 need: int = 0):
        self.path, self.kind, self.attrs = path, kind, attrs
        self.provenance, self.adding, self.need = provenance, adding or "results", need
        self._lock: WriterLock | None = None
        self._file: h5py.File | None = None
        self.created = False

    def __enter__(self) -> h5py.File:
        if not os.path.exists(self.path):
            self._lock = atomic_create(self.path, lambda f: f.attrs.update(self.attrs), keep_lock=True)
            self.created = True
        else:
            check_readable(self.path)
            self._lock = WriterLock(self.path)
        try:
            if not self.created and self.provenance is not None:
                check_provenance(self.path, self.provenance, self.adding)
            ensure_space(self.path, self.need, os.path.getsize(self.path) + self.need)
            self._file = self._lock.h5("r+")
        except BaseException:
            self._lock.release()
            raise
        return self._file

    def __exit__(self, *exc) -> None:
        try:
            if self._file is not None:
                close_h5(self._file)
        except OSError as e:
            if exc[0] is None:
                raise LandscapeError(f"writing {self.path} failed ({_first_line(e)}); free some space or choose "
                                     "another --out") from None
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
