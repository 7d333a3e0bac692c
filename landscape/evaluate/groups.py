"""Batches grouped for one loss evaluation, and the loss and correct count accumulated over them.

A group joins consecutive batches whose outputs together fit in ``GROUP_BYTES``: the loss runs once per
group, on the concatenated outputs. The built-in cross-entropy on class-index targets runs
:mod:`landscape.kernels`' stable per-example form in every path (exact relative to each example's loss,
also at a trained minimum), summed in float64; the correct count is int64. Both stay on the device until
:func:`split_results` reads them, once per call.

Example:
    >>> from landscape.problem import make_problem
    >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=64, batch_size=32, device="cpu")
    >>> len(make_groups(p, p.batches)), [len(y) for _, y, _ in make_groups(p, p.batches, max_bytes=1)]
    (1, [32, 32])
    >>> loss, acc = evaluate_batches(p, p.batches)
    >>> loss > 0 and 0 <= acc <= 1
    True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from .. import kernels as K
from ..problem import Batch, Problem
from .device import autocast

#: a group's concatenated outputs may take this many bytes (the loss runs once per group, not per batch)
GROUP_BYTES = 32 << 20

#: batches whose outputs are concatenated for one loss evaluation: (inputs, targets, one-hot targets or None)
Group = tuple[list[Tensor], Tensor, "Tensor | None"]


def loss_and_correct_of(problem: Problem) -> Callable[[Tensor, Tensor, Tensor | None], tuple[Tensor, Tensor]]:
    """``(output, target, onehot) -> (summed loss, correct count)`` for the problem's loss.

    The built-in cross-entropy on class-index targets runs :func:`landscape.kernels.cross_entropy_and_correct`
    (stable where the loss is small, summed in float64) in every path, so that the paths round alike.
    """
    if problem.classification:
        def generic(out: Tensor, y: Tensor, onehot: Tensor | None):
            if onehot is not None and out.shape == onehot.shape:  # class-index targets, checked in make_groups
                return K.cross_entropy_and_correct(out, y)
            return problem.loss_sum(out, y), problem.correct(out, y)

        return generic
    return lambda out, y, _: (problem.loss_sum(out, y), torch.zeros((), dtype=torch.int64, device=out.device))


def make_groups(problem: Problem, batches: list[Batch], model: nn.Module | None = None,
                max_bytes: int = GROUP_BYTES) -> list[Group]:
    """Consecutive batches whose outputs together fit in ``max_bytes``, with their targets concatenated.

    For the built-in cross-entropy with class-index targets the one-hot targets are precomputed
    (the fast loss); otherwise the problem's ``loss_sum``/``correct`` run on the concatenation.
    """
    if not batches:
        return []
    model = problem.model if model is None else model
    x0 = batches[0][0]
    with torch.inference_mode():
        out0 = model(x0[:1].to(problem.device))
    row_bytes = max(1, out0[0].numel() * 4)
    fast = (type(problem).loss_sum is Problem.loss_sum and type(problem).correct is Problem.correct
            and problem.loss == "cross_entropy" and out0.dim() == 2)
    groups: list[Group] = []
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    rows = 0

    def close():
        y = ys[0] if len(ys) == 1 else torch.cat(ys)
        onehot = None
        if fast and y.dim() == 1 and not y.is_floating_point() and len(y) and 0 <= int(y.min()) \
                and int(y.max()) < out0.shape[-1]:
            onehot = torch.nn.functional.one_hot(y.long(), out0.shape[-1]).to(out0.dtype)
        groups.append((list(xs), y, onehot))

    for x, y in batches:
        if xs and (rows + len(x)) * row_bytes > max_bytes:
            close()
            xs, ys, rows = [], [], 0
        xs.append(x)
        ys.append(y)
        rows += len(x)
    close()
    return groups


def evaluate_batches(problem: Problem, batches: list[Batch], model=None) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` (default: the problem's) over ``batches`` (one host sync)."""
    model = problem.model if model is None else model
    groups = [([x], y, None) for x, y in batches]
    total, correct, n = accumulate(problem, groups, model)
    values = torch.stack([total, correct.double()]).cpu()  # one host sync
    loss = float(values[0]) / n
    acc = float(values[1]) / n if problem.classification else float("nan")
    return loss, acc


def on_device(xs: list, y: Tensor, onehot: Tensor | None, dev: torch.device) -> Group:
    """A group of streamed host batches on the device (non-blocking from pinned memory on CUDA)."""
    nb = dev.type == "cuda"
    return ([x.to(dev, non_blocking=nb) for x in xs], y.to(dev, non_blocking=nb),
            None if onehot is None else onehot.to(dev, non_blocking=nb))


def accumulate(problem: Problem, groups: list[Group], forward: Callable, precision: str = "fp32",
               loss_and_correct: Callable | None = None):
    """Summed loss (float64, on the device), correct count (int64, on the device) and sample count.

    Lean on purpose: it runs once per grid point and split, so no tensor is allocated besides
    the outputs and the two accumulators.
    """
    dev = problem.device
    total = correct = None
    n = 0
    loss_and_correct = loss_and_correct or loss_and_correct_of(problem)
    cast = precision != "fp32"
    with torch.inference_mode():
        for xs, y, onehot in groups:
            if y.device != dev:  # streamed from the host, one group at a time
                xs, y, onehot = on_device(xs, y, onehot, dev)
            if cast:
                with autocast(dev, precision):
                    outs = [forward(x) for x in xs]
            else:
                outs = [forward(x) for x in xs]
            out = outs[0] if len(outs) == 1 else torch.cat(outs)
            out = out.float() if out.dtype in (torch.float16, torch.bfloat16) else out
            loss, corr = loss_and_correct(out, y, onehot)
            if total is None:
                total, correct = loss.double(), corr  # (counts are int64 sums already)
            else:
                total, correct = total + loss, correct + corr  # (float64 + float32 stays float64)
            n += len(y)
    if total is None:
        total = torch.zeros((), dtype=torch.float64, device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
    return total, correct, n


def split_results(splits: list[str], loss: Tensor, corr: Tensor, counts: list[int], classification: bool
                  ) -> dict[str, np.ndarray]:
    """Device accumulators → ``{split}_loss``/``{split}_acc`` arrays (the one host sync of a call)."""
    loss_np = loss.cpu().numpy()
    corr_np = corr.cpu().numpy()
    out = {}
    for j, s in enumerate(splits):
        n = counts[j] if counts else 1
        out[f"{s}_loss"] = loss_np[:, j] / n
        out[f"{s}_acc"] = corr_np[:, j] / n if classification else np.full(len(loss_np), np.nan)
    return out
