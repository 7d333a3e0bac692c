"""Flushes write only the HDF5 chunks that hold new points (issue 18): values and mask as a full rewrite would."""

from __future__ import annotations

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


def test_large_surface_files_are_chunked_small_ones_contiguous(tmp_path):
    """``create_surface_file``: a 3D grid over the threshold gets 8³ chunks (values NaN, mask 0), a 2D one stays
    contiguous; GridStore fills either the same way."""
    import torch

    from landscape.directions import Directions
    from landscape.store import create_surface_file

    for shape, chunks in (((42, 42, 42), (8, 8, 8)), ((21, 11), None)):
        path = str(tmp_path / f"{len(shape)}.h5")
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
