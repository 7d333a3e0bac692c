"""Flushes cost in proportion to the new points (issue 18): raw writes at each point's place, HDF5 point writes
where the layout does not allow it; values and mask as a full rewrite would."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from landscape.store import GridStore, chunk_shape, write_points


@pytest.mark.parametrize("shape", [(7,), (5000,), (51, 51), (130, 3), (21, 17, 19)])
@pytest.mark.parametrize("chunked", [True, False])
def test_write_points_equals_a_full_rewrite(tmp_path, shape, chunked):
    rng = np.random.default_rng(len(shape) + shape[0])
    ref = np.full(shape, np.nan)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        ds = f.create_dataset("v", data=ref, chunks=chunk_shape(shape, min_points=0) if chunked else None)
        n = int(np.prod(shape))
        for size in (1, 10, n // 3, n):  # a few points, many, all; repeated indices overwrite
            idx = rng.integers(0, n, size=size)
            vals = rng.normal(size=size)
            written = write_points(ds, idx, vals)
            last = {int(i): v for i, v in zip(idx, vals)}  # the last value given for an index wins
            ref.reshape(-1)[list(last)] = list(last.values())
            np.testing.assert_array_equal(ds[()], ref)
            blocks = chunk_shape(shape, min_points=0)
            touched = {tuple(m // b for m, b in zip(np.unravel_index(i, shape), blocks)) for i in idx}
            assert written == (len(touched) if chunked else len(last))  # chunks (points) the write touched
        assert write_points(ds, np.zeros(0, np.int64), np.zeros(0)) == 0


def test_chunk_shape():
    assert chunk_shape((51, 51)) is None  # small grids stay contiguous
    assert chunk_shape((51, 51), min_points=0) == (23, 23)
    assert chunk_shape((201, 201, 201)) == (8, 8, 8)
    assert chunk_shape((100000,)) == (512,)
    assert chunk_shape((3, 100000)) == (3, 23)
    assert chunk_shape((10, 10), target=4096, min_points=0) == (10, 10)


def test_surface_flush_touches_only_new_chunks(tmp_path):
    """A surface file is chunked; a flush of a few points rewrites their chunks, the rest of the file is untouched."""
    from landscape.store import WriterLock

    path = str(tmp_path / "s.h5")
    shape = (40, 40, 40)
    chunks = chunk_shape(shape, min_points=0)  # 40³ is under the chunking threshold: chunked here on purpose
    with h5py.File(path, "w") as f:
        for name in ("surfaces/train_loss", "surfaces/train_acc"):
            f.create_dataset(name, shape=shape, dtype=np.float64, chunks=chunks, fillvalue=np.nan)
        f.create_dataset("surfaces/done", shape=shape, dtype=np.uint8, chunks=chunks, fillvalue=0)
    store = GridStore(path, ["surfaces/train_loss", "surfaces/train_acc"], "surfaces/done", shape, flush_every=1e9,
                      lock=WriterLock(path))
    idx = np.array([5, 17, 40 * 40 * 40 - 1])
    store.add(idx, {"train_loss": np.array([1.0, 2.0, 3.0]), "train_acc": np.array([0.1, 0.2, 0.3])})
    store.close()
    with h5py.File(path, "r") as f:
        loss, done = f["surfaces/train_loss"][()].reshape(-1), f["surfaces/done"][()].reshape(-1)
        # chunks never written are not even allocated: the flush did not rewrite the grid
        touched = {tuple(m // 8 for m in np.unravel_index(i, shape)) for i in idx}  # 8³ chunks
        assert len(touched) == 3 and f["surfaces/train_loss"].id.get_num_chunks() == len(touched)
        assert f["surfaces/done"].id.get_num_chunks() == len(touched)
    np.testing.assert_array_equal(loss[idx], [1.0, 2.0, 3.0])
    assert np.isnan(np.delete(loss, idx)).all()
    assert done.sum() == 3 and done[idx].all()


def test_surface_files_are_contiguous_at_every_size(tmp_path):
    """``create_surface_file``: every grid, large or small, is one contiguous extent per dataset (values NaN,
    mask 0), so the consecutive points of a run share disk pages; GridStore fills it in place. (Chunked files
    of earlier versions are filled the same way: ``test_surface_flush_touches_only_new_chunks``.)"""
    import torch

    from landscape.directions import Directions
    from landscape.store import create_surface_file

    for shape, chunks in (((42, 42, 42), None), ((300, 300), None), ((21, 11), None)):
        path = str(tmp_path / ('x'.join(map(str, shape)) + '.h5'))
        coords = tuple(np.linspace(-1, 1, n) for n in shape)
        dirs = Directions({"w": torch.zeros(3)}, [{"w": torch.ones(3)} for _ in shape], "weights", [{} for _ in shape])
        lock = create_surface_file(path, attrs={}, identity={}, coords=coords, directions=dirs, metrics=["train_loss"])
        store = GridStore(path, ["surfaces/train_loss"], "surfaces/done", shape, flush_every=1e9, lock=lock)
        n = int(np.prod(shape))
        idx = np.random.default_rng(0).choice(n, 50, replace=False)
        store.add(idx, {"train_loss": np.arange(50.0)})
        store.close()
        with h5py.File(path, "r") as f:
            ds, done = f["surfaces/train_loss"], f["surfaces/done"]
            assert ds.chunks == chunks and done.chunks == chunks
            loss, mask = ds[()].reshape(-1), done[()].reshape(-1)
        np.testing.assert_array_equal(loss[idx], np.arange(50.0))
        assert np.isnan(np.delete(loss, idx)).all() and mask.sum() == 50 and mask[idx].all()


@pytest.mark.parametrize("shape,chunks", [((13, 7, 5), (4, 3, 2)), ((37, 29), (8, 8)), ((50,), None), ((9, 9), None)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.uint8, ">f8"])
def test_raw_writes_land_where_hdf5_reads_them(tmp_path, shape, chunks, dtype):
    """RawDataset: each element written as raw bytes at its computed offset reads back through HDF5 at its index
    (partial edge chunks, big-endian types, repeated indices: the last value wins), and nothing else changes."""
    from landscape.store import RawDataset

    path = str(tmp_path / "r.h5")
    n = int(np.prod(shape))
    with h5py.File(path, "w") as f:
        f.create_dataset("a", data=np.zeros(shape, dtype=dtype), chunks=chunks)
    with h5py.File(path, "r") as f:
        raw = RawDataset.of(f["a"])
    assert raw is not None and raw.chunks == chunks
    rng = np.random.default_rng(1)
    idx = np.concatenate([rng.choice(n, min(n, 25), replace=False), [0, n - 1, 3, 3]])
    vals = rng.integers(1, 200, size=len(idx)).astype(np.float64)
    expected = np.zeros(n)
    expected[idx] = vals  # numpy: the last of a repeated index wins too
    fd = os.open(path, os.O_RDWR)
    try:
        assert raw.write(fd, idx, vals) == len(np.unique(idx))
    finally:
        os.close(fd)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["a"][()].reshape(-1).astype(np.float64), expected)


def test_raw_layout_is_refused_where_bytes_are_not_in_place(tmp_path):
    """Compressed or never-written chunked datasets have no fixed place per element: None (HDF5 writes them)."""
    from landscape.store import RawDataset

    path = str(tmp_path / "z.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("gz", data=np.zeros((64, 64)), chunks=(8, 8), compression="gzip")
        f.create_dataset("empty", shape=(64, 64), dtype=np.float64, chunks=(8, 8))
        f.create_dataset("lazy", shape=(64,), dtype=np.float64)  # contiguous, storage not allocated yet
    with h5py.File(path, "r") as f:
        assert RawDataset.of(f["gz"]) is None and RawDataset.of(f["empty"]) is None and RawDataset.of(f["lazy"]) is None


def test_surface_flushes_do_not_go_through_hdf5_and_resume_after_kill(tmp_path):
    """A file made by create_surface_file is flushed as raw bytes (HDF5 never opened for writing); a process
    killed (SIGKILL) right after a flush leaves a file that reads back, is not corrupted and resumes."""
    import signal
    import subprocess
    import sys
    import textwrap

    from landscape.store import peek_surface

    path = str(tmp_path / "k.h5")
    code = textwrap.dedent(f"""
        import os, signal, numpy as np, torch
        from landscape.directions import Directions
        from landscape.store import GridStore, create_surface_file
        shape = (42, 42, 42)
        coords = tuple(np.linspace(-1, 1, n) for n in shape)
        dirs = Directions({{"w": torch.zeros(3)}}, [{{"w": torch.ones(3)}} for _ in shape], "weights",
                          [{{}} for _ in shape])
        lock = create_surface_file({path!r}, attrs={{"format": "landscape", "kind": "surface"}}, identity={{}},
                                   coords=coords, directions=dirs, metrics=["train_loss"])
        store = GridStore({path!r}, ["surfaces/train_loss"], "surfaces/done", shape, flush_every=1e9, lock=lock)
        for k in range(3):
            store.add(np.arange(k * 100, k * 100 + 100), {{"train_loss": np.full(100, float(k + 1))}})
            store.flush()
        assert store._file is None  # no HDF5 handle was needed
        store.add(np.arange(300, 400), {{"train_loss": np.full(100, 9.0)}})  # pending, never flushed
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert peek_surface(path) is not None  # readable, not corrupted
    with h5py.File(path, "r") as f:
        loss, done = f["surfaces/train_loss"][()].reshape(-1), f["surfaces/done"][()].reshape(-1).astype(bool)
    assert done.sum() == 300 and done[:300].all()
    np.testing.assert_array_equal(loss[:300], np.repeat([1.0, 2.0, 3.0], 100))
    assert np.isnan(loss[300:]).all()
    store = GridStore(path, ["surfaces/train_loss"], "surfaces/done", (42, 42, 42), flush_every=1e9)
    assert len(store.todo()) == 42 ** 3 - 300  # resumes at the first point not flushed
    store.close()
