"""``landscape track`` under ``mpiexec``: checkpoints spread over ranks give the single-process file, and a
``kill -9`` mid-run resumes (with another rank count) to the file of an uninterrupted run."""

from __future__ import annotations

import os
import re
import subprocess
import time

import h5py
import numpy as np
import pytest

from tests.mpi_helpers import HAVE_MPI, finish, kill9, start
from tests.track_models import write_series

pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(not HAVE_MPI, reason="needs mpiexec and mpi4py (pip install '.[mpi]')"),
]
MODEL = ["--model", "tests.track_models:tiny_model", "--data", "tests.track_models:tiny_data", "--loss", "mse",
         "--batch-size", "5", "--no-progress"]


def ok(n: int, args: list[str], timeout: float = 120, **env) -> str:
    proc = start(["track", *args], ranks=n, stdout=subprocess.PIPE, **env)
    rc, out, err = finish(proc, timeout)
    assert rc == 0, f"rc={rc}\nstdout: {out}\nstderr: {err}"
    return out


def read(path: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r", locking=False) as f:
        f["track"].visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset)
                              else None)
    return out


def assert_same_track(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        if k in ("done", "step"):
            assert a[k].tobytes() == b[k].tobytes(), k
        else:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-9, atol=1e-7 if k == "eigenvectors" else 1e-12,
                                       equal_nan=True, err_msg=k)
    assert a["done"].all()


def test_three_ranks_give_the_single_process_track(tmp_path):
    pattern = os.path.join(os.path.dirname(write_series(str(tmp_path))[0]), "ckpt_*.pt")
    args = [*MODEL, "--checkpoints", pattern, "--top-k", "3", "--lr", "0.05", "--sharpness", "eps"]
    ok(0, [*args, "--out", str(tmp_path / "one.h5")])
    stdout = ok(3, [*args, "--out", str(tmp_path / "three.h5")])
    assert "5/5 checkpoints done (5 computed now" in stdout
    assert_same_track(read(str(tmp_path / "three.h5")), read(str(tmp_path / "one.h5")))


def _done(path: str) -> int | None:
    try:
        with h5py.File(path, "r", locking=False) as f:
            return int(np.asarray(f["track/done"][()]).sum())
    except (OSError, KeyError, RuntimeError, ValueError):
        return None


def test_kill_9_mid_run_then_resume_with_another_rank_count(tmp_path):
    pattern = os.path.join(os.path.dirname(write_series(str(tmp_path), gd_steps=10, prefix="net.")[0]), "ckpt_*.pt")
    slow = ["--model", "tests.track_models:slow_tiny_model", *MODEL[2:], "--checkpoints", pattern, "--top-k", "2",
            "--max-iter", "6", "--metrics", "eigen,overlap,update", "--flush-every", "0.2"]
    env = {"LANDSCAPE_TEST_SLEEP": "0.05"}
    total = 12
    ref = str(tmp_path / "ref.h5")
    ok(0, [*slow, "--out", ref], **env)
    out = str(tmp_path / "killed.h5")
    proc = start(["track", *slow, "--out", out], ranks=2, stderr=subprocess.DEVNULL, **env)
    seen = 0
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            seen = _done(out) or 0
            if seen >= 3:
                break
            time.sleep(0.02)
    finally:
        kill9(proc)
    killed = read(out)  # readable at the moment of the kill
    done = killed["done"].astype(bool)
    assert 3 <= done.sum() < total, f"killed with {done.sum()}/{total} done (rc={proc.returncode})"
    reference = read(ref)
    for k in ("train_loss", "lambda_max", "update_sharpness"):
        np.testing.assert_allclose(killed[k][done], reference[k][done], rtol=1e-9, equal_nan=True, err_msg=k)
    stdout = ok(3, [*slow, "--out", out], **env)
    m = re.search(r"(\d+)/(\d+) checkpoints done \((\d+) computed now", stdout)
    assert m and int(m[1]) == total and int(m[3]) == total - int(done.sum()), stdout
    assert_same_track(read(out), reference)
