"""The writer's lock: a result file opened for writing and exclusively locked for the whole run.

HDF5's own file locking is switched off (readers such as ``landscape plot`` can open the file while a
run writes, the deadlock Li et al.'s users hit); instead the writer holds an exclusive ``flock`` on the
file, and a second writer is refused with a clear message. Locks are taken lazily (``fcntl`` on POSIX,
``msvcrt`` on Windows), so readers work everywhere; a file system without locks is told apart from a file
locked by another process (a warning, not a refusal).
"""

from __future__ import annotations

import errno
import os
import warnings

import h5py

from ..errors import LandscapeError
from ..results import H5_KW


class Locked(LandscapeError):
    """The file is locked by another process."""


def _lock_fd(fd: int, path: str) -> bool:
    """An exclusive, non-blocking lock on ``fd``: True when taken, False when the file system has no locks.

    Raises :class:`Locked` when another process holds it.
    """
    busy = Locked(f"{path} is being written by another landscape process; wait for it to finish "
                  "or choose another `out` (reading it with 'landscape info' is fine)")
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
                                     "or choose another `out`") from None
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

