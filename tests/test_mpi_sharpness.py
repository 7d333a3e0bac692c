"""``landscape sharpness`` under ``mpiexec``: every rank computes its share of the batches (data batch i on rank
i % size, example batch j of worst-/average-case m-sharpness on rank j % size; partial sums added up by float64
allreduces), so every stored metric is the single-process value for any rank count, also when a rank holds no
batch; rank 0 alone prints and writes the file.

Every case launches a subprocess with a timeout: a hang fails the test (the whole process group is killed), it
is never skipped. CPU only, zoo:mlp (width 8, depth 1) on at most 200 digits, one thread per process.
"""

from __future__ import annotations

import os
import subprocess

import h5py
import numpy as np
import pytest

from tests.mpi_helpers import HAVE_MPI, finish, start

pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(not HAVE_MPI, reason="needs mpiexec and mpi4py (pip install '.[mpi]')"),
]

BASE = ["--model", "zoo:mlp", "--model-args", "width=8,depth=1", "--data", "zoo:digits", "--device", "cpu",
        "--lr", "0.1", "--lanczos-steps", "8", "--trace-matvecs", "6", "--eps-steps", "3", "--apgd-steps", "3",
        "--avg-samples", "2", "--flat-target", "loss", "--flat-samples", "2", "--flat-iters", "4",
        "--etas", "0.05:0.2:3"]
CASES = {
    # 7 data batches (uneven over 2 and 3 ranks); 4 example batches of 48 (rank 0 holds two of them on 2 and 3 ranks)
    "7-batches": ["--samples", "200", "--batch-size", "32", "--m", "48", "--max-examples", "200", "--metrics",
                  "curvature,eps,worst_adaptive_l2,worst_standard_linf,avg_adaptive,flatness_sigma,gradient_path,"
                  "directional"],
    # 2 data batches and 2 example batches: on 3 ranks, rank 2 holds no batch of either kind
    "2-batches": ["--samples", "60", "--batch-size", "30", "--m", "30", "--max-examples", "60", "--metrics",
                  "curvature,eps,worst_adaptive_l2,avg_adaptive,gradient_path"],
}
RANKS = {"7-batches": [2, 3], "2-batches": [3]}


def run(n: int, args: list[str], timeout: float = 120, script: str | None = None, **env: str):
    """``[mpiexec -n N] landscape sharpness ARGS`` (n = 0: a plain process): (rc, stdout, stderr)."""
    env.setdefault("OMP_NUM_THREADS", "1")  # one thread per process: cheap on a small CI machine, as under mpiexec
    proc = start(["sharpness", *args] if script is None else args, ranks=n, stdout=subprocess.PIPE, script=script,
                 **env)
    return finish(proc, timeout)


def read(path: str) -> dict[str, np.ndarray]:
    with h5py.File(path, "r", locking=False) as f:
        assert f.attrs["kind"] == "sharpness"
        return {k: f["metrics"][k][()] for k in f["metrics"]}


def computed(n: int, case: str, folder, script: str | None = None) -> tuple[dict[str, np.ndarray], str]:
    os.makedirs(folder, exist_ok=True)
    out = os.path.join(folder, "sharpness.h5")
    args = [*BASE, *CASES[case], "--out", out]
    rc, stdout, err = run(n, args, script=script)
    assert rc == 0, f"rc={rc}\nstdout: {stdout}\nstderr: {err}"
    assert stdout.count(f"→ {out}") == 1 and stdout.count("lambda_max ") == 1, stdout  # rank 0 alone prints
    assert err.count("landscape sharpness:") == 1 and err.count("] curvature") == 1, err  # progress: rank 0 only
    assert sorted(os.listdir(folder)) == ["sharpness.h5"]  # one file, no leftovers (temporary files, locks)
    return read(out), err


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict:
    """Single-process results, computed on first use per case."""
    cache: dict[str, dict] = {}

    def get(case: str) -> dict:
        if case not in cache:
            cache[case] = computed(0, case, str(tmp_path_factory.mktemp(f"single-{case}")))[0]
        return cache[case]

    return get


@pytest.mark.parametrize(("case", "n"), [(c, n) for c in CASES for n in RANKS[c]])
def test_sharpness_on_n_ranks_gives_the_single_process_result(case, n, references, tmp_path):
    ref = references(case)
    # -n 2 runs through scripts/sharpness.py (the mpirun-ready entry point), the others through the CLI
    script = "scripts/sharpness.py" if n == 2 else None
    got, err = computed(n, case, str(tmp_path / f"n{n}"), script=script)
    assert f"({n} ranks, 1 threads per rank)" in err
    assert sorted(got) == sorted(ref)
    expected = {"lambda_max", "lambda_min", "trace", "eps_sharpness", "worst_adaptive_l2", "avg_adaptive",
                "loss_variation", "gradient_predictiveness", "beta_smoothness", "loss_along_gradient"}
    assert expected <= set(ref), sorted(ref)
    for k in ref:
        assert np.all(np.isfinite(ref[k])), k
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-6, atol=1e-12, err_msg=k)


def test_rank_failing_mid_run_ends_the_job(tmp_path):
    """Rank 1's forward pass raises once the metrics are under way: the job ends (no rank waits in an allreduce),
    the error is reported, no file is written."""
    out = str(tmp_path / "s.h5")
    # (a rank left waiting in an allreduce would hang: the launcher's timeout fails the test)
    rc, _, err = run(2, ["--model", "tests.mpi_helpers:failing_model", "--data", "zoo:digits", "--samples", "64",
                         "--batch-size", "16", "--metrics", "eps", "--eps-steps", "3", "--out", out], timeout=60,
                     LANDSCAPE_TEST_FAIL_AFTER="3")
    assert rc != 0
    assert "[rank 1] RuntimeError: injected failure in the forward pass on rank 1" in err, err
    assert not os.path.exists(out)
