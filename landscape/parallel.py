"""Processes: the MPI world (optional), a device and thread count per rank, and the scheduler
that shares grid points out among ranks.

Without an MPI launcher (no ``PMI_*``/``OMPI_*``/``PMIX_*``/``SLURM_*`` task variables with more
than one task) mpi4py is never imported and everything runs in one process. Under
``mpiexec``/``mpirun``/``srun`` the world is ``MPI.COMM_WORLD``.

Scheduling (:func:`run_points`): rank 0 cuts the points still to do into chunks, keeps every
other rank three chunks ahead (one running, two queued, so a worker never waits for rank 0), and
computes half-size chunks itself in between, checking for finished chunks after each of its own. Results
travel as (indices, arrays) messages -- a few numbers per point, never the whole grid -- and rank
0 is the only process that hands them to the writer. A rank that raises prints its error once
and aborts the whole job (``MPI_Abort``), so no rank waits forever.

Waiting never spins: MPICH's blocking receives and barriers busy-poll a core at 100 %, which on a
CPU node takes it from the ranks that compute. Every wait here (a worker's next chunk, the final
barrier, the agreement after a setup step) polls with ``Iprobe``/``Test`` and sleeps in between,
backing off from 50 µs to a few ms.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import LandscapeError

T = TypeVar("T")
#: seconds a rank waits between printing its error and MPI_Abort (see :meth:`World.abort`)
ABORT_GRACE_S = 0.3

# SLURM_STEP_NUM_TASKS, not SLURM_NTASKS: the latter is also set for a plain ``python`` line in an sbatch script
_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE",
                       "SLURM_STEP_NUM_TASKS")
_LOCAL_RANK_VARS = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK", "SLURM_LOCALID",
                    "MV2_COMM_WORLD_LOCAL_RANK")
_TAG_WORK, _TAG_RESULT = 11, 12
_AHEAD = 3  # chunks handed to each worker before it asks: one running, two queued


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
    #: cores this rank may use for intra-op threads (None: decide from the affinity mask and local_size)
    cpu_share: int | None = None

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    # ---------------------------------------------------------------- collectives
    def barrier(self) -> None:
        """A barrier that sleeps while it waits (MPICH's ``Barrier`` busy-polls a core)."""
        if self.comm is not None:
            _wait(self.comm.Ibarrier())

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
            # reshape(-1): a 0-d tensor cannot be viewed as bytes
            arr = buf.reshape(-1).view(torch.uint8).numpy() if buf.numel() else np.empty(0, np.uint8)
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
        self.barrier()  # ranks that finished early sleep here instead of spinning in allgather
        failed = self.comm.allgather(err is not None)
        if any(failed):
            first = failed.index(True)
            if self.rank == first:
                if isinstance(err, LandscapeError):
                    err.rank_specific = first != 0
                    err.agreed = True
                    err.on_every_rank = all(failed)  # the same input error everywhere: no rank to name
                raise err
            raise AbortedElsewhere(f"rank {first} failed")
        return result

    def abort(self, code: int = 1) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        if self.comm is not None and self.size > 1:
            # The launcher forwards each rank's output asynchronously and MPI_Abort tears it down at once: give
            # it a moment to pass on the line just written (under load, a worker's one-line error was lost).
            time.sleep(ABORT_GRACE_S)
            self.comm.Abort(code)
        os._exit(code)

    def fail(self, code: int) -> None:
        """Called by the CLI after an error was reported: abort the job unless all ranks agreed."""
        # A LandscapeError reaching the CLI on several ranks came through `collective` (agreed);
        # anything else may have left other ranks waiting in a collective: abort them.
        exc = sys.exc_info()[1]
        if self.comm is not None and self.size > 1 and not getattr(exc, "agreed", False):
            self.abort(code)

    def allreduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of ``t`` over all ranks, on every rank (``t`` itself when running alone).

        Summed in float64 (a contiguous CPU copy, ``comm.Allreduce``), returned on ``t``'s device and
        in its dtype. Every rank must call it, with a tensor of the same shape.
        """
        if self.comm is None or self.size == 1:
            return t
        from mpi4py import MPI

        buf = t.detach().to(device="cpu", dtype=torch.float64).reshape(-1).contiguous().numpy()
        out = np.empty_like(buf)
        self.comm.Allreduce(buf, out, op=MPI.SUM)
        return torch.from_numpy(out).reshape(t.shape).to(device=t.device, dtype=t.dtype)


class AbortedElsewhere(LandscapeError):
    """Raised on the ranks that did not fail when another rank failed during setup."""

    quiet = True
    agreed = True


def _wait(request, first_sleep: float = 5e-5, max_sleep: float = 0.005) -> None:
    """Complete an MPI request without busy-polling: ``Test``, sleep, back off."""
    pause = first_sleep
    while not request.Test():
        time.sleep(pause)
        pause = min(max_sleep, pause * 2)


def _wait_message(comm, source: int, tag: int, first_sleep: float = 5e-5, max_sleep: float = 0.005) -> None:
    """Return once a message from ``source`` with ``tag`` can be received, sleeping while none has arrived."""
    pause = first_sleep
    while not comm.Iprobe(source=source, tag=tag):
        time.sleep(pause)
        pause = min(max_sleep, pause * 2)


def _local_rank_from_env() -> int | None:
    for var in _LOCAL_RANK_VARS:
        if var in os.environ:
            try:
                return int(os.environ[var])
            except ValueError:
                pass
    return None


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return set(range(os.cpu_count() or 1))


def cpu_share(own: set[int], node_sets: list[set[int]]) -> int:
    """Cores for one rank, given its affinity mask and those of all ranks on its node.

    Ranks pinned to disjoint core sets (``--bind-to core``, ``srun --cpu-bind``) keep their own
    set; ranks that share cores (no binding, the MPICH default) split the union evenly.
    """
    if not node_sets:
        return max(1, len(own))
    union: set[int] = set().union(*node_sets)
    if sum(len(c) for c in node_sets) == len(union):  # disjoint
        return max(1, len(own))
    return max(1, len(union) // len(node_sets))


@lru_cache(maxsize=1)
def world() -> World:
    """The process's world (initialises MPI on first call when launched by mpiexec/srun)."""
    if not _launched_by_mpi():
        return World()
    try:
        from mpi4py import MPI
    except ImportError:
        print("landscape: warning: launched under MPI but mpi4py is not installed; every rank runs alone "
              "(pip install mpi4py)", file=sys.stderr)
        return World()
    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        steps = os.environ.get("SLURM_STEP_NUM_TASKS", "1")
        if steps.isdigit() and int(steps) > 1 and "PMI_SIZE" not in os.environ and "PMIX_SIZE" not in os.environ:
            print(f"landscape: warning: srun started {steps} tasks but MPI sees only this one; every task would "
                  "compute the whole grid (use srun --mpi=pmix or --mpi=pmi2)", file=sys.stderr)
        return World()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    local_rank = _local_rank_from_env()
    own = _affinity()
    share = cpu_share(own, node.allgather(own))
    w = World(rank=comm.Get_rank(), size=comm.Get_size(),
              local_rank=node.Get_rank() if local_rank is None else local_rank,
              local_size=node.Get_size(), comm=comm, cpu_share=share)
    node.Free()
    return w


def configure_threads(w: World, device: torch.device) -> int:
    """Give each rank its share of this node's cores for intra-op threads; returns the thread count.

    A plain process keeps torch's default; ``mpiexec -n 1`` gets every core of its affinity mask.
    Under MPI: ``LANDSCAPE_NUM_THREADS`` or ``OMP_NUM_THREADS`` when the user set one, else
    :attr:`World.cpu_share` (cores // ranks on the node, or the rank's own cores when pinned).
    On a GPU the CPU only launches kernels, but capping still avoids N ranks × all cores threads.
    """
    user = os.environ.get("LANDSCAPE_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    if w.size == 1 and not (_launched_by_mpi() and not user):
        return torch.get_num_threads()
    if user and user.isdigit() and int(user) > 0:
        n = int(user)
    elif w.size == 1:  # `mpiexec -n 1`: Intel OpenMP reads MPI_LOCALNRANKS and would leave us one thread
        n = len(_affinity())
    elif w.cpu_share is not None:
        n = w.cpu_share
    else:
        n = max(1, len(_affinity()) // max(1, w.local_size))
    os.environ["OMP_NUM_THREADS"] = str(n)  # for anything started later (subprocesses, lazily loaded libs)
    if torch.get_num_threads() != n:
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
            raise LandscapeError("`device` cuda: no CUDA device is available (use `device` cpu or auto)")
        return "cpu"
    return requested


# ---------------------------------------------------------------------------- scheduling
def chunks(todo: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(todo), size):
        yield todo[i : i + size]


def auto_chunk_size(n_todo: int, n_ranks: int, minimum: int = 1, maximum: int = 64) -> int:
    """About 8 chunks per rank: enough for dynamic balance, few enough to keep messages rare."""
    return int(np.clip(int(np.ceil(n_todo / max(1, 8 * n_ranks))), minimum, max(minimum, maximum)))


class ChunkQueue:
    """Hands out ``todo`` in order, ``size`` points at a time, smaller near the end (guided tail).

    Once fewer than ``2 * n_ranks * size`` points remain, a chunk is ``ceil(remaining / (2 *
    n_ranks))`` points, so the ranks finish within a fraction of a chunk of each other instead of
    one rank computing a whole last chunk while the others wait. Every chunk but the last holds a
    multiple of ``multiple`` points (the batched evaluator's K: no group padded mid-run).
    """

    def __init__(self, todo: np.ndarray, size: int, n_ranks: int = 1, multiple: int = 1):
        self.todo = np.asarray(todo, dtype=np.int64)
        self.size, self.n_ranks, self.pos = max(1, int(size)), max(1, int(n_ranks)), 0
        self.multiple = max(1, int(multiple))

    def __len__(self) -> int:
        return len(self.todo) - self.pos

    def __bool__(self) -> bool:
        return self.pos < len(self.todo)

    def pop(self, size: int | None = None) -> np.ndarray:
        left = len(self)
        n = min(size or self.size, max(1, -(-left // (2 * self.n_ranks))))
        n = -(-n // self.multiple) * self.multiple  # whole groups of the evaluator's K points
        chunk = self.todo[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk


Compute = Callable[[np.ndarray], dict[str, np.ndarray]]
Sink = Callable[[np.ndarray, dict[str, np.ndarray]], None]


#: set by the CLI: one line for an error that is not a LandscapeError but needs no traceback (out of memory)
describe_failure: Callable[[BaseException], str | None] | None = None
#: set by the CLI: a library message as the user reads it (parameter names turned into the command's flags)
render_message: Callable[[str], str] = str


def _report_and_abort(w: World, err: BaseException) -> None:
    prefix = f"[rank {w.rank}] " if w.size > 1 else ""
    line = (render_message(str(err)) if isinstance(err, LandscapeError)
            else describe_failure(err) if describe_failure else None)
    if line:
        print(f"landscape: error: {prefix}{line}", file=sys.stderr, flush=True)
        w.abort(getattr(err, "exit_code", 2))
    print(f"landscape: error: {prefix}{type(err).__name__}: {err}", file=sys.stderr)
    traceback.print_exc(file=sys.stderr)
    w.abort(1)


def all_or_abort(w: World, fn: Callable[..., T], *args) -> T:
    """``fn(*args)`` where every step is collective: under MPI a failure on one rank aborts the whole job
    (one line from the failing rank), so that no other rank waits forever for it in an allreduce.

    A :class:`LandscapeError` marked ``agreed`` (decided from values every rank holds alike, so every
    rank raises it) is raised as usual: the CLI prints it once and every rank exits with its status.
    """
    if w.size == 1:
        return fn(*args)
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - unless agreed, the other ranks would wait for this one
        if isinstance(e, LandscapeError) and getattr(e, "agreed", False):
            raise
        _report_and_abort(w, e)  # prints the error (this rank's) and aborts the whole job
        raise  # pragma: no cover - _report_and_abort does not return


def run_points(w: World, todo: np.ndarray | None, compute: Compute, sink: Sink | None,
               chunk_size: int = 1, progress: Callable[[int], None] | None = None,
               poll_interval: float = 0.002, multiple: int = 1) -> None:
    """Compute every flat index in ``todo`` (given on rank 0) once, on some rank.

    ``compute(indices) -> {name: values}`` runs on any rank; ``sink(indices, values)`` and
    ``progress(n_done)`` run on rank 0 only. The result does not depend on the number of ranks
    (each point is computed by exactly one rank with identical inputs). Single process: a plain
    loop over chunks of ``chunk_size``. Under MPI, chunks hold at most ``chunk_size`` points (fewer
    near the end, see :class:`ChunkQueue`). Failures on any rank abort the whole job with the error
    printed once.
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
        _root_loop(w, ChunkQueue(todo, chunk_size, w.size, multiple), compute, sink, progress, poll_interval)
    else:
        _worker_loop(w, compute)
    w.barrier()


def _complete(pending: list) -> list:
    """The requests of ``pending`` still in flight (testing them also drives MPI's progress)."""
    return [r for r in pending if not r.Test()]


def _worker_loop(w: World, compute: Compute) -> None:
    comm = w.comm
    pending: list = []  # non-blocking sends: a blocking send can wait until rank 0 polls (Open MPI)
    while True:
        pending = _complete(pending)
        _wait_message(comm, 0, _TAG_WORK)  # usually there already: rank 0 keeps us chunks ahead
        chunk = comm.recv(source=0, tag=_TAG_WORK)
        if chunk is None:
            break
        try:
            res = compute(chunk)
        except BaseException as e:  # noqa: BLE001 - any failure ends the job
            _report_and_abort(w, e)
        pending.append(comm.isend((chunk, res), dest=0, tag=_TAG_RESULT))
    for r in pending:
        _wait(r)


def _root_loop(w: World, queue: ChunkQueue, compute: Compute, sink: Sink | None,
               progress: Callable[[int], None] | None, poll_interval: float) -> None:
    from mpi4py import MPI

    comm = w.comm
    outstanding = dict.fromkeys(range(1, w.size), 0)
    stopped: set[int] = set()
    status = MPI.Status()

    pending: list = []  # isend: rank 0 must never wait for a busy worker to take its next chunk

    def give(rank: int) -> None:
        if queue:
            pending.append(comm.isend(queue.pop(), dest=rank, tag=_TAG_WORK))
            outstanding[rank] += 1
        elif rank not in stopped:
            pending.append(comm.isend(None, dest=rank, tag=_TAG_WORK))
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
        for _ in range(_AHEAD):
            for r in range(1, w.size):
                give(r)
        own = max(1, -(-queue.size // 2))  # rank 0 works in half chunks, so it answers workers twice as often
        while queue or any(outstanding.values()):
            drain()
            pending[:] = _complete(pending)
            if queue:
                chunk = queue.pop(own)
                accept(chunk, compute(chunk))
            elif any(outstanding.values()):
                time.sleep(poll_interval)  # do not spin: the workers need the cores
        for r in range(1, w.size):
            give(r)  # stop any rank not stopped yet
        for req in pending:
            _wait(req)
    except KeyboardInterrupt:
        raise  # the caller saves what is done, then aborts the other ranks
    except BaseException as e:  # noqa: BLE001
        _report_and_abort(w, e)


def run_with_progress(w: World, todo: np.ndarray | None, compute: Compute, sink: Sink | None, *, chunk_size: int,
                      total: int, initial: int, label: str, unit: str = "pt", progress: bool = True,
                      multiple: int = 1) -> bool:
    """:func:`run_points` with one progress bar (rank 0) and a clean stop on Ctrl-C or SIGTERM.

    SIGTERM on rank 0 is turned into ``KeyboardInterrupt`` for the duration of the run, so both end
    the same way: the scheduler stops and this returns True; the caller then flushes what it has and
    tells the user how to resume. Returns False when every point was computed.
    """
    bar = None
    if w.is_root and progress:
        bar = tqdm(total=total, initial=initial, unit=unit, desc=label, dynamic_ncols=True, smoothing=0.1,
                   file=sys.stderr)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    old = old_int = None
    try:
        if w.is_root:
            old = signal.signal(signal.SIGTERM, on_sigterm)
        elif w.size > 1:
            # Ctrl-C reaches every rank; rank 0 alone stops the run (it flushes, then ends the job with exit 130),
            # so the workers go on quietly until then instead of each printing a traceback
            old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: leave signals alone
        old = old_int = None
    try:
        run_points(w, todo, compute, sink, chunk_size=chunk_size, progress=bar.update if bar is not None else None,
                   multiple=multiple)
        return False
    except KeyboardInterrupt:
        return True
    finally:
        if bar is not None:
            bar.close()
        if old is not None:
            signal.signal(signal.SIGTERM, old)
        if old_int is not None:
            signal.signal(signal.SIGINT, old_int)
