"""Unit tests of landscape.parallel that need no MPI: devices, threads, chunking, environment parsing."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from landscape import parallel
from landscape.errors import LandscapeError
from landscape.parallel import (
    ChunkQueue,
    World,
    auto_chunk_size,
    chunks,
    configure_threads,
    cpu_share,
    device_for_rank,
    run_points,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPI_VARS = (*parallel._LAUNCHER_SIZE_VARS, *parallel._LOCAL_RANK_VARS, "PMI_RANK", "PMIX_RANK",
            "OMPI_COMM_WORLD_RANK", "SLURM_NTASKS", "SLURM_PROCID")


@pytest.fixture
def no_mpi_env(monkeypatch):
    for var in MPI_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


# ------------------------------------------------------------------------------- devices
@pytest.mark.parametrize("n_gpus, local_rank, want", [(4, 0, "cuda:0"), (4, 3, "cuda:3"), (4, 5, "cuda:1"),
                                                      (1, 7, "cuda:0"), (8, 2, "cuda:2"), (0, 3, "cpu")])
def test_auto_device_is_local_rank_modulo_gpus(n_gpus, local_rank, want):
    assert device_for_rank("auto", local_rank, n_gpus=n_gpus) == want


def test_cuda_device_request():
    assert device_for_rank("cuda", 5, n_gpus=2) == "cuda:1"
    with pytest.raises(LandscapeError, match="no CUDA device"):
        device_for_rank("cuda", 0, n_gpus=0)


@pytest.mark.parametrize("requested", ["cpu", "cuda:3", "mps"])
def test_explicit_device_is_kept(requested):
    assert device_for_rank(requested, 2, n_gpus=4) == requested


def test_device_for_rank_counts_real_gpus_by_default():
    want = "cuda:0" if torch.cuda.is_available() and torch.cuda.device_count() else "cpu"
    assert device_for_rank("auto", 0) == want


# ------------------------------------------------------------------------------- threads
def test_cpu_share_splits_shared_cores_and_keeps_pinned_ones():
    assert cpu_share({0, 1}, [{0, 1}, {0, 1}]) == 1  # 2 ranks, no binding, 2 cores
    assert cpu_share({0, 1}, [{0, 1}] * 3) == 1  # more ranks than cores: still one thread
    assert cpu_share(set(range(16)), [set(range(16))] * 4) == 4
    assert cpu_share({0, 1, 2, 3}, [{0, 1, 2, 3}, {4, 5, 6, 7}]) == 4  # pinned to disjoint sets
    assert cpu_share({0}, [{0}, {1}, {2}]) == 1
    assert cpu_share({0, 1, 2}, []) == 3


@pytest.fixture
def restore_threads(monkeypatch):
    n = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LANDSCAPE_NUM_THREADS", raising=False)
    yield monkeypatch
    torch.set_num_threads(n)


def test_configure_threads_gives_each_rank_its_share(restore_threads, no_mpi_env):
    w = World(rank=1, size=2, local_rank=1, local_size=2, cpu_share=1)
    assert configure_threads(w, torch.device("cpu")) == 1
    assert torch.get_num_threads() == 1
    assert os.environ["OMP_NUM_THREADS"] == "1"


def test_configure_threads_without_share_divides_affinity(restore_threads, no_mpi_env):
    cores = len(os.sched_getaffinity(0))
    w = World(rank=0, size=3, local_rank=0, local_size=3)
    assert configure_threads(w, torch.device("cpu")) == max(1, cores // 3)


def test_configure_threads_honours_the_user(restore_threads, no_mpi_env):
    restore_threads.setenv("LANDSCAPE_NUM_THREADS", "3")
    w = World(rank=0, size=2, local_rank=0, local_size=2, cpu_share=1)
    assert configure_threads(w, torch.device("cpu")) == 3


def test_configure_threads_single_process_keeps_torch_default(restore_threads, no_mpi_env):
    n = torch.get_num_threads()
    assert configure_threads(World(), torch.device("cpu")) == n


def test_configure_threads_mpiexec_n1_uses_every_core(restore_threads, no_mpi_env):
    no_mpi_env.setenv("PMI_RANK", "0")
    no_mpi_env.setenv("PMI_SIZE", "1")
    assert configure_threads(World(), torch.device("cpu")) == len(os.sched_getaffinity(0))


# ------------------------------------------------------------------------------- environment
@pytest.mark.parametrize("var", parallel._LOCAL_RANK_VARS)
def test_local_rank_from_each_launcher(no_mpi_env, var):
    no_mpi_env.setenv(var, "3")
    assert parallel._local_rank_from_env() == 3


def test_local_rank_absent_or_garbage(no_mpi_env):
    assert parallel._local_rank_from_env() is None
    no_mpi_env.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "x")
    no_mpi_env.setenv("SLURM_LOCALID", "2")
    assert parallel._local_rank_from_env() == 2


@pytest.mark.parametrize("env, launched", [
    ({}, False),
    ({"PMI_SIZE": "2"}, True),  # MPICH hydra
    ({"PMI_RANK": "0", "PMI_SIZE": "1"}, True),  # mpiexec -n 1
    ({"OMPI_COMM_WORLD_SIZE": "4"}, True),  # Open MPI
    ({"PMIX_RANK": "0"}, True),
    ({"SLURM_STEP_NUM_TASKS": "8"}, True),  # srun
    ({"SLURM_NTASKS": "8"}, False),  # a plain `python` line in an sbatch script
    ({"PMI_SIZE": "garbage"}, False),
])
def test_launcher_detection(no_mpi_env, env, launched):
    for k, v in env.items():
        no_mpi_env.setenv(k, v)
    assert parallel._launched_by_mpi() is launched


def test_world_without_mpi_env_never_imports_mpi4py():
    env = {k: v for k, v in os.environ.items() if k not in MPI_VARS}
    env["PYTHONPATH"] = ROOT
    code = ("import sys; from landscape.parallel import world; w = world(); "
            "print(w.rank, w.size, w.comm is None, 'mpi4py.MPI' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1", "True", "False"]


def test_single_world_collectives_are_identities():
    w = World()
    assert w.is_root and w.bcast(5) == 5
    named = {"a": torch.ones(2)}
    assert w.bcast_named(named) is named
    assert w.collective(lambda: 7) == 7
    w.barrier()
    with pytest.raises(ValueError, match="boom"):
        w.collective(lambda: (_ for _ in ()).throw(ValueError("boom")))


def test_wait_sleeps_until_the_request_completes():
    class Req:
        calls = 0

        def Test(self):  # noqa: N802 - mpi4py's name
            self.calls += 1
            return self.calls >= 4

    r = Req()
    parallel._wait(r)
    assert r.calls == 4

    class Comm:
        probes = 0

        def Iprobe(self, source, tag):  # noqa: N802
            self.probes += 1
            return self.probes >= 3

    c = Comm()
    parallel._wait_message(c, 0, 11)
    assert c.probes == 3


# ------------------------------------------------------------------------------- chunking
@pytest.mark.parametrize("n, ranks, lo, hi", [(0, 2, 1, 1), (10, 2, 1, 1), (1000, 2, 63, 63), (10**6, 4, 64, 64),
                                              (500, 1, 63, 63)])
def test_auto_chunk_size(n, ranks, lo, hi):
    assert lo <= auto_chunk_size(n, ranks) <= hi


def test_chunks_cover_in_order():
    todo = np.arange(10)
    assert [c.tolist() for c in chunks(todo, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize("n, size, ranks", [(0, 4, 2), (1, 4, 3), (35, 1, 3), (35, 4, 2), (1000, 63, 2),
                                            (1000, 64, 16), (7, 100, 2)])
def test_chunk_queue_covers_each_point_once_and_shrinks_at_the_end(n, size, ranks):
    todo = np.arange(n, dtype=np.int64) * 3 + 1  # any index set
    q = ChunkQueue(todo, size, ranks)
    got = []
    while q:
        left = len(q)
        c = q.pop()
        assert 1 <= len(c) <= size
        if left <= 2 * ranks * size:  # tail: no chunk bigger than a 1/(2·ranks) share of what is left (rounded up)
            assert len(c) <= -(-left // (2 * ranks))
        got.append(c)
    flat = np.concatenate(got) if got else np.empty(0, np.int64)
    assert flat.tolist() == todo.tolist()
    if n >= 2 * ranks * size:  # the bulk uses full chunks
        assert len(got[0]) == size


def test_run_points_single_process():
    seen, sizes = [], []

    def compute(idx):
        return {"loss": idx.astype(float) * 2}

    def sink(idx, res):
        seen.append((idx.copy(), res["loss"].copy()))

    run_points(World(), np.array([5, 1, 9, 2, 7]), compute, sink, chunk_size=2, progress=sizes.append)
    assert [i.tolist() for i, _ in seen] == [[5, 1], [9, 2], [7]]
    assert np.concatenate([v for _, v in seen]).tolist() == [10, 2, 18, 4, 14]
    assert sum(sizes) == 5


def test_chunk_queue_hands_out_whole_groups_of_k():
    q = ChunkQueue(np.arange(103), 10, n_ranks=3, multiple=4)
    sizes = []
    while q:
        sizes.append(len(q.pop(2 if len(sizes) % 2 else None)))
    assert sum(sizes) == 103
    assert all(s % 4 == 0 for s in sizes[:-1]), sizes  # only the very last chunk may be partial
