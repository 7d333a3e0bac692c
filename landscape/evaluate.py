"""Loss and accuracy at points of weight space: a per-point path and a batched (``vmap``) path.

Per-point (:class:`PointEvaluator`): θ + Σᵢ cᵢ·dᵢ is written into the model's own tensors with
fused foreach kernels (no model or DataLoader rebuilt per point), the preloaded device batches are
run under ``inference_mode``, the summed loss (float64) and the correct count (int64) are
accumulated on the device, and the host reads them once per call (not per batch, not per point).

Batched (:class:`BatchedEvaluator`): K grid points at once. A folded sequential MLP (``Linear``
layers, elementwise activations, ``Dropout``, ``BatchNorm1d`` in eval mode, the built-in
cross-entropy) runs as a :class:`~landscape.linear_chain.LinearChain`: one batched matrix product
per layer for the K points, in a feature-major layout with the biases inside the product. Other
models: the weights of the K points are built on the fly as a ``(K, ...)`` stack per perturbed
tensor (tensors every direction leaves at zero, such as biases under ``--ignore biasbn``, are
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

import contextlib
import os
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from . import kernels as K
from . import params as P
from .batches import adapts_outputs
from .directions._base import Directions
from .errors import LandscapeError
from .problem import Batch, HostBatches, Problem

#: ``fp32``: the model as it is (float32 models run in float32, float64 models in float64); ``fp64``: the
#: whole evaluation in float64 (a float64 copy of the model and inputs); ``bf16``/``fp16``: autocast
PRECISIONS = {"fp32": None, "fp64": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: samples the auto-K probe evaluates (the first batches of the training split, at least one)
PROBE_ROWS = 1024
#: most grid points one vmap call evaluates when K is chosen automatically
MAX_AUTO_K = 64
#: share of the free memory the stacked weights and activations of one group may take
MEMORY_SHARE = 0.25


def notice(msg: str) -> None:
    """One line on stderr (not a warning: nothing is wrong with the results)."""
    print(f"landscape: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- shared helpers
def _autocast(device: torch.device, precision: str):
    if precision not in PRECISIONS:
        raise LandscapeError(f"--precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
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
    import copy
    from dataclasses import replace

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


def _for_precision(problem: Problem, directions: Directions, precision: str) -> tuple[Problem, Directions]:
    """``precision="fp64"``: the problem and directions in float64; otherwise themselves."""
    if precision != "fp64":
        return problem, directions
    return as_float64(problem), _float64_directions(directions)


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _device_batches(problem: Problem, splits: list[str], channels_last: bool = False) -> dict[str, list[Batch]]:
    """The problem's batches on its device (moved once, pinned and non-blocking from the host).

    Streamed data (:class:`~landscape.problem.HostBatches`) stays on the host: :func:`_on_device` moves
    each group as it is evaluated.
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
        notice(f"--compile: torch.compile failed for the {self.what} ({first[:120]}); running eagerly")
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


#: on a CPU, the activations of one batched call (K points × rows) are kept about this small (cache-sized)
CACHE_BYTES = 4 << 20
#: ... but never fewer rows than this per call (the fixed cost per call would dominate)
MIN_ROWS = 64
#: on a GPU, the linear chain's activations of one call (K points × rows) stay within this
DEVICE_CHUNK_BYTES = 256 << 20
#: a group's concatenated outputs may take this many bytes (the loss runs once per group, not per batch)
GROUP_BYTES = 32 << 20

#: batches whose outputs are concatenated for one loss evaluation: (inputs, targets, one-hot targets or None)
Group = tuple[list[Tensor], Tensor, "Tensor | None"]


def _loss_and_correct(problem: Problem) -> Callable[[Tensor, Tensor, Tensor | None], tuple[Tensor, Tensor]]:
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
    total, correct, n = _accumulate(problem, groups, model)
    values = torch.stack([total, correct.double()]).cpu()  # one host sync
    loss = float(values[0]) / n
    acc = float(values[1]) / n if problem.classification else float("nan")
    return loss, acc


def _on_device(xs: list, y: Tensor, onehot: Tensor | None, dev: torch.device) -> Group:
    """A group of streamed host batches on the device (non-blocking from pinned memory on CUDA)."""
    nb = dev.type == "cuda"
    return ([x.to(dev, non_blocking=nb) for x in xs], y.to(dev, non_blocking=nb),
            None if onehot is None else onehot.to(dev, non_blocking=nb))


def _accumulate(problem: Problem, groups: list[Group], forward: Callable, precision: str = "fp32",
                loss_and_correct: Callable | None = None):
    """Summed loss (float64, on the device), correct count (int64, on the device) and sample count.

    Lean on purpose: it runs once per grid point and split, so no tensor is allocated besides
    the outputs and the two accumulators.
    """
    dev = problem.device
    total = correct = None
    n = 0
    loss_and_correct = loss_and_correct or _loss_and_correct(problem)
    cast = precision != "fp32"
    with torch.inference_mode():
        for xs, y, onehot in groups:
            if y.device != dev:  # streamed from the host, one group at a time
                xs, y, onehot = _on_device(xs, y, onehot, dev)
            if cast:
                with _autocast(dev, precision):
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


# --------------------------------------------------------------------------- the input-layer fold
#: the body's activations for the rows the fold joins into one tensor may take this many bytes
MERGE_BYTES = 16 << 20


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


#: layer types the fold understands: affine in their (weight, bias) for a fixed input
_FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: the fold's cache may take at most this share of the free memory
FOLD_MEMORY_SHARE = 0.1


class InputFold:
    r"""The first layer of a sequential model, computed once per batch for the centre and each direction.

    For a model :math:`f = g \circ L \circ p` whose first layer :math:`L` (``Linear`` or ``Conv``) is
    affine in its weights and acts on the (fixed) input through parameter-free modules :math:`p`
    (``Flatten``), every grid point shares

    .. math:: L_{\theta + \sum_i c_i d_i}(u) = L_\theta(u) + \sum_i c_i\, L^{0}_{d_i}(u),

    where :math:`L^0_d` is the layer with weight and bias taken from the direction :math:`d`. So the
    ``(1 + ndim)`` outputs :math:`Z = [L_\theta(u), L^0_{d_1}(u), \dots]` are computed once per batch and a
    point's first-layer output is one matrix product ``[1, c] @ Z`` (K points: ``C @ Z``, with ``C`` the
    ``(K, 1 + ndim)`` coefficients): for the demo MLP that removes 60 % of the multiply-adds of every
    point. Exact up to float rounding (~1e-6 relative). The cache costs ``(1 + ndim)`` × the layer's
    output over all evaluation samples; :func:`input_fold` skips the fold when that does not fit.

    Example:
        >>> from landscape.problem import make_problem
        >>> from landscape.directions import make_random_directions
        >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=64, device="cpu")
        >>> d = make_random_directions(p.model, 2, seed=0)
        >>> fold = input_fold(p.model, d, p.batches)
        >>> fold.names, tuple(fold.stack(p.batches[0][0]).shape)
        (['1.weight', '1.bias'], (3, 64, 32))
    """

    def __init__(self, prefix: list[nn.Module], layer: nn.Module, body: nn.Module, layer_name: str,
                 directions: Directions):
        self.prefix = prefix
        self.layer = layer
        self.body = body
        self.names = [f"{layer_name}.{n}" for n, _ in layer.named_parameters(recurse=False)]
        own = dict(layer.named_parameters(recurse=False))

        def pick(src: dict, name: str, fallback):
            return src[name] if name in src else fallback

        self.row_bytes = 0  # the body's activations per sample (set by input_fold)
        w, b = f"{layer_name}.weight", f"{layer_name}.bias"
        self._weights = [(pick(directions.center, w, own["weight"]), pick(directions.center, b, own.get("bias")))]
        for v in directions.vectors:
            zw = torch.zeros_like(own["weight"])
            zb = None if own.get("bias") is None else torch.zeros_like(own["bias"])
            self._weights.append((pick(v, w, zw), pick(v, b, zb)))

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the cache (the layer's weights)."""
        return self._weights[0][0].dtype

    def _apply(self, u: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if isinstance(self.layer, nn.Linear):
            return torch.nn.functional.linear(u, weight, bias)
        return self.layer._conv_forward(u, weight, bias)

    def stack(self, x: Tensor) -> Tensor:
        """``(1 + ndim, n, ...)``: the layer's output for the centre, then for each direction (bias included)."""
        with torch.inference_mode():
            u = x
            for m in self.prefix:
                u = m(u)
            return torch.stack([self._apply(u, w, b) for w, b in self._weights])

    @staticmethod
    def combine(z: Tensor, coeffs: Tensor) -> Tensor:
        """First-layer output of the points ``coeffs`` (``(K, 1 + ndim)``, first column 1): ``(K, n, ...)``."""
        return (coeffs @ z.reshape(len(z), -1)).reshape(len(coeffs), *z.shape[1:])

    def prepare(self, groups: list[Group]) -> list[Group]:
        """The same groups with their input batches replaced by stacked first-layer outputs.

        Consecutive batches of a group are joined into one tensor (the cache exists anyway, so this
        costs no memory) while the body's activations for the joined rows stay under
        ``MERGE_BYTES``: a small model then runs a few large matrix products per point instead of
        many small ones, whose fixed cost dominates.
        """
        out = []
        for xs, y, onehot in groups:
            stacks = [self.stack(x) for x in xs]
            rows = max(1, MERGE_BYTES // max(1, self.row_bytes))
            merged, part, n = [], [], 0
            for z in stacks:
                if part and n + z.shape[1] > rows:
                    merged.append(part[0] if len(part) == 1 else torch.cat(part, 1))
                    part, n = [], 0
                part.append(z)
                n += z.shape[1]
            merged.append(part[0] if len(part) == 1 else torch.cat(part, 1))
            out.append((merged, y, onehot))
        return out


def _param_device(model: nn.Module) -> torch.device | None:
    p = next(iter(model.parameters()), None)
    return None if p is None else p.device


def input_fold(model: nn.Module, directions: Directions, batches: list[Batch], precision: str = "fp32",
               max_bytes: int | None = None) -> InputFold | None:
    """An :class:`InputFold` for ``model``, or None where it does not apply.

    It applies to an ``nn.Sequential`` (its own ``forward``) whose first module holding parameters
    or buffers is a plain ``Linear``/``Conv`` reached through parameter-free modules, without autocast, when
    the cache fits in ``max_bytes`` (default: a tenth of the free memory).
    """
    if precision not in ("fp32", "fp64") or not isinstance(model, nn.Sequential) \
            or type(model).forward is not nn.Sequential.forward:
        return None
    if adapts_outputs(model) or any(not isinstance(x, Tensor) or x.device != _param_device(model) for x, _ in batches):
        return None  # outputs picked by a hook, inputs that are not one tensor, or streamed data (cache ~ data)
    children = list(model.named_children())
    first = next((i for i, (_, m) in enumerate(children)
                  if any(True for _ in m.parameters()) or any(True for _ in m.buffers())), None)
    if first is None:
        return None
    name, layer = children[first]
    if type(layer) not in _FOLDABLE or type(layer).forward is not _FOLDABLE[_FOLDABLE.index(type(layer))].forward:
        return None
    if any(not isinstance(m, (nn.Flatten, nn.Identity, nn.Unflatten)) for _, m in children[:first]):
        return None  # other parameter-free modules may be random or costly: keep them per point
    from collections import OrderedDict

    body = nn.Sequential(OrderedDict(children[first + 1:]))
    own = {t.data_ptr() for t in layer.parameters(recurse=False)}
    if any(t.data_ptr() in own for t in (*body.parameters(), *body.buffers())):
        return None  # weights tied to a later layer: that layer must see them move
    fold = InputFold([m for _, m in children[:first]], layer, body, name, directions)
    if not batches:
        return None
    rows = sum(len(x) for x, _ in batches)
    probe = fold.stack(batches[0][0][:1])
    fold.row_bytes = module_output_bytes(body, probe[0])
    need = probe.numel() * probe.element_size() * rows
    budget = FOLD_MEMORY_SHARE * free_memory(batches[0][0].device) if max_bytes is None else max_bytes
    return fold if need <= budget else None


# --------------------------------------------------------------------------- per-point path
class PointEvaluator:
    """Evaluates ``{split}_loss`` and ``{split}_acc`` at points given by their coordinates.

    ``__call__(coords)`` takes a ``(K, ndim)`` array and returns ``{name: (K,) array}``. The model
    is left at the centre afterwards. ``move_to``/``restore`` write a point's weights into the
    model and put the centre back (used by the curvature maps).
    """

    def __init__(self, problem: Problem, directions: Directions, splits: list[str] | None = None, *,
                 precision: str = "fp32", compile: bool = False, fold: bool = True):
        _autocast(problem.device, precision)  # validates
        problem, directions = _for_precision(problem, directions, precision)
        self.problem = problem
        self.directions = directions
        self.splits = list(splits or problem.splits)
        self.precision = precision
        self.channels_last = problem.device.type == "cuda" and _has_conv(problem.model)
        if self.channels_last:
            problem.model.to(memory_format=torch.channels_last)
        self.targets = P.select(problem.model, directions.dir_type)
        missing = [k for k in directions.center if k not in self.targets]
        if missing:
            raise LandscapeError(f"the directions name tensors the model does not have: {', '.join(missing[:3])}")
        self._keys = list(directions.center)
        self._center = [directions.center[k] for k in self._keys]
        self._dirs = [[v[k] for k in self._keys] for v in directions.vectors]
        self._out = [self.targets[k] for k in self._keys]
        self.batches = _device_batches(problem, self.splits, self.channels_last)
        self.groups = {s: make_groups(problem, b) for s, b in self.batches.items()}
        self.fold = input_fold(problem.model, directions, [b for bs in self.batches.values() for b in bs],
                               precision) if fold else None
        self._loss_fn = _loss_and_correct(problem)
        # tensors some direction moves (per point only these are rewritten; the rest stay at the centre), less
        # the first layer's with the fold (its output comes from the fold's cache)
        folded = set(self.fold.names) if self.fold is not None else set()
        mv = [i for i, k in enumerate(self._keys)
              if k not in folded and any(bool(torch.any(v[k] != 0)) for v in directions.vectors)]
        self._mv_center = [self._center[i] for i in mv]
        self._mv_dirs = [[d[i] for i in mv] for d in self._dirs]
        self._mv_out = [self._out[i] for i in mv]
        if self.fold is not None:
            self.groups = {s: self.fold.prepare(g) for s, g in self.groups.items()}
            # the points' coefficients [1, c] in the dtype of the fold's cache (float32, or float64 for float64 models)
            self._coeffs = torch.zeros((1, directions.ndim + 1), dtype=self.fold.dtype, device=problem.device)
            self._coeffs[0, 0] = 1.0
            self._coeffs_host = self._coeffs.numpy()[0] if self._coeffs.device.type == "cpu" else None
            body = _MaybeCompiled(self.fold.body, compile, "per-point forward")
            self.forward = lambda z: body(InputFold.combine(z, self._coeffs)[0])  # (both in the fold's dtype)
        else:
            self.forward = _MaybeCompiled(problem.model, compile, "per-point forward")

    @property
    def names(self) -> list[str]:
        return [f"{s}_{m}" for s in self.splits for m in ("loss", "acc")]

    def prepare(self, groups: list[Group]) -> list[Group]:
        """Groups of raw batches as ``self.forward`` takes them (first-layer outputs with the fold)."""
        return groups if self.fold is None else self.fold.prepare(groups)

    def move_to(self, coeffs) -> None:
        """Write θ + Σ coeffs[i]·dᵢ into the model (one foreach copy + one foreach add per direction)."""
        with torch.no_grad():
            torch._foreach_copy_(self._out, self._center)
            for d, a in zip(self._dirs, coeffs):
                if float(a) != 0.0:
                    torch._foreach_add_(self._out, d, alpha=float(a))
        self._set_coeffs(coeffs)

    def _set_coeffs(self, coeffs) -> None:
        if self.fold is None:
            return
        if self._coeffs_host is not None:  # a CPU tensor: write through its numpy view (no kernel launch)
            self._coeffs_host[1:] = coeffs
        else:
            self._coeffs.copy_(torch.as_tensor([[1.0, *(float(a) for a in coeffs)]]))

    def restore(self) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self._out, self._center)
        self._set_coeffs([0.0] * self.directions.ndim)

    def __call__(self, coords: np.ndarray) -> dict[str, np.ndarray]:
        coords = np.atleast_2d(np.asarray(coords, dtype=np.float64))
        counts: list[int] = []
        losses: list[Tensor] = []  # 0-d device tensors, stacked once at the end (no per-point writes)
        corrects: list[Tensor] = []
        groups = [self.groups[s] for s in self.splits]
        try:
            self.restore()
            with torch.no_grad():
                for c in coords.tolist():
                    self._set_coeffs(c)
                    if self._mv_out:  # (nothing to move if every direction is zero)
                        torch._foreach_copy_(self._mv_out, self._mv_center)
                        for d, a in zip(self._mv_dirs, c):
                            if a != 0.0:
                                torch._foreach_add_(self._mv_out, d, alpha=a)
                    counts = []
                    for g in groups:
                        t, k, n = _accumulate(self.problem, g, self.forward, self.precision, self._loss_fn)
                        losses.append(t)
                        corrects.append(k)
                        counts.append(n)
        finally:
            self.restore()
            release_heap(self.problem.device)
        shape = (len(coords), len(self.splits))
        return _results(self.splits, torch.stack(losses).view(shape), torch.stack(corrects).view(shape), counts,
                        self.problem.classification)


def _results(splits: list[str], loss: Tensor, corr: Tensor, counts: list[int], classification: bool):
    """Device accumulators → ``{split}_loss``/``{split}_acc`` arrays (the one host sync of a call)."""
    loss_np = loss.cpu().numpy()
    corr_np = corr.cpu().numpy()
    out = {}
    for j, s in enumerate(splits):
        n = counts[j] if counts else 1
        out[f"{s}_loss"] = loss_np[:, j] / n
        out[f"{s}_acc"] = corr_np[:, j] / n if classification else np.full(len(loss_np), np.nan)
    return out


# --------------------------------------------------------------------------- batched path
class BatchedEvaluator:
    """K grid points per forward pass; same interface and numbers as :class:`PointEvaluator`.

    ``chain`` (default): run sequential MLPs as a :class:`~landscape.linear_chain.LinearChain`
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
        from torch.func import functional_call, vmap

        from .linear_chain import LinearChain

        if points_per_batch < 1:
            raise LandscapeError(f"points_per_batch must be positive, got {points_per_batch}")
        _autocast(problem.device, precision)  # validates
        problem, directions = (share.problem, share.directions) if share is not None else \
            _for_precision(problem, directions, precision)
        self.problem = problem
        self.directions = directions
        self.splits = list(splits or problem.splits)
        self.k = int(points_per_batch)
        self.precision = precision
        model = problem.model
        own = P.select(model, directions.dir_type)
        missing = [k for k in directions.center if k not in own]
        if missing:
            raise LandscapeError(f"the directions name tensors the model does not have: {', '.join(missing[:3])}")
        if share is not None:
            self.batches, self.fold = share.batches, share.fold
        else:
            self.batches = _device_batches(problem, self.splits, problem.device.type == "cuda" and _has_conv(model))
            self.fold = input_fold(model, directions, [b for bs in self.batches.values() for b in bs],
                                   precision) if fold else None
        folded = set(self.fold.names) if self.fold is not None else set()
        self.moving = [k for k in directions.center
                       if k not in folded and any(bool(torch.any(v[k] != 0)) for v in directions.vectors)]
        self.fixed = {k: directions.center[k] for k in directions.center if k not in self.moving and k not in folded}
        self._center = {k: directions.center[k] for k in self.moving}
        self._dirs = [{k: v[k] for k in self.moving} for v in directions.vectors]
        self._buf: dict[str, Tensor] = {}
        self.channels_last = problem.device.type == "cuda" and _has_conv(model)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.groups = dict(share.groups) if share is not None else \
            {s: self.prepare(make_groups(problem, b)) for s, b in self.batches.items()}
        flat = all(isinstance(z, Tensor) and z.dim() == 3 for g in self.groups.values() for zs, _, _ in g for z in zs)
        self.chain = LinearChain.build(self.fold, directions, _classes(self.groups)) \
            if chain and flat and precision in ("fp32", "fp64") and not compile else None
        loss_and_correct = _loss_and_correct(problem)
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
        return [f"{s}_{m}" for s in self.splits for m in ("loss", "acc")]

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
                    xs, y, onehot = _on_device(xs, y, onehot, dev)
                # on a CPU: one call (forward and loss) per cache-sized chunk of rows; on a GPU: the whole group
                calls = _row_chunks(xs, y, onehot, self.rows, 1 if self.fold is not None else 0) if self.rows \
                    else [(xs, y, onehot)]
                for xc, yc, oc in calls:
                    if self.fold is not None:
                        xc = [InputFold.combine(z, cf) for z in xc]
                    with _autocast(dev, self.precision):
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
        return _results(self.splits, loss, corr, counts, self.problem.classification)


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


# --------------------------------------------------------------------------- choosing the path
def activation_bytes(problem: Problem, batch_size: int | None = None) -> int:
    """Rough peak activation memory of one forward pass over a batch (sum of all module outputs)."""
    n = batch_size or max(len(b[0]) for b in problem.batches)
    return module_output_bytes(problem.model, problem.batches[0][0][:2]) * n


def max_points_per_batch(problem: Problem, batched: BatchedEvaluator, cap: int = MAX_AUTO_K) -> int:
    """The largest K whose stacked weights and activations fit in a share of the free memory."""
    elem = next(iter(batched._center.values())).element_size() if batched.moving else 4
    per_point = batched.param_numel * elem + activation_bytes(problem)
    budget = MEMORY_SHARE * free_memory(problem.device)
    return int(max(1, min(cap, budget // max(1, per_point))))


def _time_per_point(run: Callable[[], object], k: int, device: torch.device, reps: int = 3,
                    max_reps: int = 15, seconds: float = 0.1) -> float:
    """Fastest of at least ``reps`` timed runs (more, up to ``max_reps``, while they take under ``seconds``)."""
    run()  # warm-up (allocations, vmap/compile set-up)
    times: list[float] = []
    while len(times) < reps or (len(times) < max_reps and sum(times) < seconds):
        _sync(device)
        t = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - t)
    return min(times) / k  # other processes only ever add time: on a shared VM one run can take twice another


def choose_points_per_batch(problem: Problem, per_point: PointEvaluator, batched: BatchedEvaluator,
                            k_max: int, budget_s: float = 3.0, t1: float | None = None) -> tuple[int, dict[int, float]]:
    """Time K = 1, 4, 16, 64 (≤ ``k_max``, which is tried too) on the first training batches; the fastest K.

    Each K is timed as the fastest of 3-15 runs after a warm-up (cheap runs are repeated more: the
    same call varies up to 2× on a shared VM). Batched must beat K = 1 by 10 %, a
    larger K the best so far by 5 %; growing K stops after two K in a row that do not, after a
    K ≥ 16 that is 20 % slower, or when the next probe would take the total past ``budget_s``
    seconds (compute-bound models stay at K = 1). ``t1``: seconds per point of K = 1 already measured on
    the same rows (:func:`~landscape.autotune.probe_budget`), not timed again. Returns
    ``(K, {K: seconds per point})``.
    """
    batch, batch_k = _prepared(per_point, batched, make_groups(problem, _probe_rows(per_point)))
    dev = problem.device
    nd = per_point.directions.ndim
    t0 = time.perf_counter()
    times: dict[int, float] = {}

    def time_per_point() -> float:
        try:
            per_point.move_to([0.0] * nd)
            return _time_per_point(lambda: _accumulate(problem, batch, per_point.forward, per_point.precision)[0]
                                   .cpu(), 1, dev, seconds=window)
        finally:
            per_point.restore()

    window = min(0.1, budget_s / 10)  # repeats of one K stop after this long (the whole probe within budget_s)
    times[1] = time_per_point() if t1 is None else t1
    best = 1
    candidates = sorted({k for k in (4, 16, 64) if k < k_max} | ({k_max} if k_max > 1 else set()))
    misses = 0
    k_before = batched.k
    try:
        for k in candidates:
            # the next probe costs about 4 runs of K points; skip it if that would overrun the budget
            if time.perf_counter() - t0 + 4 * k * times[best] > budget_s:
                break
            batched.k = k  # (the row chunks depend on K)
            coeffs = torch.zeros((k, nd), dtype=torch.float64, device=dev)
            times[k] = _time_per_point(lambda c=coeffs: batched.run_group(c, batch_k)[0].cpu(), k, dev,
                                       seconds=window)
            if times[k] < (0.9 if best == 1 else 0.95) * times[best]:
                best, misses = k, 0
            else:
                misses += 1
                if misses == 2 or (k >= 16 and times[k] > 1.2 * times[best]):
                    break
        if best > 1 and time.perf_counter() - t0 + 4 * times[1] <= budget_s:
            # K = 1 once more: load that came and went during the probe then hits both alike
            times[1] = min(times[1], time_per_point())
            if not times[best] < 0.9 * times[1]:
                best = 1
    finally:
        batched.k = k_before
        batched.release()
    return best, times


def _probe_rows(per_point: PointEvaluator) -> list[Batch]:
    """The first batches of the first split, about ``PROBE_ROWS`` samples (joined as a run joins them)."""
    probe, rows = [], 0
    for b in per_point.batches[per_point.splits[0]]:
        if rows >= PROBE_ROWS:
            break
        probe.append(b)
        rows += len(b[0])
    return probe


def _prepared(per_point: PointEvaluator, batched: BatchedEvaluator, raw: list[Group]) -> tuple[list, list]:
    """``raw`` groups as each path runs them (prepared once when they share the fold)."""
    mine = per_point.prepare(raw)
    return mine, mine if batched.fold is per_point.fold else batched.prepare(raw)


#: the batched and per-point paths agree when their summed losses differ by at most this share of the loss
#: plus a logit error of this size relative to the largest |logit| (per sample; see :func:`_check_batched`)
AGREE_RTOL = {"fp32": 1e-5, "fp64": 1e-12, "bf16": 5e-2, "fp16": 5e-2}


def _check_batched(per_point: PointEvaluator, batched: BatchedEvaluator) -> str | None:
    r"""Run two points both ways on a few samples; why the batched path is unusable, or None.

    Like with like: both paths' losses come from the same stable kernel (:mod:`landscape.kernels`), so
    they differ only by the rounding of their forward passes, whose matrix products add in different
    orders. With δ = r·(1 + max|z|) the logits' allowed rounding (r = :data:`AGREE_RTOL`, z the
    per-point outputs on the n probe samples), a cross-entropy moves by |Δℓ| ≤ 2δ(1 − p_t) + δ² ≤
    2δℓ + δ² (relative, also at a minimum) and a squared error by 2|f − t|δ + δ², so the tolerance is
    (r + 2δ)|L| + nδ² for the cross-entropy and r|L| + nδ(2(1 + max|z|) + δ) otherwise. Rounding at
    a trained minimum passes (the old test compared two imprecise losses and failed there); a model that
    vmap evaluates differently (random ops, batch statistics, in-place state) gives differences of the
    size of the loss itself and fails.
    """
    problem = per_point.problem
    split = per_point.splits[0]
    x, y = per_point.batches[split][0]
    few, few_k = _prepared(per_point, batched, make_groups(problem, [(x[:4], y[:4])]))
    nd = per_point.directions.ndim
    g = torch.Generator().manual_seed(0)
    coeffs = (torch.rand((2, nd), generator=g, dtype=torch.float64) - 0.5) * 0.2
    try:
        got, _, _ = batched.run_group(coeffs.to(problem.device), few_k)
    except Exception as e:  # noqa: BLE001 - vmap refuses many things; all mean "use per-point"
        first = str(e).splitlines()[0] if str(e) else ""
        return f"vmap cannot batch this model ({type(e).__name__}: {first[:150]})"
    finally:
        batched.release()
    want, scale = [], 0.0
    try:
        for c in coeffs.tolist():
            per_point.move_to(c)
            want.append(_accumulate(problem, few, per_point.forward, per_point.precision)[0])
            with torch.inference_mode(), _autocast(problem.device, per_point.precision):
                for xs, *_ in few:
                    scale = max([scale] + [float(per_point.forward(xb).float().abs().max()) for xb in xs])
    finally:
        per_point.restore()
    want_np, got_np = torch.stack(want).cpu().numpy(), got.cpu().numpy()
    r = AGREE_RTOL.get(per_point.precision, 1e-5)
    n = sum(len(yb) for _, yb, _ in few)
    delta = r * (1.0 + scale)  # the logits' rounding error allowed
    if problem.loss == "cross_entropy":  # |Δℓ| ≤ 2δ(1 − p_t) + δ² ≤ 2δℓ + δ²: relative, also at the minimum
        tol = (r + 2 * delta) * np.abs(want_np) + n * delta ** 2
    else:  # |Δ(f − t)²| ≤ 2|f − t|δ + δ²
        tol = r * np.abs(want_np) + n * delta * (2 * (1.0 + scale) + delta)
    with np.errstate(invalid="ignore"):
        agree = (got_np == want_np) | (np.isnan(got_np) & np.isnan(want_np)) | (np.abs(got_np - want_np) <= tol)
    if not agree.all():
        return (f"the batched path's summed losses {got_np} differ from the per-point path's {want_np} by more "
                f"than float rounding (tolerance {tol.max():.2g}): this model computes differently under vmap "
                "(random ops, batch statistics or in-place state in forward)")
    return None


def make_evaluator(problem: Problem, directions: Directions, points_per_batch: str | int = "auto", *,
                   precision: str = "fp32", compile: bool = False, splits: list[str] | None = None,
                   verbose: bool = True, n_points: int | None = None):
    """The fastest evaluator for ``problem``: :class:`BatchedEvaluator` or :class:`PointEvaluator`.

    ``points_per_batch``: ``"auto"`` (memory cap, then a short timing probe), or K ≥ 1 (1 = per
    point). Models vmap cannot evaluate, or evaluates differently, fall back to per-point with a
    one-line notice. ``LANDSCAPE_POINTS_PER_BATCH`` in the environment overrides ``auto``. ``auto`` is
    bounded by what it can save (:func:`~landscape.autotune.probe_budget`): no probe when a point's fixed
    cost is under 2 % of its time, and at most 5 % of the estimated run over ``n_points`` points (set-up,
    check and timings together).
    """
    auto = str(points_per_batch).strip().lower() == "auto"
    if auto and os.environ.get("LANDSCAPE_POINTS_PER_BATCH"):
        points_per_batch, auto = os.environ["LANDSCAPE_POINTS_PER_BATCH"], False
    if not auto:
        try:
            k = int(points_per_batch)
            if k < 1:
                raise ValueError
        except ValueError:
            raise LandscapeError(f"--points-per-batch={points_per_batch!r}: use auto or a positive integer") from None
    per_point = PointEvaluator(problem, directions, splits, precision=precision, compile=compile)
    if not auto and k == 1:
        return per_point
    problem = per_point.problem  # (with precision="fp64": its float64 copy)
    budget = t1 = None
    start = time.perf_counter()
    if auto:
        from .autotune import PROBE_BUDGET_S, PROBE_SHARE, probe_budget

        if n_points is not None and PROBE_SHARE * n_points < 16:
            return per_point  # timing K = 4 costs ~16 points: more than the run's share, whatever a point costs
        try:
            probe = per_point.prepare(make_groups(problem, _probe_rows(per_point)))
            budget, t1, _ = probe_budget(per_point, n_points, probe)
        except Exception:  # noqa: BLE001 - inputs the probe cannot cut to 2 rows: time K as before
            budget, t1 = PROBE_BUDGET_S, None
        if t1 is not None and 4 * 4 * t1 > budget:  # not even K = 4 could be timed within what the probe may cost
            return per_point
    batched = BatchedEvaluator(problem, directions, 1 if auto else k, splits, precision=precision, compile=compile,
                               share=per_point)
    why = _check_batched(per_point, batched)
    if why is not None:
        if verbose:
            notice(f"evaluating one grid point at a time: {why} (--points-per-batch 1 skips this check)")
        return per_point
    if auto:
        k_max = max_points_per_batch(problem, batched)
        left = budget - (time.perf_counter() - start)  # the budget covers the set-up and check above too
        k, _ = choose_points_per_batch(problem, per_point, batched, k_max, left, t1) if k_max > 1 else (1, {})
        if k == 1:
            return per_point
        batched.k = k
    return batched
