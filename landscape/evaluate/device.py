"""Where and how an evaluation runs: precision, autocast, float64 copies, device batches, compilation, memory.

``precision`` ``fp32`` (default: the model's own dtype) | ``fp64`` (the whole evaluation on a float64 copy of
the model and inputs, :func:`as_float64`) | ``bf16`` | ``fp16`` (the forward pass under ``torch.autocast``;
on a CPU bf16 works but is usually slower than fp32). :class:`_MaybeCompiled` wraps a forward in
``torch.compile`` and falls back to eager with a notice if compilation fails. :func:`release_heap` gives the
C heap's freed pages back after a per-point call.

Example:
    >>> model_dtype(torch.nn.Linear(2, 2).double())
    torch.float64
    >>> autocast(torch.device("cpu"), "fp32").__class__.__name__
    'nullcontext'
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor, nn

from .. import parallel
from ..autotune import free_memory
from ..directions._base import Directions
from ..errors import LandscapeError
from ..problem import Batch, HostBatches, Problem

__all__ = ["PRECISIONS", "as_float64", "autocast", "device_batches", "for_precision", "free_memory", "has_conv",
           "model_dtype", "notice", "release_heap", "sync"]

#: ``fp32``: the model as it is (float32 models run in float32, float64 models in float64); ``fp64``: the
#: whole evaluation in float64 (a float64 copy of the model and inputs); ``bf16``/``fp16``: autocast
PRECISIONS = {"fp32": None, "fp64": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def notice(msg: str) -> None:
    """One line on stderr (not a warning: nothing is wrong with the results); backticked parameter names read
    as the command's flags under the CLI (:data:`landscape.parallel.render_message`)."""
    print(f"landscape: {parallel.render_message(msg)}", file=sys.stderr, flush=True)


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` for ``precision`` ``bf16``/``fp16``, else a null context; checks ``precision``."""
    if precision not in PRECISIONS:
        raise LandscapeError(f"`precision`: {precision!r} is not one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating parameter or buffer (float32 if it has none)."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def as_float64(problem: Problem) -> Problem:
    """The problem in float64: a float64 copy of its model and inputs (itself when it is float64 already).

    What ``precision="fp64"`` evaluates: every product and activation in float64, for values exact to
    ~1e-15 relative near a minimum. The copy leaves the caller's model untouched.
    """
    floats = [t for t in (*problem.model.parameters(), *problem.model.buffers()) if t.is_floating_point()]
    inputs = [x for bs in problem.splits.values() for x, _ in bs if x.is_floating_point()]
    if all(t.dtype == torch.float64 for t in floats + inputs):
        return problem
    model = copy.deepcopy(problem.model).double().eval()

    def f64(t: Tensor) -> Tensor:
        return t.double() if t.is_floating_point() else t

    splits = {s: [(f64(x), f64(y)) for x, y in bs] for s, bs in problem.splits.items()}
    return replace(problem, model=model, splits=splits)


def _float64_directions(directions: Directions) -> Directions:
    def f64(named: dict) -> dict:
        return {k: v.double() if v.is_floating_point() else v for k, v in named.items()}

    return Directions(f64(directions.center), [f64(v) for v in directions.vectors], directions.dir_type,
                      directions.meta, directions.extras)


def for_precision(problem: Problem, directions: Directions, precision: str) -> tuple[Problem, Directions]:
    """``precision="fp64"``: the problem and directions in float64; otherwise themselves."""
    if precision != "fp64":
        return problem, directions
    return as_float64(problem), _float64_directions(directions)


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def device_batches(problem: Problem, splits: list[str], channels_last: bool = False) -> dict[str, list[Batch]]:
    """The problem's batches on its device (moved once, pinned and non-blocking from the host).

    Streamed data (:class:`~landscape.problem.HostBatches`) stays on the host:
    :func:`~landscape.evaluate.groups.on_device` moves each group as it is evaluated.
    """
    dev = problem.device
    pin = dev.type == "cuda"
    out: dict[str, list[Batch]] = {}
    for s in splits:
        bs = []
        if isinstance(problem.splits[s], HostBatches):
            out[s] = list(problem.splits[s].host)
            continue
        for x, y in problem.splits[s]:
            if x.device != dev:
                x, y = (x.pin_memory(), y.pin_memory()) if pin else (x, y)
                x, y = x.to(dev, non_blocking=pin), y.to(dev, non_blocking=pin)
            if channels_last and isinstance(x, Tensor) and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            bs.append((x, y))
        out[s] = bs
    return out


class _MaybeCompiled:
    """``torch.compile(fn)``, falling back to ``fn`` (once, with a notice) if compiling fails."""

    def __init__(self, fn: Callable, enabled: bool, what: str):
        self.eager = fn
        self.fn = fn
        self.what = what
        if enabled:
            try:
                self.fn = torch.compile(fn, dynamic=False)
            except Exception as e:  # noqa: BLE001 - any failure means: run eagerly
                self._fail(e)

    def _fail(self, e: Exception) -> None:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        notice(f"`compile`: torch.compile failed for the {self.what} ({first[:120]}); running eagerly")
        self.fn = self.eager

    def __call__(self, *args):
        if self.fn is self.eager:
            return self.fn(*args)
        try:
            return self.fn(*args)
        except Exception as e:  # noqa: BLE001
            self._fail(e)
            return self.fn(*args)

_LIBC: object | None = None


def release_heap(device: torch.device) -> None:
    """Give the C heap's free pages back to the system after a per-point call (glibc ``malloc_trim``; a no-op
    elsewhere and on a GPU).

    Per point, the forward pass allocates and frees its activations; with OpenMP threads some of them come
    from the threads' own malloc arenas, whose freed chunks glibc keeps (and, once large chunks have been
    freed, it raises its mmap threshold so that later large tensors land in the arenas too). The per-point
    path's resident memory then crept up with the points evaluated and varied from run to run, while the
    batched path, whose buffers are reused, stayed flat. Trimming once per call (a chunk of points, not per
    point) returns those pages; the next call faults them in again, once per chunk.
    """
    global _LIBC
    if device.type != "cpu" or not sys.platform.startswith("linux"):
        return
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim  # noqa: B018 - glibc only (musl has none)
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
