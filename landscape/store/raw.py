"""Writing points of a pre-allocated grid dataset: as raw bytes at their place in the file, or as one HDF5
point selection.

Every dataset a run fills was allocated whole when its file was made (NaN values, a zero ``done`` mask),
uncompressed, so each element has a fixed place in the file: for a contiguous dataset the dataset's offset
plus ``flat index × item size``; for a chunked one the offset of its chunk plus its C-order place inside the
(full-sized, even at the grid's edge) chunk. :class:`RawDataset` reads those offsets once, when a run
starts, and a flush then writes each new value as ``item size`` bytes with ``pwrite`` through the locked
descriptor: no HDF5 call, no chunk read back and rewritten, no index lookup, so a flush costs in proportion to
the points it adds, whatever the grid's size (``benchmarks/speed/bench_flush.py``). Only raw bytes inside the
allocated storage change, never HDF5 metadata, so the file is valid after a kill at any moment.

Where a dataset cannot be written this way (filters, chunks not allocated: not a file landscape made),
:func:`write_points` writes the points through HDF5 instead.

Example:
    >>> chunk_shape((201, 201, 201)), chunk_shape((51, 51)), chunk_shape((1001, 1001))
    ((8, 8, 8), None, (23, 23))
"""

from __future__ import annotations

import os

import h5py
import numpy as np

#: elements per chunk of the chunked surface datasets that earlier versions wrote (4 KiB of float64, a disk page;
#: files are contiguous now, see :func:`~landscape.store.create_surface_file`); still read and resumed
CHUNK_ELEMENTS = 512
#: grids smaller than this stay contiguous (the file keeps the simplest layout, one extent per dataset)
CHUNK_MIN_POINTS = 1 << 16


def chunk_shape(shape: tuple[int, ...], target: int = CHUNK_ELEMENTS,
                min_points: int = CHUNK_MIN_POINTS) -> tuple[int, ...] | None:
    """The HDF5 chunk shape earlier versions gave a grid dataset (landscape still resumes their files):
    about ``target`` elements, the same length along every axis
    (512 for a line, 23×23 for a surface, 8×8×8 for a volume), capped by the grid's own size; None
    (contiguous) for grids of fewer than ``min_points`` points."""
    if int(np.prod(shape, dtype=np.int64)) < min_points:
        return None
    side = max(1, round(target ** (1.0 / max(1, len(shape)))))
    return tuple(max(1, min(int(n), side)) for n in shape)


def _last_wins(flat_idx: np.ndarray, values: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique indices and, where an index repeats, its last value (as ``dtype``)."""
    flat_idx = np.asarray(flat_idx, dtype=np.int64).reshape(-1)
    values = np.asarray(values).reshape(-1)
    uniq, first = np.unique(flat_idx[::-1], return_index=True)
    return uniq, np.ascontiguousarray(values[::-1][first], dtype=dtype)


def write_points(ds: h5py.Dataset, flat_idx: np.ndarray, values: np.ndarray) -> int:
    """``ds.flat[flat_idx] = values`` as one HDF5 write of a point selection.

    HDF5 reads and rewrites only the chunks that hold those points (a contiguous dataset is updated in place
    at those points). ``flat_idx`` are C-order flat indices in any order; where one repeats, its last value
    wins. Returns the number of chunks touched (points for an unchunked dataset).
    """
    if not np.size(flat_idx):
        return 0
    shape = ds.shape
    if len(shape) == 0:
        ds[()] = np.asarray(values).reshape(-1)[-1]
        return 1
    uniq, vals = _last_wins(flat_idx, values, ds.dtype)  # sorted: HDF5 visits each chunk once, in file order
    multi = np.unravel_index(uniq, shape)
    space = ds.id.get_space()
    space.select_elements(np.stack(multi, axis=1).astype(np.uint64))
    ds.id.write(h5py.h5s.create_simple((len(uniq),)), space, vals)
    blocks = ds.chunks
    if blocks is None:
        return len(uniq)
    return len({tuple(k) for k in np.stack([m // b for m, b in zip(multi, blocks)], axis=1).tolist()})


def _pwrite(fd: int, data: bytes, offset: int) -> None:
    if hasattr(os, "pwrite"):
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
        return
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class RawDataset:
    """Where every element of an allocated, unfiltered dataset lies in its file (see the module docstring).

    Build it with :meth:`of` (None when the dataset's bytes are not all in place); :meth:`write` then sets
    elements through a file descriptor of the same file.
    """

    def __init__(self, name: str, shape: tuple[int, ...], dtype: np.dtype, base: int | None = None,
                 chunks: tuple[int, ...] | None = None, table: np.ndarray | None = None):
        self.name, self.shape, self.dtype = name, tuple(shape), np.dtype(dtype)
        self.base, self.chunks, self.table = base, chunks, table

    @classmethod
    def of(cls, ds: h5py.Dataset) -> RawDataset | None:
        """The layout of ``ds``, or None when some of its elements have no fixed place (filters, storage not
        allocated, a variable-length type)."""
        dtype = ds.dtype
        if dtype.hasobject or not dtype.itemsize or dtype.fields or ds.id.get_create_plist().get_nfilters():
            return None
        if ds.chunks is None:
            base = ds.id.get_offset()
            return None if base is None else cls(ds.name, ds.shape, dtype, base=int(base))
        chunks = tuple(int(c) for c in ds.chunks)
        grid = tuple(-(-int(n) // c) for n, c in zip(ds.shape, chunks))
        table = np.full(int(np.prod(grid, dtype=np.int64)), -1, dtype=np.int64)
        full = int(np.prod(chunks, dtype=np.int64)) * dtype.itemsize
        ok = [True]

        def visit(info) -> None:
            if info.filter_mask or info.size != full or info.byte_offset is None:
                ok[0] = False
                return
            where = tuple(int(o) // c for o, c in zip(info.chunk_offset, chunks))
            table[np.ravel_multi_index(where, grid)] = int(info.byte_offset)

        try:
            ds.id.chunk_iter(visit)
        except (AttributeError, NotImplementedError, RuntimeError):  # older HDF5: one chunk at a time
            for i in range(ds.id.get_num_chunks()):
                visit(ds.id.get_chunk_info(i))
        if not ok[0] or (table < 0).any():
            return None
        return cls(ds.name, ds.shape, dtype, chunks=chunks, table=table)

    def offsets(self, flat_idx: np.ndarray) -> np.ndarray:
        """Byte offsets in the file of the elements at C-order flat indices ``flat_idx``."""
        flat_idx = np.asarray(flat_idx, dtype=np.int64).reshape(-1)
        size = self.dtype.itemsize
        if self.chunks is None:
            return self.base + flat_idx * size
        multi = np.unravel_index(flat_idx, self.shape)
        grid = tuple(-(-n // c) for n, c in zip(self.shape, self.chunks))
        chunk = np.ravel_multi_index(tuple(m // c for m, c in zip(multi, self.chunks)), grid)
        inside = np.ravel_multi_index(tuple(m % c for m, c in zip(multi, self.chunks)), self.chunks)
        return self.table[chunk] + inside * size

    def write(self, fd: int, flat_idx: np.ndarray, values: np.ndarray) -> int:
        """``flat[flat_idx] = values`` in the file open at ``fd`` (the last value of a repeated index wins);
        returns the number of elements written. Runs of consecutive offsets go in one write each."""
        if not np.size(flat_idx):
            return 0
        uniq, vals = _last_wins(flat_idx, values, self.dtype)
        offs = self.offsets(uniq)
        order = np.argsort(offs, kind="stable")
        offs, data = offs[order], vals[order].view(np.uint8).reshape(len(order), -1)
        size = self.dtype.itemsize
        starts = np.flatnonzero(np.diff(offs, prepend=offs[0] - 2 * size) != size)  # runs of neighbours
        for a, b in zip(starts, [*starts[1:], len(offs)]):
            _pwrite(fd, data[a:b].tobytes(), int(offs[a]))
        return len(uniq)
