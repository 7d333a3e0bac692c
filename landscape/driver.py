"""The one run driver of surfaces and paths: root setup → broadcast → store → progress → interrupt/abort.

A run computes one value per point of a fixed set (grid points of a surface, α values of a path) into a
resumable result file. Every rank calls the same steps:

1. :func:`open_output` (rank 0, inside ``w.collective`` so that a failure aborts every rank): lock ``out``
   (an existing file must be a readable result of ours, or one ``overwrite`` may replace), let the caller
   resume or create the file, and open its :class:`~landscape.store.GridStore`;
2. the caller broadcasts what every rank needs (directions, endpoints) with ``w.bcast_named``;
3. :func:`sweep`: the points still to do go through the MPI scheduler in chunks with one progress bar;
   rank 0 stores them as they come back; Ctrl-C / SIGTERM stops cleanly with a one-line message that says
   how many points are saved and how to resume.

:func:`run_config` is the part of a result file's ``config`` attribute that describes the problem (model,
data, loss, samples), shared by every kind of run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .parallel import World, auto_chunk_size, run_with_progress
from .problem import Problem
from .store import GridStore, WriterLock, check_readable, refuse_foreign

#: problem.info keys copied as they are into a run's config when present
_INFO_KEYS = ("target_key", "output_key", "shift_labels", "strip_prefix")


def run_config(problem: Problem, fields: dict) -> dict:
    """``fields`` (what shapes the run's numbers) followed by the problem's description: model, checkpoint,
    data, loss, samples, batch size, sample seed, device and the batch/output adapters in use."""
    info = problem.info
    cfg = dict(fields)
    cfg.update(model=info.get("model"), model_args=info.get("model_args"), checkpoint=info.get("checkpoint"),
               data=info.get("train_data"), test_data=info.get("test_data"), loss=problem.loss,
               samples=info.get("samples"), batch_size=info.get("batch_size"), sample_seed=info.get("seed"),
               n_samples=info.get("train_samples"), device=str(problem.device))
    cfg.update({k: info[k] for k in _INFO_KEYS if k in info})
    return cfg


class Output:
    """Rank 0's hold on the result file of a run: the writer lock, taken before the file is read or replaced
    and held until the store closes (another process cannot write the same file meanwhile)."""

    def __init__(self, path: str, overwrite: bool):
        self.path = path
        self.overwrite = overwrite
        self.lock: WriterLock | None = None
        if os.path.exists(path):
            if overwrite:
                refuse_foreign(path)
            else:
                check_readable(path)
            self.lock = WriterLock(path)  # refused while another process writes it

    @property
    def resuming(self) -> bool:
        """An existing file is there to resume (not to replace)."""
        return self.lock is not None and not self.overwrite

    def created(self, new_lock: WriterLock) -> None:
        """The file was (re)created under ``new_lock`` (taken before it had the name): drop the old one's."""
        if self.lock is not None:
            self.lock.release()
        self.lock = new_lock

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def open_output(path: str, overwrite: bool, setup: Callable[[Output], Any]) -> Any:
    """Root only: take ``path``'s lock and return ``setup(output)`` (which resumes or creates the file and
    opens its store with ``output.lock``); the lock is released if anything fails on the way."""
    output = Output(path, overwrite)
    try:
        return setup(output)
    except BaseException:
        output.release()
        raise


@dataclass
class Sweep:
    """What :func:`sweep` did: points computed now, points done in the file (rank 0; ``total`` elsewhere), the
    ``finish`` callback's value (rank 0) and the wall-clock time the points and the final write ended."""

    computed: int
    done: int
    finished: Any
    points_end: float
    end: float


def sweep(w: World, store: GridStore | None, compute: Callable[[np.ndarray], dict], *, out: str, total: int,
          noun: str, chunk_size: int | None = None, max_chunk: int = 64, multiple: int = 1, unit: str = "pt",
          progress: bool = True, quiet_when_done: bool = False,
          finish: Callable[[GridStore], Any] | None = None) -> Sweep:
    """Compute the points ``store`` (of the result file ``out``) still lacks on every rank, store them on rank 0,
    then ``finish(store)`` (rank 0, only when nothing was interrupted) and close the store.

    Chunks hold ``chunk_size`` points (default: about 8 per rank, at most ``max_chunk``), rounded up to whole
    groups of ``multiple`` points so that a point's value never depends on its group's size. On Ctrl-C or
    SIGTERM the finished points are flushed and ``KeyboardInterrupt`` carries the one line to print.
    """
    todo = store.todo() if w.is_root else None
    n_todo = w.bcast(len(todo) if w.is_root else 0)
    chunk = chunk_size or auto_chunk_size(n_todo, w.size, maximum=max(max_chunk, multiple))
    chunk = -(-chunk // multiple) * multiple
    finished = None
    interrupted = False
    try:
        interrupted = run_with_progress(w, todo, compute, store.add if w.is_root else None, chunk_size=chunk,
                                        total=total, initial=total - n_todo, label=os.path.basename(out), unit=unit,
                                        progress=progress and not (quiet_when_done and n_todo == 0),
                                        multiple=multiple)
    finally:
        points_end = time.perf_counter()
        if w.is_root:
            try:
                if finish is not None and not interrupted:
                    store.flush()
                    finished = finish(store)
            finally:
                store.close()
    if interrupted:  # the CLI prints this one line on rank 0 and takes the other ranks down (exit 130)
        raise KeyboardInterrupt(f"interrupted; {store.n_done if w.is_root else '?'}/{total} {noun} are saved in "
                                f"{out}; run the same command again to compute the rest")
    return Sweep(n_todo, store.n_done if w.is_root else total, finished, points_end, time.perf_counter())
