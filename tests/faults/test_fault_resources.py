"""Issue 8, parts 5 and 7: overflowing losses, a model output of the wrong shape, out of memory, disk full."""

from __future__ import annotations

import errno
import os
import re

import h5py
import numpy as np
import pytest

from tests.faults.fault_helpers import read_all
from tests.faults.test_fault_files import cli, one_line_error
from tests.mpi_helpers import HAVE_MPI, finish, start

FAST = ["--data", "tests.faults.fault_helpers:synthetic16", "--chunk-size", "1", "--points-per-batch", "1",
        "--no-progress"]


def test_overflowing_loss_is_stored_and_masked_not_fatal(tmp_path):
    out = str(tmp_path / "far.h5")
    with pytest.warns(UserWarning, match="NaN or infinite"):
        code, _, err = cli("surface", "--model", "tests.faults.fault_helpers:blowup_mlp", *FAST, "--x=-60:60:9",
                           "--out", out)
    assert code == 0, err
    s = read_all(out)
    loss = s["surfaces/train_loss"]
    assert s["surfaces/done"].all()
    assert np.isfinite(loss[4]) and not np.isfinite(loss).all(), loss  # finite at the centre, not far away
    # the file stays resumable (non-finite losses are values, not damage) and plottable
    code, stdout, err = cli("surface", "--model", "tests.faults.fault_helpers:blowup_mlp", *FAST, "--x=-60:60:9",
                            "--out", out)
    assert code == 0 and "9/9 points done (0 computed now" in stdout, err
    code, _, err = cli("plot", out, "--kind", "line", "--dpi", "30", "--out-dir", str(tmp_path))
    assert code == 0, err


def test_output_of_the_wrong_shape_fails_before_any_point(tmp_path):
    out = str(tmp_path / "never.h5")
    code, _, err = cli("surface", "--model", "tests.faults.fault_helpers:wrong_shape_mlp", *FAST, "--x=-1:1:5",
                       "--out", out)
    line = one_line_error(code, err, err)
    assert "output does not fit --loss cross_entropy" in line, line
    assert not (tmp_path / "never.h5").exists()  # refused before the file (and any point) was made


def test_out_of_memory_suggests_smaller_batches_and_keeps_the_points_done(tmp_path, monkeypatch):
    out = str(tmp_path / "oom.h5")
    args = ["surface", "--model", "tests.faults.fault_helpers:oom_mlp", *FAST, "--x=-1:1:7", "--out", out]
    monkeypatch.setenv("LANDSCAPE_FAULT_OOM_AFTER", "6")  # a few set-up forward passes, some points, then the error
    code, _, err = cli(*args)
    line = one_line_error(code, err, err)
    for want in ("out of memory", "--batch-size", "--points-per-batch", "resume"):
        assert want in line, line
    with h5py.File(out, "r", locking=False) as f:
        done = int(f["surfaces/done"][()].sum())  # what was computed before the error was flushed
    assert 0 < done < 7
    monkeypatch.setenv("LANDSCAPE_FAULT_OOM_AFTER", "1000000")
    code, stdout, err = cli(*args)
    assert code == 0 and f"7/7 points done ({7 - done} computed now" in stdout, err


@pytest.mark.mpi
@pytest.mark.skipif(not HAVE_MPI, reason="needs mpiexec and mpi4py")
def test_out_of_memory_on_a_worker_rank_is_one_line_with_the_hint(tmp_path):
    """``mpiexec -n 2``: rank 1 (not rank 0, which reports everything else) runs out of memory mid-run."""
    out = str(tmp_path / "oom_mpi.h5")
    proc = start(["surface", "--model", "tests.faults.fault_helpers:oom_mlp", *FAST, "--x=-1:1:9", "--out", out],
                 ranks=2, LANDSCAPE_FAULT_OOM_AFTER=4, LANDSCAPE_FAULT_OOM_RANK=1)
    rc, _, err = finish(proc, 120)
    assert rc != 0, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    for want in ("[rank 1]", "out of memory", "--batch-size", "--points-per-batch", "--samples"):
        assert want in lines[0], lines[0]


def test_memory_error_is_one_line_too(tmp_path, monkeypatch):
    import landscape.surface as surface

    real = surface.make_compute

    def failing(*a, **k):
        compute = real(*a, **k)

        def go(idx):
            if idx[0] >= 2:
                raise MemoryError()
            return compute(idx)

        return go

    monkeypatch.setattr(surface, "make_compute", failing)
    code, _, err = cli("surface", "--model", "zoo:mlp", *FAST[2:], "--data", "zoo:synthetic", "--samples", "32",
                       "--x=-1:1:5", "--out", str(tmp_path / "mem.h5"))
    line = one_line_error(code, err, err)
    assert "out of memory (MemoryError" in line and "--batch-size" in line, line


@pytest.mark.parametrize("fail_at", list(np.random.default_rng(7).integers(1, 27, 4)) + [3, 6])
def test_disk_full_during_a_flush_keeps_the_last_good_state(tmp_path, monkeypatch, fail_at):
    """ENOSPC on the n-th raw write (values or mask) of any flush: one line, and the file as of the last flush.

    The writes counted are ``Dataset.__setitem__`` and, since flushes write new points as raw bytes at their
    place (issue 18), ``landscape.store.RawDataset.write``."""
    base = ["surface", "--model", "zoo:mlp", "--model-args", "width=8,depth=1", "--data", "zoo:synthetic",
            "--samples", "32", "--x=-1:1:9", "--chunk-size", "1", "--points-per-batch", "1", "--no-progress"]
    ref = str(tmp_path / "ref.h5")
    assert cli(*base, "--out", ref)[0] == 0
    reference = read_all(ref)

    out = str(tmp_path / "full.h5")
    real = h5py.Dataset.__setitem__
    calls = {"n": 0}

    def is_out(f) -> bool:  # runs write through the descriptor they locked: FileIO name=FD
        m = re.search(r"name=(\d+)", f.filename)
        return f.filename == out or (m is not None and os.path.exists(out)
                                     and os.fstat(int(m[1])).st_ino == os.stat(out).st_ino)

    def setitem(self, key, value):
        if is_out(self.file):
            calls["n"] += 1
            if calls["n"] >= fail_at:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, key, value)

    from landscape.store import RawDataset

    real_raw = RawDataset.write

    def write_raw(self, fd, idx, values):  # flushes write new points as raw bytes at their place (issue 18)
        if os.path.exists(out) and os.fstat(fd).st_ino == os.stat(out).st_ino:
            calls["n"] += 1
            if calls["n"] >= fail_at:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_raw(self, fd, idx, values)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", setitem)
    monkeypatch.setattr(RawDataset, "write", write_raw)
    code, _, err = cli(*base, "--flush-every", "0.000001", "--out", out)
    line = one_line_error(code, err, err)
    assert "No space left on device" in line and "run the same command again" in line, line
    monkeypatch.setattr(h5py.Dataset, "__setitem__", real)
    monkeypatch.setattr(RawDataset, "write", real_raw)
    state = read_all(out)  # still a valid file
    done = state["surfaces/done"].astype(bool)
    assert done.sum() == (fail_at - 1) // 3  # three writes per flush: two metrics, then the mask
    for k in ("surfaces/train_loss", "surfaces/train_acc"):
        np.testing.assert_allclose(state[k][done], reference[k][done], rtol=1e-6, err_msg=k)
    code, stdout, err = cli(*base, "--out", out)  # space is back: the run resumes
    assert code == 0 and "9/9 points done" in stdout, err
