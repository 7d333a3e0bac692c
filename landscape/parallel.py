"""Processes: the MPI world (optional), a device and thread count per rank, and the scheduler
that shares grid points out among ranks.

Without an MPI launcher (no ``PMI_*``/``OMPI_*``/``PMIX_*``/``SLURM_*`` task variables with more
than one task) mpi4py is never imported and everything runs in one process. Under
``mpiexec``/``mpirun``/``srun`` the world is ``MPI.COMM_WORLD``.

Scheduling (:func:`run_points`): rank 0 cuts the points still to do into chunks, keeps every
other rank two chunks ahead (one running, one queued, so a worker never waits for rank 0), and
computes chunks itself in between, checking for finished chunks after each of its own. Results
travel as (indices, arrays) messages -- a few numbers per point, never the whole grid -- and rank
0 is the only process that hands them to the writer. A rank that raises prints its error once
and aborts the whole job (``MPI_Abort``), so no rank waits forever.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .errors import LandscapeError

_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS")
_LOCAL_RANK_VARS = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK", "SLURM_LOCALID",
                    "MV2_COMM_WORLD_LOCAL_RANK")
_TAG_WORK, _TAG_RESULT = 11, 12


def _launched_by_mpi() -> bool:
    for var in _LAUNCHER_SIZE_VARS:
        try:
            if int(os.environ.get(var, "1")) > 1:
                return True
        except ValueError:
            pass
    return "PMI_RANK" in os.environ or "PMIX_RANK" in os.environ or "OMPI_COMM_WORLD_RANK" in os.environ


@dataclass
class World:
    """Rank, size and local rank of this process; ``comm`` is None when running alone."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    comm: object | None = None

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    # ---------------------------------------------------------------- collectives
    def barrier(self) -> None:
        if self.comm is not None:
            self.comm.Barrier()

    def bcast(self, obj, root: int = 0):
        return obj if self.comm is None else self.comm.bcast(obj, root=root)

    def bcast_named(self, named: dict[str, torch.Tensor] | None, like: dict[str, torch.Tensor] | None = None,
                    root: int = 0) -> dict[str, torch.Tensor]:
        """Broadcast a named tensor dict bitwise: layout by pickle, payload as one flat buffer."""
        if self.comm is None:
            return named
        layout = None
        if self.rank == root:
            layout = [(k, tuple(v.shape), str(v.dtype).replace("torch.", ""), str(v.device)) for k, v in named.items()]
        layout = self.comm.bcast(layout, root=root)
        out = {}
        for k, shape, dtype, _ in layout:
            dt = getattr(torch, dtype)
            if self.rank == root:
                buf = named[k].detach().to("cpu").contiguous()
            else:
                buf = torch.empty(shape, dtype=dt)
            arr = buf.view(torch.uint8).numpy() if buf.numel() else np.empty(0, np.uint8)
            self.comm.Bcast(arr, root=root)
            dev = like[k].device if like is not None and k in like else "cpu"
            out[k] = named[k] if self.rank == root else buf.to(dev)
        return out

    def collective(self, fn: Callable[[], object]):
        """Run ``fn`` on every rank and agree on failure: if any rank raised, every rank raises.

        The lowest failing rank re-raises its own error (printed once by the CLI); the others
        raise a quiet :class:`AbortedElsewhere`. ``fn`` must not itself use collectives.
        """
        err: BaseException | None = None
        result = None
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - re-raised below on every rank
            err = e
        if self.comm is None:
            if err is not None:
                raise err
            return result
        failed = self.comm.allgather(err is not None)
        if any(failed):
            first = failed.index(True)
            if self.rank == first:
                if isinstance(err, LandscapeError):
                    err.rank_specific = first != 0
                    err.agreed = True
                raise err
            raise AbortedElsewhere(f"rank {first} failed")
        return result

    def abort(self, code: int = 1) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        if self.comm is not None and self.size > 1:
            self.comm.Abort(code)
        os._exit(code)

    def fail(self, code: int) -> None:
        """Called by the CLI after an error was reported: abort the job unless all ranks agreed."""
        # A LandscapeError reaching the CLI on several ranks came through `collective` (agreed);
        # anything else may have left other ranks waiting in a collective: abort them.
        exc = sys.exc_info()[1]
        if self.comm is not None and self.size > 1 and not getattr(exc, "agreed", False):
            self.abort(code)


class AbortedElsewhere(LandscapeError):
    """Raised on the ranks that did not fail when another rank failed during setup."""

    quiet = True
    agreed = True


def _local_rank_from_env() -> int | None:
    for var in _LOCAL_RANK_VARS:
        if var in os.environ:
            try:
                return int(os.environ[var])
            except ValueError:
                pass
    return None


@lru_cache(maxsize=1)
def world() -> World:
    """The process's world (initialises MPI on first call when launched by mpiexec/srun)."""
    if not _launched_by_mpi():
        return World()
    try:
        from mpi4py import MPI
    except ImportError:
        print("landscape: warning: launched under MPI but mpi4py is not installed; every rank runs alone "
              "(pip install 'landscape[mpi]')", file=sys.stderr)
        return World()
    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        return World()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    local_rank = _local_rank_from_env()
    w = World(rank=comm.Get_rank(), size=comm.Get_size(),
              local_rank=node.Get_rank() if local_rank is None else local_rank,
              local_size=node.Get_size(), comm=comm)
    node.Free()
    return w


def configure_threads(w: World, device: torch.device) -> int:
    """On CPU give each rank its share of this node's cores; returns the thread count."""
    if device.type != "cpu" or w.size == 1:
        return torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        cores = os.cpu_count() or 1
    n = max(1, cores // max(1, w.local_size))
    torch.set_num_threads(n)
    return n


def device_for_rank(requested: str, local_rank: int, n_gpus: int | None = None) -> str:
    """``cuda:(local_rank % n_gpus)`` for auto/cuda when GPUs exist, else ``cpu`` (testable without CUDA)."""
    if n_gpus is None:
        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if requested in ("auto", "cuda"):
        if n_gpus > 0:
            return f"cuda:{local_rank % n_gpus}"
        if requested == "cuda":
            raise LandscapeError("--device cuda: no CUDA device is available (use --device cpu or auto)")
        return "cpu"
    return requested


# ---------------------------------------------------------------------------- scheduling
def chunks(todo: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(todo), size):
        yield todo[i : i + size]


def auto_chunk_size(n_todo: int, n_ranks: int, minimum: int = 1, maximum: int = 64) -> int:
    """About 8 chunks per rank: enough for dynamic balance, few enough to keep messages rare."""
    return int(np.clip(int(np.ceil(n_todo / max(1, 8 * n_ranks))), minimum, max(minimum, maximum)))


Compute = Callable[[np.ndarray], dict[str, np.ndarray]]
Sink = Callable[[np.ndarray, dict[str, np.ndarray]], None]


def _report_and_abort(w: World, err: BaseException) -> None:
    prefix = f"[rank {w.rank}] " if w.size > 1 else ""
    if isinstance(err, LandscapeError):
        print(f"landscape: error: {prefix}{err}", file=sys.stderr, flush=True)
        w.abort(err.exit_code)
    print(f"landscape: error: {prefix}{type(err).__name__}: {err}", file=sys.stderr)
    traceback.print_exc(file=sys.stderr)
    w.abort(1)


def run_points(w: World, todo: np.ndarray | None, compute: Compute, sink: Sink | None,
               chunk_size: int = 1, progress: Callable[[int], None] | None = None,
               poll_interval: float = 0.002) -> None:
    """Compute every flat index in ``todo`` (given on rank 0) once, on some rank.

    ``compute(indices) -> {name: values}`` runs on any rank; ``sink(indices, values)`` and
    ``progress(n_done)`` run on rank 0 only. The result does not depend on the number of ranks
    (each point is computed by exactly one rank with identical inputs). Single process: a plain
    loop. Failures on any rank abort the whole job with the error printed once.
    """
    if w.comm is None or w.size == 1:
        for chunk in chunks(np.asarray(todo, dtype=np.int64), chunk_size):
            res = compute(chunk)
            if sink is not None:
                sink(chunk, res)
            if progress is not None:
                progress(len(chunk))
        return
    if w.rank == 0:
        _root_loop(w, np.asarray(todo, dtype=np.int64), compute, sink, chunk_size, progress, poll_interval)
    else:
        _worker_loop(w, compute)
    w.barrier()


def _worker_loop(w: World, compute: Compute) -> None:
    comm = w.comm
    while True:
        chunk = comm.recv(source=0, tag=_TAG_WORK)
        if chunk is None:
            return
        try:
            res = compute(chunk)
        except BaseException as e:  # noqa: BLE001 - any failure ends the job
            _report_and_abort(w, e)
        comm.send((chunk, res), dest=0, tag=_TAG_RESULT)


def _root_loop(w: World, todo: np.ndarray, compute: Compute, sink: Sink | None, chunk_size: int,
               progress: Callable[[int], None] | None, poll_interval: float) -> None:
    from mpi4py import MPI

    comm = w.comm
    queue = list(chunks(todo, chunk_size))
    queue.reverse()  # pop() from the end = first chunk first
    outstanding = dict.fromkeys(range(1, w.size), 0)
    stopped: set[int] = set()
    status = MPI.Status()

    def give(rank: int) -> None:
        if queue:
            comm.send(queue.pop(), dest=rank, tag=_TAG_WORK)
            outstanding[rank] += 1
        elif rank not in stopped:
            comm.send(None, dest=rank, tag=_TAG_WORK)
            stopped.add(rank)

    def accept(chunk: np.ndarray, res: dict) -> None:
        if sink is not None:
            sink(chunk, res)
        if progress is not None:
            progress(len(chunk))

    def drain() -> None:
        while comm.Iprobe(source=MPI.ANY_SOURCE, tag=_TAG_RESULT, status=status):
            src = status.Get_source()
            chunk, res = comm.recv(source=src, tag=_TAG_RESULT)
            outstanding[src] -= 1
            accept(chunk, res)
            give(src)

    try:
        for _ in range(2):  # two chunks ahead: one running, one queued
            for r in range(1, w.size):
                give(r)
        while queue or any(outstanding.values()):
            drain()
            if queue:
                chunk = queue.pop()
                accept(chunk, compute(chunk))
            elif any(outstanding.values()):
                time.sleep(poll_interval)  # do not spin: the workers need the cores
        for r in range(1, w.size):
            give(r)  # stop any rank not stopped yet
    except BaseException as e:  # noqa: BLE001
        _report_and_abort(w, e)
