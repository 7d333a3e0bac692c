"""``landscape surface`` under ``mpiexec``: same surface for any rank count, kill -9 and restart, failing ranks.

Every case launches ``mpiexec`` as a subprocess with a timeout: a hang fails the test (the whole
process group is killed), it is never skipped. CPU only, tiny grids, 200 samples.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from tests.mpi_helpers import HAVE_MPI, MPIEXEC, ROOT, finish, kill9, start, subprocess_env

pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(not HAVE_MPI, reason="needs mpiexec and mpi4py (pip install '.[mpi]')"),
]

BASE = ["--model", "zoo:mlp", "--data", "zoo:digits", "--samples", "200", "--no-progress"]


def run(n: int, args: list[str], timeout: float = 90, script: bool = False, **env: str):
    """Run ``[mpiexec -n N] landscape surface ARGS``; returns (rc, stdout, stderr); a hang fails."""
    proc = start(["surface", *args] if not script else args, ranks=n, stdout=subprocess.PIPE,
                 script=os.path.join("scripts", "surface.py") if script else None, **env)
    return finish(proc, timeout)


def ok(n: int, args: list[str], **kw) -> str:
    rc, out, err = run(n, args, **kw)
    assert rc == 0, f"rc={rc}\nstdout: {out}\nstderr: {err}"
    return out


def read(path: str) -> dict[str, np.ndarray]:
    """Every dataset of a result file by path."""
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r", locking=False) as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_same_surface(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        if k.startswith(("directions/", "coords/")) or k == "surfaces/done":
            assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), f"{k} differs bitwise"
        elif k.startswith("surfaces/"):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert a["surfaces/done"].all()


# ------------------------------------------------------------------------------- same surface
GRID = ["--x=-1:1:7", "--y=0:1:5"]  # 35 points: not a multiple of 2 or 3


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    path = str(tmp_path_factory.mktemp("ref") / "single.h5")
    ok(0, [*BASE, *GRID, "--out", path])
    return read(path)


def test_batched_surface_is_bitwise_the_same_for_any_rank_count(tmp_path):
    """With the batched evaluator (K = 4) every vmap call has K points and all ranks use the same K, so a point's
    value does not depend on the rank that computed it, nor on the number of ranks."""
    surfaces = []
    for n in (0, 3):
        out = str(tmp_path / f"k4-n{n}.h5")
        ok(n, [*BASE, *GRID, "--points-per-batch", "4", "--out", out])
        surfaces.append(read(out))
    for k in surfaces[0]:
        if k.startswith("surfaces/"):
            assert surfaces[0][k].tobytes() == surfaces[1][k].tobytes(), f"{k} differs bitwise"


@pytest.mark.parametrize("n", [1, 2, 3])
def test_any_rank_count_gives_the_single_process_surface(n, reference, tmp_path):
    out = str(tmp_path / f"n{n}.h5")
    stdout = ok(n, [*BASE, *GRID, "--out", out])
    assert "35/35 points done (35 computed now" in stdout
    assert_same_surface(read(out), reference)


def test_more_ranks_than_points_and_resume_of_a_finished_file(tmp_path):
    """3 ranks, 2 points (scripts/surface.py entry point); then a rerun finds nothing to do."""
    out = str(tmp_path / "two.h5")
    ref = str(tmp_path / "ref.h5")
    ok(0, [*BASE, "--x=-1:1:2", "--out", ref])
    stdout = ok(3, [*BASE, "--x=-1:1:2", "--out", out], script=True)
    assert "2/2 points done (2 computed now" in stdout
    assert_same_surface(read(out), read(ref))
    stdout = ok(2, [*BASE, "--x=-1:1:2", "--out", out])
    assert "2/2 points done (0 computed now" in stdout


# ------------------------------------------------------------------------------- kill -9 + restart
def _poll_done(path: str) -> int | None:
    try:
        with h5py.File(path, "r", locking=False) as f:
            return int(np.asarray(f["surfaces/done"][()]).sum())
    except (OSError, KeyError, RuntimeError, ValueError):
        return None  # not created yet (or caught mid-write: try again)


def test_kill_9_then_restart_with_another_rank_count(tmp_path):
    flush = 0.5
    slow = ["--model", "tests.mpi_helpers:slow_model", "--data", "zoo:digits", "--samples", "200", "--no-progress",
            "--x=-1:1:15", "--y=-1:1:10", "--chunk-size", "1", "--points-per-batch", "1", "--flush-every", str(flush)]
    total = 150
    env = {"LANDSCAPE_TEST_SLEEP": "0.05"}

    ref = str(tmp_path / "uninterrupted.h5")
    ok(2, [*slow, "--out", ref], timeout=120, **env)
    reference = read(ref)

    out = str(tmp_path / "killed.h5")
    proc = start(["surface", *slow, "--out", out], ranks=2, stderr=subprocess.DEVNULL, **env)
    flushes: list[tuple[float, int]] = []  # (time, done) whenever the done count on disk grew
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = _poll_done(out)
            if done is not None and done > (flushes[-1][1] if flushes else 0):
                flushes.append((time.monotonic(), done))
                if len(flushes) >= 3:
                    break
            time.sleep(0.02)
    finally:
        kill9(proc)  # kill -9 of mpiexec and every rank
    assert len(flushes) >= 3, f"the run ended or stalled before it was killed: {flushes}, rc={proc.returncode}"
    gaps = np.diff([t for t, _ in flushes])
    assert gaps.max() <= flush + 1.0, f"flushes {gaps} s apart: more than --flush-every={flush} s of work at risk"

    killed = read(out)  # a readable file, valid at the moment of the kill
    done = killed["surfaces/done"].astype(bool)
    assert 0 < done.sum() < total
    for k in ("surfaces/train_loss", "surfaces/train_acc"):
        np.testing.assert_allclose(killed[k][done], reference[k][done], rtol=1e-5, atol=1e-6, err_msg=k)
        assert np.isnan(killed[k][~done]).all()
    for k in reference:
        if k.startswith("directions/"):
            assert killed[k].tobytes() == reference[k].tobytes()

    stdout = ok(3, [*slow, "--out", out], timeout=120, **env)  # restart with 3 ranks
    m = re.search(r"(\d+)/(\d+) points done \((\d+) computed now", stdout)
    assert m and int(m[1]) == total and int(m[3]) == total - int(done.sum()), stdout  # nothing flushed is redone
    assert_same_surface(read(out), reference)


# ------------------------------------------------------------------------------- failing ranks
def test_rank_failing_during_setup_ends_the_job(tmp_path):
    out = str(tmp_path / "fail.h5")
    # (a rank left waiting for the failed one would hang: the launcher's timeout fails the test)
    rc, _, err = run(2, ["--model", "zoo:mlp", "--data", "tests.mpi_helpers:failing_data", "--samples", "200",
                         "--x=-1:1:5", "--out", out], timeout=30)
    assert rc != 0
    assert "injected failure in the data callable on rank 1" in err
    assert err.count("injected failure") == 1, err  # printed once
    assert "Traceback" not in err


def test_rank_failing_mid_run_ends_the_job(tmp_path):
    out = str(tmp_path / "fail.h5")
    rc, _, err = run(2, ["--model", "tests.mpi_helpers:failing_model", "--data", "zoo:digits", "--samples", "200",
                         "--x=-1:1:21", "--chunk-size", "1", "--points-per-batch", "1", "--flush-every", "0.1",
                         "--out", out], timeout=30, LANDSCAPE_TEST_FAIL_AFTER="4")
    assert rc != 0
    assert "[rank 1] RuntimeError: injected failure in the forward pass on rank 1" in err
    with h5py.File(out, "r", locking=False) as f:  # still a valid file
        done = f["surfaces/done"][()].astype(bool)
        assert np.isfinite(f["surfaces/train_loss"][()][done]).all()


# ------------------------------------------------------------------------------- collectives
BCAST_CODE = """
import torch
from landscape.parallel import world
w = world()
assert w.size == 2, w
g = torch.Generator().manual_seed(0)
src = {"w": torch.randn(3, 4, generator=g), "scalar": torch.tensor(1.5), "half": torch.randn(5, generator=g).bfloat16(),
       "empty": torch.empty(0, 3), "d": torch.randn(2, generator=g).double()}
got = w.bcast_named(src if w.rank == 0 else None, like=src)
assert list(got) == list(src)
for k in src:
    assert got[k].dtype == src[k].dtype and got[k].shape == src[k].shape, k
    assert got[k].reshape(-1).view(torch.uint8).tolist() == src[k].reshape(-1).view(torch.uint8).tolist(), k
assert w.bcast({"a": 1} if w.rank == 0 else None) == {"a": 1}
try:
    w.collective(lambda: 1 / 0 if w.rank == 1 else 0)
except Exception as e:
    import sys
    sys.stdout.write(f"rank {w.rank}: {type(e).__name__}\\n")  # one write: lines of two ranks cannot interleave
    sys.stdout.flush()
w.barrier()
"""


def test_bcast_named_is_bitwise_and_collective_agrees_on_failure():
    proc = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-c", BCAST_CODE], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split("\n")[:2]) == ["rank 0: AbortedElsewhere", "rank 1: ZeroDivisionError"], proc.stdout
