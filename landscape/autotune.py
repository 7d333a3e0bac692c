"""Start-up choices bounded by memory and by what they can save: the evaluation batch size and the auto-K
probe's budget, with the memory measurements they rest on (:func:`free_memory`, :func:`module_output_bytes`).

Below :mod:`landscape.problem` (which asks it for the batch size) and :mod:`landscape.evaluate` (which asks it
for the probe's budget): it imports neither, and takes the per-point evaluator as the object it is given.

**Evaluation batch** (:func:`auto_batch_size`, used when ``batch_size`` is None). Evaluation has
no use for a training-style batch of 512: a forward pass over more rows at once costs less per row
(on the demo MLP one forward over all 1,797 digits takes 0.57–0.69 of the same forward in batches of
512), so the batch is as large as the activations allow,

.. math::  B = \\lceil n / \\lceil n\\,a / M \\rceil \\rceil ,

with n the samples, a the activation bytes per sample (all modules' outputs, measured on two rows)
and M = ``AUTO_BATCH_BYTES`` (a fixed number per device type, not the free memory: the choice must be
the same on every rank and in every run, as a surface's numbers depend on it at float rounding). All
of a small data set is one batch; a larger one is split into equal batches. Commands that share the
batches among MPI ranks (``hessian``, ``sharpness``) ask for at least one batch per rank (``shards``).

**Auto-K probe** (:func:`probe_budget`). Timing K = 1, 4, 16, 64 costs a few forward passes per K, and
on a compute-bound model (a conv net on a CPU) it then picks K = 1. A batched group of K points can
only save the per-point fixed cost: the forward passes' launch overhead (measured as the time of a
forward over 2 rows, times the forwards per point) and the weight write (measured). When that is below
``PROBE_MIN_GAIN`` (2 %) of a point's time the probe is skipped; otherwise it may spend at most
``PROBE_SHARE`` (5 %) of the run's estimated time (points × time per point) and ``PROBE_BUDGET_S``.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor, nn

#: activations of one evaluation batch (all module outputs) may take this many bytes, per device type
AUTO_BATCH_BYTES = {"cpu": 128 << 20, "cuda": 1 << 30}
#: the batch when the model cannot be run to measure its activations (the error is reported after)
FALLBACK_BATCH = 512
#: the probe is skipped when a batched group could save at most this share of a point's time
PROBE_MIN_GAIN = 0.02
#: ... and it may spend at most this share of the run's estimated time
PROBE_SHARE = 0.05
#: ... and never more than this many seconds
PROBE_BUDGET_S = 3.0


def auto_batch_size(model: nn.Module, x: Tensor, n: int, device: torch.device, shards: int = 1) -> int:
    """The evaluation batch for ``n`` samples like ``x`` (see the module docstring): all of them when their
    activations fit in ``AUTO_BATCH_BYTES``, else equal batches that fit; at least ``shards`` batches."""
    try:
        per_sample = max(1, module_output_bytes(model, x[:2].to(device)))
    except Exception:  # noqa: BLE001 - a model that cannot run this input: Problem.check_output says why
        return max(1, min(n, FALLBACK_BATCH))
    budget = AUTO_BATCH_BYTES.get(device.type, AUTO_BATCH_BYTES["cpu"])
    batches = max(1, math.ceil(n * per_sample / budget), min(max(1, shards), n))
    return max(1, math.ceil(n / batches))


def free_memory(device: torch.device) -> int:
    """Bytes free for new tensors: ``cuda.mem_get_info`` on a GPU, ``MemAvailable`` on Linux, else 2 GiB."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 << 30


def module_output_bytes(model: nn.Module, x: Tensor) -> int:
    """Bytes of all leaf modules' outputs per sample of ``x`` (a rough peak activation memory)."""
    sizes: list[int] = []

    def hook(_m, _i, out):
        if isinstance(out, Tensor):
            sizes.append(out.numel() * out.element_size())

    leaves = [m for m in model.modules() if not list(m.children())] or [model]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return int(sum(sizes) / max(1, len(x)))


def _seconds(run, reps: int = 1) -> float:
    """Fastest of ``reps`` timed runs (a run ends with a host read, so the device is synchronised)."""
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best


def probe_budget(per_point, n_points: int | None, probe: list, budget_s: float = PROBE_BUDGET_S
                 ) -> tuple[float, float, float]:
    """``(seconds the probe may spend, seconds of one per-point call on the probe's rows, overhead share)``.

    ``per_point``: the :class:`~landscape.evaluate.PointEvaluator` (its ``accumulate``, ``move_to``,
    ``restore``, ``fold``, ``groups`` and ``directions``); ``probe``: its prepared groups of the probe's rows;
    ``n_points``: points this run (or this rank) evaluates (None: unknown, no share cap). The budget is 0 when
    the probe cannot pay for itself. Costs one forward pass over the probe's rows and three over 2 rows.
    """
    tiny = [([x[:2] if per_point.fold is None else x[:, :2] for x in xs][:1], y[:2],
             None if oh is None else oh[:2]) for xs, y, oh in probe[:1]]
    nd = per_point.directions.ndim
    try:
        per_point.move_to([0.0] * nd)

        def run(groups):
            return lambda: per_point.accumulate(groups)[0].cpu()

        run(tiny)()  # warm-up (allocations, first-call set-up)
        t_tiny = _seconds(run(tiny), 2)
        t_probe = _seconds(run(probe))
        t_move = _seconds(lambda: per_point.move_to([0.1] * nd))
    finally:
        per_point.restore()
    rows_probe = sum(len(y) for _, y, _ in probe)
    forwards = sum(len(xs) for g in per_point.groups.values() for xs, _, _ in g)
    rows = sum(len(y) for g in per_point.groups.values() for _, y, _ in g)
    per_row = max(0.0, t_probe - t_tiny) / max(1, rows_probe)
    overhead = forwards * t_tiny + t_move
    t_point = overhead + per_row * rows
    share = overhead / max(t_point, 1e-12)
    if share < PROBE_MIN_GAIN:
        return 0.0, t_probe, share
    budget = budget_s if n_points is None else min(budget_s, PROBE_SHARE * n_points * t_point)
    return budget, t_probe, share
