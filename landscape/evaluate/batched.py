"""The batched path: K grid points per forward pass, as a linear chain or under ``torch.func.vmap``.

A folded sequential MLP (``Linear`` layers, elementwise activations, ``Dropout``, ``BatchNorm1d`` in eval
mode, the built-in cross-entropy) runs as a :class:`~landscape.evaluate.chain.LinearChain`: one batched matrix
product per layer for the K points, in a feature-major layout with the biases inside the product. Other
models: the weights of the K points are built on the fly as a ``(K, ...)`` stack per perturbed tensor
(tensors every direction leaves at zero, such as biases under ``ignore="biasbn"``, are shared, not stacked)
into buffers reused from group to group, and ``torch.func.vmap`` over ``torch.func.functional_call``
evaluates them in one pass per data batch.

On a CPU both forms run K points over row chunks sized so that their activations stay near the cache
(``CACHE_BYTES``), and every call holds exactly K points (the last group padded), so a point's value does not
depend on which other points share its call, nor on the rank count.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call, vmap

from ..autotune import module_output_bytes
from ..directions._base import Directions
from ..errors import LandscapeError
from ..problem import Problem
from ._base import _Evaluator, direction_targets, split_names
from .chain import LinearChain
from .device import _MaybeCompiled, autocast, device_batches, for_precision, has_conv
from .fold import InputFold, input_fold
from .groups import Group, loss_and_correct_of, make_groups, on_device, split_results
from .point import PointEvaluator

#: on a CPU, the activations of one batched call (K points × rows) are kept about this small (cache-sized)
CACHE_BYTES = 4 << 20
#: ... but never fewer rows than this per call (the fixed cost per call would dominate)
MIN_ROWS = 64
#: on a GPU, the linear chain's activations of one call (K points × rows) stay within this
DEVICE_CHUNK_BYTES = 256 << 20


class BatchedEvaluator(_Evaluator):
    """K grid points per forward pass; same interface and numbers as :class:`PointEvaluator`.

    ``chain`` (default): run sequential MLPs as a :class:`~landscape.evaluate.chain.LinearChain`
    (``self.chain``; None where it does not apply, with ``compile`` or outside fp32); the rest of
    this describes the ``vmap`` path used otherwise.

    Only tensors that some direction moves are stacked (``(K, ...)`` buffers allocated once and
    rewritten per group of K points); the rest are shared. With ``dir_type="states"`` perturbed
    BatchNorm running statistics are stacked like weights. The last group of a call is padded to K
    points. Peak memory is K × (perturbed weights + activations of one batch), whatever the number
    of points. ``share``: a :class:`PointEvaluator` of the same problem, directions, splits and
    precision whose device batches, input fold and prepared groups are reused (its fold replaces
    ``fold``), so that the fold's cache is computed and held once.
    """

    def __init__(self, problem: Problem, directions: Directions, points_per_batch: int = 8,
                 splits: list[str] | None = None, *, precision: str = "fp32", compile: bool = False,
                 fold: bool = True, chain: bool = True, share: PointEvaluator | None = None):
        if points_per_batch < 1:
            raise LandscapeError(f"`points_per_batch` must be positive, got {points_per_batch}")
        autocast(problem.device, precision)  # validates
        problem, directions = (share.problem, share.directions) if share is not None else \
            for_precision(problem, directions, precision)
        self.problem = problem
        self.directions = directions
        self.splits = list(splits or problem.splits)
        self.k = int(points_per_batch)
        self.precision = precision
        model = problem.model
        direction_targets(model, directions)
        if share is not None:
            self.batches, self.fold = share.batches, share.fold
        else:
            self.batches = device_batches(problem, self.splits, problem.device.type == "cuda" and has_conv(model))
            self.fold = input_fold(model, directions, [b for bs in self.batches.values() for b in bs],
                                   precision) if fold else None
        folded = set(self.fold.names) if self.fold is not None else set()
        self.moving = [k for k in directions.center
                       if k not in folded and any(bool(torch.any(v[k] != 0)) for v in directions.vectors)]
        self.fixed = {k: directions.center[k] for k in directions.center if k not in self.moving and k not in folded}
        self._center = {k: directions.center[k] for k in self.moving}
        self._dirs = [{k: v[k] for k in self.moving} for v in directions.vectors]
        self._buf: dict[str, Tensor] = {}
        self.channels_last = problem.device.type == "cuda" and has_conv(model)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.groups = dict(share.groups) if share is not None else \
            {s: self.prepare(make_groups(problem, b)) for s, b in self.batches.items()}
        flat = all(isinstance(z, Tensor) and z.dim() == 3 for g in self.groups.values() for zs, _, _ in g for z in zs)
        self.chain = LinearChain.build(self.fold, directions, _classes(self.groups)) \
            if chain and flat and precision in ("fp32", "fp64") and not compile else None
        loss_and_correct = loss_and_correct_of(problem)
        net = model if self.fold is None else self.fold.body
        first = next(iter(self.batches.values()))[0][0][:2].to(problem.device)
        self.row_bytes = self.fold.row_bytes if self.fold is not None else module_output_bytes(model, first)

        def point(moving: dict, fixed: dict, xs: list[Tensor], y: Tensor, onehot: Tensor | None, _coeffs: Tensor):
            # (_coeffs: always something to vmap over, even when no tensor moves)
            params = {**fixed, **moving}
            outs = [functional_call(net, params, (x,)) for x in xs]
            out = outs[0] if len(outs) == 1 else torch.cat(outs)
            if out.dtype in (torch.float16, torch.bfloat16):
                out = out.float()
            return loss_and_correct(out, y, onehot)

        # with the fold, the inputs are the points' own first-layer outputs: batched like the weights
        in_dims = (0, None, None if self.fold is None else 0, None, None, 0)
        self._fn = _MaybeCompiled(vmap(point, in_dims=in_dims), compile, "batched forward")

    def prepare(self, groups: list[Group]) -> list[Group]:
        """Groups of raw batches as this evaluator runs them (first-layer outputs with the fold)."""
        return groups if self.fold is None else self.fold.prepare(groups)

    @property
    def names(self) -> list[str]:
        return split_names(self.splits)

    def release(self) -> None:
        """Free what one call built: the K stacked weights, and the chain's layouts of other groups than the splits'."""
        self._buf.clear()  # the K copies live no longer than one call
        if self.chain is not None:
            self.chain.release({(id(g), self.rows) for g in self.groups.values()})

    @property
    def rows(self) -> int:
        """Samples per call on a CPU: K points × these rows of activations stay within ``CACHE_BYTES``.

        On a GPU: 0 (whole batches) for the vmap path; the linear chain, which joins a group's
        batches, takes rows up to ``DEVICE_CHUNK_BYTES`` of activations. Measured on the demo MLP
        (2-core EPYC, vmap path): K = 16 with 512 rows ran 1.35× faster than K = 16 over whole
        1,797-row groups, whose activations spill out of the cache.
        """
        if self.problem.device.type == "cpu":
            budget = CACHE_BYTES
        else:
            budget = DEVICE_CHUNK_BYTES if self.chain is not None else 0
        return max(MIN_ROWS, budget // max(1, self.k * self.row_bytes)) if budget else 0

    @property
    def param_numel(self) -> int:
        """Entries stacked per point (the perturbed tensors)."""
        return sum(self._center[k].numel() for k in self.moving)

    def stack(self, coeffs: Tensor) -> dict[str, Tensor]:
        """``{name: (n, ...)}`` weights θ + Σ cᵢ·dᵢ of ``n ≤ K`` points, written into reused buffers."""
        n = len(coeffs)
        out = {}
        with torch.no_grad():
            for name in self.moving:
                c = self._center[name]
                buf = self._buf.get(name)
                if buf is None or len(buf) < n:
                    buf = self._buf[name] = torch.empty((max(n, self.k), *c.shape), dtype=c.dtype, device=c.device)
                w = buf[:n]
                w.copy_(c.expand(n, *c.shape))
                view = (n,) + (1,) * c.dim()
                for i, d in enumerate(self._dirs):
                    w.addcmul_(coeffs[:, i].to(c.dtype).view(view), d[name])
                out[name] = w
        return out

    def run_group(self, coeffs: Tensor, groups: list[Group]) -> tuple[Tensor, Tensor, int]:
        """Summed loss (n,) float64, correct counts (n,) int64 and the sample count over ``groups``."""
        if self.chain is not None:
            loss, corr = self.chain.run(coeffs, self.chain.layout(groups, self.rows))
            return loss, corr, sum(len(y) for _, y, _ in groups)
        dev = self.problem.device
        n = len(coeffs)
        total = torch.zeros(n, dtype=torch.float64, device=dev)
        # float64: exact for counts, and holds the per-sequence token shares of sequence outputs
        correct = torch.zeros(n, dtype=torch.float64, device=dev)
        m = 0
        weights = self.stack(coeffs)
        if self.fold is not None:  # the fold's coefficients [1, c], in the dtype of its cache
            cf = torch.cat([torch.ones((n, 1), dtype=coeffs.dtype, device=dev), coeffs], 1).to(self.fold.dtype)
        with torch.inference_mode():
            for xs, y, onehot in groups:
                if y.device != dev:  # streamed from the host, one group at a time
                    xs, y, onehot = on_device(xs, y, onehot, dev)
                # on a CPU: one call (forward and loss) per cache-sized chunk of rows; on a GPU: the whole group
                calls = _row_chunks(xs, y, onehot, self.rows, 1 if self.fold is not None else 0) if self.rows \
                    else [(xs, y, onehot)]
                for xc, yc, oc in calls:
                    if self.fold is not None:
                        xc = [InputFold.combine(z, cf) for z in xc]
                    with autocast(dev, self.precision):
                        loss, corr = self._fn(weights, self.fixed, xc, yc, oc, coeffs)
                    total += loss
                    correct += corr
                m += len(y)
        return total, correct, m

    def __call__(self, coords: np.ndarray) -> dict[str, np.ndarray]:
        coords = np.atleast_2d(np.asarray(coords, dtype=np.float64))
        dev = self.problem.device
        co = torch.as_tensor(coords, dtype=torch.float64).to(dev)
        loss = torch.empty((len(coords), len(self.splits)), dtype=torch.float64, device=dev)
        corr = torch.empty((len(coords), len(self.splits)), dtype=torch.float64, device=dev)
        counts = [0] * len(self.splits)
        for lo in range(0, len(coords), self.k):
            group = co[lo:lo + self.k]
            n = len(group)
            if n < self.k:  # every call has exactly K points (the last repeated): same kernels, same rounding
                group = torch.cat([group, group[-1:].expand(self.k - n, -1)])
            for j, s in enumerate(self.splits):
                t, c, counts[j] = self.run_group(group, self.groups[s])
                loss[lo:lo + n, j] = t[:n]
                corr[lo:lo + n, j] = c[:n]
        self.release()
        return split_results(self.splits, loss, corr, counts, self.problem.classification)


def _classes(groups: dict[str, list[Group]]) -> int:
    """The number of classes when every group has one-hot targets (the built-in cross-entropy), else 0."""
    onehots = [oh for g in groups.values() for _, _, oh in g]
    if not onehots or any(oh is None or oh.dim() != 2 for oh in onehots):
        return 0
    return onehots[0].shape[1]


def _row_chunks(xs: list[Tensor], y: Tensor, onehot: Tensor | None, rows: int, dim: int):
    """``([x_chunk], y_chunk, onehot_chunk)`` of at most ``rows`` samples (``dim``: the inputs' sample dim)."""
    offset = 0
    for x in xs:
        for c in x.split(rows, dim):
            n = c.shape[dim] if isinstance(c, Tensor) else len(c)
            yield [c], y[offset:offset + n], None if onehot is None else onehot[offset:offset + n]
            offset += n
