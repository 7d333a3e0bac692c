"""Files put in place whole: atomic create-if-absent, free-space checks, temporaries of dead runs,
and the first look at what an existing path holds.

A new file is built complete in memory, written to ``FILE.tmp-PID`` and hard-linked to its path: the
path never holds a half-made file, and of two runs racing on the same new path exactly one gets it.
Before a file is created, and before each flush, the free space of its folder (and the ``ulimit -f``
file size limit) is checked with a margin (:data:`FREE_MARGIN`), so a full disk ends in one line with the
last flushed state intact, not in an HDF5 crash.

Example:
    >>> _human(512), _human(3 << 20)
    ('512 bytes', '3.0 MiB')
"""

from __future__ import annotations

import glob
import io
import os
import shutil
import tempfile

import h5py

from ..errors import LandscapeError
from ..results import H5_KW, first_line
from ..schema import FORMAT
from .lock import WriterLock

#: bytes that must stay free beyond what a write needs (HDF5 metadata, the file system's own blocks)
FREE_MARGIN = 1 << 20

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


def ensure_space(path: str, need: int = 0, size_after: int | None = None, what: str = "`out`") -> None:
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
                             "free some space or choose another `out` (files already there are left as they are)")
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


def check_readable(path: str) -> None:
    """A one-line error for a file that is not a readable HDF5 file of ours."""
    kind = foreign_kind(path)
    if kind:
        raise LandscapeError(f"{path} exists and is {kind}, not a landscape result file; landscape does not write "
                             "over it: choose another `out`")
    try:
        with h5py.File(path, "r", **H5_KW) as f:
            fmt = f.attrs.get("format")
            if fmt != FORMAT:
                raise LandscapeError(f"{path} exists but is not a landscape result file; "
                                     "choose another `out` or pass `overwrite` to replace it")
            f.attrs.get("config")
    except (OSError, KeyError, RuntimeError, ValueError) as e:
        raise LandscapeError(f"{path} exists but cannot be read as HDF5 ({str(e).splitlines()[0]}); it may be "
                             "truncated or corrupted: inspect it with 'landscape info', pass `overwrite` to replace it "
                             "or choose another `out`") from None



def read_attrs(path: str) -> dict:
    with h5py.File(path, "r", **H5_KW) as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


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
            raise LandscapeError(f"writing {path} failed ({e.strerror or first_line(e)}); nothing was written to it: "
                                 "free some space or choose another `out`") from None
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
                           "runs on the same `out`); choose another `out`, or let that run finish and run this "
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


def make_output_folder(path: str, flag: str, purpose: str) -> None:
    """Create the folder ``path`` given with ``flag`` (for ``purpose``); one line if it is a file or cannot be made."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise LandscapeError(f"{flag} {path!r} is a file; give a folder for {purpose} (it is created if missing)")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise LandscapeError(f"{flag} {path!r}: cannot create the folder ({e.strerror or e})") from None



def refuse_foreign(path: str) -> None:
    """``overwrite`` replaces landscape result files only: one line naming what else ``path`` is."""
    kind = foreign_kind(path)
    if kind:
        raise LandscapeError(f"{path} is {kind}, not a landscape result file; `overwrite` only replaces landscape "
                             "result files: choose another `out` (or delete the file yourself if you mean it)")


def check_output_path(path: str | None, flag: str = "`out`", example: str | None = "run.h5",
                      file_name: bool = True, *, inputs: dict | None = None, create: bool = False) -> None:
    """An output path given with ``flag``: its folder must exist (``create``: it is made, as for the default
    ``outputs/``) and be writable, have some free space, and, with ``file_name``, the path must not itself be a
    folder (the message then suggests ``path/example``), nor one of the run's ``inputs`` (``{flag: path}``,
    e.g. ``{"--checkpoint": "final.pt"}``): landscape never writes over its inputs. Nothing to check without a
    path."""
    if not path:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        if not create:
            raise LandscapeError(f"{flag}: folder {folder!r} does not exist (create it first or choose another path)")
        make_output_folder(folder, flag, "the output")
    if file_name and os.path.isdir(path):
        such = f" such as {os.path.join(path, example)}" if example else ""
        raise LandscapeError(f"{flag}: {path!r} is a folder; give a file name{such}")
    for in_flag, in_path in (inputs or {}).items():
        for one in ([in_path] if isinstance(in_path, str) else list(in_path or [])):
            if one and os.path.exists(path) and os.path.exists(one) and os.path.samefile(path, one):
                raise LandscapeError(f"{flag} {path!r} is the {in_flag} of this run; landscape never writes over its "
                                     f"inputs (not even with `overwrite`): choose another {flag}")
    check_writable_folder(folder, flag)
    ensure_space(path, 0, what=flag)


def check_writable_folder(folder: str, flag: str) -> None:
    """One line if ``folder`` cannot take new files (read-only, or not ours): tried by creating a file in it."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".landscape-probe-", dir=folder)
    except OSError as e:
        raise LandscapeError(f"{flag}: cannot write in {folder!r} ({e.strerror or e}); choose a folder you can "
                             "write to") from None
    os.close(fd)
    os.remove(probe)
