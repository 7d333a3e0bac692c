"""``landscape hessian`` under ``mpiexec``: every rank computes Hessian-vector products on its share of the
batches (batch i on rank i % size, partial sums added up by an allreduce), so the eigenvalues and the trace are
the single-process ones for any rank count, also when a rank holds no batch; rank 0 alone writes the file.

Every case launches a subprocess with a timeout: a hang fails the test (the whole process group is killed),
it is never skipped. CPU only, zoo:mlp on at most 200 digits.
"""

from __future__ import annotations

import os
import subprocess

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from tests.mpi_helpers import HAVE_MPI, finish, start

pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(not HAVE_MPI, reason="needs mpiexec and mpi4py (pip install '.[mpi]')"),
]

BASE = ["--model", "zoo:mlp", "--data", "zoo:digits", "--top-k", "3", "--smallest", "--trace", "--trace-matvecs", "12"]
CASES = {
    "7-batches": ["--samples", "200", "--batch-size", "32"],  # more batches than ranks, not a multiple of 2 or 3
    "1-batch": ["--samples", "50", "--batch-size", "64"],  # one batch: every rank but rank 0 holds none
}


def run(n: int, args: list[str], timeout: float = 120, **env: str):
    """``[mpiexec -n N] landscape hessian ARGS`` (n = 0: a plain process): (rc, stdout, stderr)."""
    proc = start(["hessian", *args], ranks=n, stdout=subprocess.PIPE, **env)
    return finish(proc, timeout)


def read(path: str) -> dict[str, np.ndarray]:
    with h5py.File(path, "r", locking=False) as f:
        assert f.attrs["kind"] == "hessian"
        return {k: f["curvature"][k][()] for k in f["curvature"]}


def computed(n: int, case: str, folder) -> dict[str, np.ndarray]:
    os.makedirs(folder, exist_ok=True)
    out = os.path.join(folder, "hessian.h5")
    rc, stdout, err = run(n, [*BASE, *CASES[case], "--out", out])
    assert rc == 0, f"rc={rc}\nstdout: {stdout}\nstderr: {err}"
    assert stdout.count(f"→ {out}") == 1 and stdout.count("eigenvalues (top 3)") == 1, stdout  # rank 0 prints
    assert sorted(os.listdir(folder)) == ["hessian.h5"]  # one file, no leftovers (temporary files, locks)
    return read(out)


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict:
    """Single-process results, computed on first use per case."""
    cache: dict[str, dict] = {}

    def get(case: str) -> dict:
        if case not in cache:
            cache[case] = computed(0, case, str(tmp_path_factory.mktemp(f"single-{case}")))
        return cache[case]

    return get


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("case", list(CASES))
def test_hessian_on_n_ranks_gives_the_single_process_result(case, n, references, tmp_path):
    ref = references(case)
    got = computed(n, case, str(tmp_path / f"n{n}"))
    assert sorted(got) == sorted(ref) == ["eigenvalues", "smallest", "trace"]
    assert got["eigenvalues"].shape == (3,) and np.all(np.diff(got["eigenvalues"]) <= 0)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-6, err_msg=k)


def test_setup_error_is_agreed_by_every_rank(tmp_path):
    """--top-k above the parameter count: found on every rank during setup, printed once, exit status 2."""
    out = str(tmp_path / "h.h5")
    rc, _, err = run(2, ["--model", "zoo:mlp", "--data", "zoo:digits", "--samples", "50", "--top-k", "10000000",
                               "--out", out], timeout=60)
    assert rc == 2, err
    assert err.count("--top-k 10000000 is more than") == 1, err
    assert "landscape hessian: error: --top-k" in err, err  # every rank found it: no rank is named
    assert "Traceback" not in err
    assert not os.path.exists(out)


def test_rank_failing_mid_run_ends_the_job(tmp_path):
    """Rank 1's forward pass raises once products are under way: the job ends (no rank waits in an allreduce)."""
    out = str(tmp_path / "h.h5")
    # (a rank left waiting in an allreduce would hang: the launcher's timeout fails the test)
    rc, _, err = run(2, ["--model", "tests.mpi_helpers:failing_model", "--data", "zoo:digits", "--samples",
                            "100", "--batch-size", "16", "--out", out], timeout=45, LANDSCAPE_TEST_FAIL_AFTER="4")
    assert rc != 0
    assert "[rank 1] RuntimeError: injected failure in the forward pass on rank 1" in err
    assert not os.path.exists(out)


class _Noisy(nn.Module):
    """An MLP whose output gets fresh noise on every call (a random layer that eval mode does not turn off)."""

    def __init__(self):
        super().__init__()
        from landscape.zoo.models import MLP

        self.net = MLP()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out + 0.1 * torch.randn_like(out)


def noisy_model() -> nn.Module:
    """``--model tests.test_mpi_curvature:noisy_model``."""
    return _Noisy()


def test_nondeterministic_model_is_refused_by_every_rank_alike(tmp_path):
    """The determinism check compares products summed over the ranks, so every rank reaches the same verdict: the
    error is printed once, every rank exits with status 2, nothing is aborted."""
    out = str(tmp_path / "h.h5")
    rc, _, err = run(2, ["--model", "tests.test_mpi_curvature:noisy_model", "--data", "zoo:digits", "--samples",
                            "50", "--batch-size", "16", "--out", out], timeout=60)
    assert rc == 2, err
    assert err.count("the loss is not deterministic") == 1, err
    assert "Traceback" not in err and "Abort" not in err and "BAD TERMINATION" not in err
    assert not os.path.exists(out)
