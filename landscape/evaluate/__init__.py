"""Loss and accuracy at points of weight space: a per-point path and a batched (``vmap``) path.

One module per concept: :mod:`~landscape.evaluate.device` (precision, autocast, float64 copies, device
batches, compilation, heap), :mod:`~landscape.evaluate.groups` (batches grouped for one loss, accumulation),
:mod:`~landscape.evaluate.fold` (the input-layer fold), :mod:`~landscape.evaluate.point` (per point),
:mod:`~landscape.evaluate.batched` (K points per pass), :mod:`~landscape.evaluate.chain` (the linear chain),
:mod:`~landscape.evaluate.choose` (the choice of K) and :mod:`~landscape.evaluate._base` (the one
:class:`Evaluator` protocol every evaluator follows).

Per-point (:class:`PointEvaluator`): θ + Σᵢ cᵢ·dᵢ is written into the model's own tensors with
fused foreach kernels (no model or DataLoader rebuilt per point), the preloaded device batches are
run under ``inference_mode``, the summed loss (float64) and the correct count (int64) are
accumulated on the device, and the host reads them once per call (not per batch, not per point).

Batched (:class:`BatchedEvaluator`): K grid points at once. A folded sequential MLP (``Linear``
layers, elementwise activations, ``Dropout``, ``BatchNorm1d`` in eval mode, the built-in
cross-entropy) runs as a :class:`~landscape.evaluate.chain.LinearChain`: one batched matrix product
per layer for the K points, in a feature-major layout with the biases inside the product. Other
models: the weights of the K points are built on the fly as a ``(K, ...)`` stack per perturbed
tensor (tensors every direction leaves at zero, such as biases under ``ignore="biasbn"``, are
shared, not stacked) into buffers reused from group to group, and ``torch.func.vmap`` over
``torch.func.functional_call`` evaluates them in one pass per data batch. Models vmap cannot run
(``.item()`` in ``forward``, data-dependent control flow, random ops) or that give different
numbers fall back to the per-point path with a one-line notice.

Input-layer fold (:class:`InputFold`, both paths, fp32/fp64): for an ``nn.Sequential`` whose first layer
is a ``Linear``/``Conv`` on the input, that layer's output for the centre and for each direction is
computed once per batch; a point's first-layer output is then ``[1, c] @ Z``, exact to rounding. It
removes the first layer's matrix product from every point (60 % of the demo MLP's multiply-adds).

On a CPU both batched forms run K points over row chunks sized so that their activations stay
near the cache (``CACHE_BYTES``), and every call holds exactly K points (the last group padded),
so a point's value does not depend on which other points share its call, nor on the rank count.

:func:`make_evaluator` picks the path: ``points_per_batch`` = ``"auto"`` caps K by memory
(stacked weights + activations vs. free memory), then times K = 1, 4, 16, 64 on the first ~1,024
samples and keeps the fastest (K = 1, the per-point path, for compute-bound models such as conv nets on a
CPU); an integer forces K.

Losses: the built-in cross-entropy runs :mod:`landscape.kernels`' stable per-example form in every
path (exact relative to each example's loss, also at a trained minimum), summed in float64.

Execution options (both paths): ``precision`` ``fp32`` (default: the model's own dtype) | ``fp64``
(the whole evaluation on a float64 copy of the model and inputs, :func:`as_float64`) | ``bf16`` |
``fp16`` (the forward pass under ``torch.autocast``; on a CPU bf16 works but is usually slower than
fp32), ``compile=True`` wraps the forward in ``torch.compile`` (falls back to eager with a notice if
compilation fails), and on CUDA conv nets run ``channels_last``.

Example:
    >>> import numpy as np
    >>> from landscape.problem import make_problem
    >>> from landscape.directions import make_random_directions
    >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=64, device="cpu")
    >>> ev = PointEvaluator(p, make_random_directions(p.model, 2, seed=0))
    >>> out = ev(np.array([[0.0, 0.0], [0.5, -0.5]]))
    >>> sorted(out), out["train_loss"].shape
    (['train_acc', 'train_loss'], (2,))
    >>> bev = make_evaluator(p, make_random_directions(p.model, 2, seed=0), 4)
    >>> bool(np.allclose(bev(np.array([[0.0, 0.0], [0.5, -0.5]]))["train_loss"], out["train_loss"], rtol=1e-6))
    True
"""

from __future__ import annotations

from ..autotune import free_memory, module_output_bytes
from ..errors import LandscapeError
from ._base import Evaluator, split_names
from .batched import CACHE_BYTES, DEVICE_CHUNK_BYTES, MIN_ROWS, BatchedEvaluator
from .chain import LinearChain
from .choose import (
    AGREE_RTOL,
    MAX_AUTO_K,
    MEMORY_SHARE,
    PROBE_ROWS,
    activation_bytes,
    choose_points_per_batch,
    make_evaluator,
    max_points_per_batch,
)
from .device import PRECISIONS, as_float64, model_dtype, notice, release_heap
from .fold import FOLD_MEMORY_SHARE, MERGE_BYTES, InputFold, input_fold
from .groups import GROUP_BYTES, Group, accumulate, evaluate_batches, make_groups
from .point import PointEvaluator

__all__ = [
    "AGREE_RTOL", "CACHE_BYTES", "DEVICE_CHUNK_BYTES", "FOLD_MEMORY_SHARE", "GROUP_BYTES", "MAX_AUTO_K",
    "MEMORY_SHARE", "MERGE_BYTES", "MIN_ROWS", "PRECISIONS", "PROBE_ROWS", "BatchedEvaluator", "Evaluator", "Group",
    "InputFold", "LandscapeError", "LinearChain", "PointEvaluator", "accumulate", "activation_bytes", "as_float64",
    "choose_points_per_batch", "evaluate_batches", "free_memory", "input_fold", "make_evaluator", "make_groups",
    "max_points_per_batch", "model_dtype", "module_output_bytes", "notice", "release_heap", "split_names",
]
