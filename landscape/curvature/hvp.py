r"""Hessian- and Gauss–Newton-vector products over a whole evaluation set.

The loss is the mean over the N evaluation samples of a :class:`~landscape.problem.Problem`,
split in batches b of n_b samples whose *summed* loss is ``problem.loss_sum``:

.. math::

    L(θ) = \frac1N \sum_b \ell_b(θ), \qquad \ell_b = \sum_{i∈b} \ell(f(x_i; θ), y_i),
    \qquad H v = \sum_b \frac1N ∇^2 \ell_b(θ)\, v .

Dividing every batch's *sum* by the same N weights the batches by their sizes n_b/N (averaging
per-batch *means* with equal weights, a known bug elsewhere, would over-weight a short last batch).

:class:`HessianOperator` computes Hv by reverse-over-reverse differentiation (double backward)
with :func:`torch.func.functional_call`; :class:`GGNOperator` computes the generalized
Gauss–Newton product G v = Jᵀ H_ℓ J v (J = ∂f/∂θ, H_ℓ = ∂²ℓ/∂f²) with a JVP, the loss Hessian
with respect to the outputs, and a VJP. Both work on named parameter dicts (``matvec``) or flat
vectors (``matvec_flat``, for the iterative methods), count their products in ``matvecs``, and
give parameters that receive no gradient (unused ones) zero rows instead of failing.

Example:
    >>> import torch
    >>> from landscape.problem import make_problem
    >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=48, batch_size=20, device="cpu",
    ...                  model_args={"width": 4, "depth": 1})
    >>> H = HessianOperator(p)
    >>> v = {k: torch.ones_like(t) for k, t in p.model.named_parameters()}
    >>> Hv = H.matvec(v)
    >>> sorted(Hv) == sorted(v), H.matvecs, H.dim
    (True, 1, 310)
    >>> x, y = torch.randn(H.dim, dtype=torch.float64), torch.randn(H.dim, dtype=torch.float64)
    >>> a, b = float(y @ H.matvec_flat(x).double()), float(x @ H.matvec_flat(y).double())
    >>> abs(a - b) <= 1e-4 * max(abs(a), 1e-6)  # symmetric
    True
    >>> G = GGNOperator(p)
    >>> float(x @ G.matvec_flat(x).double()) >= 0  # positive semi-definite
    True
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import sys
import warnings
import weakref
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp
from torch.overrides import TorchFunctionMode

from ..errors import LandscapeError
from ..objective import gradient_sums, shard
from ..params import Named
from ._base import _LinearOperator, gaussian, generator

# Products of an operator built from a Problem are cached (the graph of the gradient is kept and
# every Hv is one backward pass through it) when the graph is estimated to fit in this fraction of
# the memory: physical RAM on the CPU, free memory on a GPU.
CACHE_FRACTION_CPU = 0.25
CACHE_FRACTION_GPU = 0.5

#: how :class:`HessianOperator` differentiates twice: double backward (``reverse``, its gradient graph
#: cached when it fits) or forward-over-reverse (``forward``: ``torch.func.jvp`` of ``torch.func.grad``)
HVP_METHODS = ("auto", "reverse", "forward")
#: what ``auto`` means: the faster of the two in ``benchmarks/speed/bench_hessian.py`` (HVP ÷ forward+backward,
#: MLP and ResNet-20 on the CPU: see benchmarks/README.md)
DEFAULT_HVP_METHOD = "reverse"

_STOCHASTIC_MODULES = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


def _training_modules(model: nn.Module) -> list[str]:
    """Names of dropout / BatchNorm modules in train mode (those make the loss random or batch-dependent)."""
    return [name or type(m).__name__ for name, m in model.named_modules()
            if m.training and isinstance(m, _STOCHASTIC_MODULES)]


def _memory_limit(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(CACHE_FRACTION_GPU * free)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        total = 8 * 2**30
    return int(CACHE_FRACTION_CPU * total)


class _EvalBatchNormFolded(TorchFunctionMode):
    """Runs eval-mode ``F.batch_norm`` as the affine map it is, folded into the layer before it.

    Eval-mode BatchNorm is y = x·s + t per channel with s = γ/√(σ²+ε) and t = β − μs. When x is
    the output of a convolution or a linear layer, BN(conv(x, W, b)) = conv(x, W·s, b·s + t): the
    same function of (W, b, γ, β) to rounding, but with the per-channel factors applied to the
    small weight tensors instead of the activations. Otherwise x·s + t is recorded as one
    ``addcmul``. Either way autograd records no ``native_batch_norm``, whose double backward is the
    general train-mode formula, and the Hessian's graph has far fewer activation-sized
    elementwise ops (on ResNet-20 a Hessian-vector product gets about a third cheaper). The
    original layer output is still computed once (then unused) while the graph is built.
    Batch-statistics BatchNorm (train mode, or no running statistics) is passed through unchanged.
    """

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[int, tuple] = {}

    def __exit__(self, *exc):
        self._made.clear()
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FOLDABLE:
            out = func(*args, **kwargs)
            if isinstance(out, Tensor):
                self._made[id(out)] = (weakref.ref(out), func, args, kwargs)
            return out
        if func is F.batch_norm:
            a = _BN_SIGNATURE.bind(*args, **kwargs).arguments
            if not a.get("training", False) and a.get("running_mean") is not None \
                    and a.get("running_var") is not None:
                x = a["input"]
                scale = torch.rsqrt(a["running_var"] + a.get("eps", 1e-5))
                if a.get("weight") is not None:
                    scale = scale * a["weight"]
                shift = -a["running_mean"] * scale
                if a.get("bias") is not None:
                    shift = shift + a["bias"]
                folded = self._fold(x, scale, shift)
                if folded is not None:
                    return folded
                shape = (1, -1) + (1,) * (x.ndim - 2)
                return torch.addcmul(shift.reshape(shape), x, scale.reshape(shape))
        return func(*args, **kwargs)

    def _fold(self, x: Tensor, scale: Tensor, shift: Tensor) -> Tensor | None:
        rec = self._made.get(id(x))
        if rec is None or rec[0]() is not x:
            return None
        _, f, args, kwargs = rec
        names = _FOLDABLE[f]
        c = dict(zip(names, args))
        c.update(kwargs)
        w, b = c.get("weight"), c.get("bias")
        if not isinstance(w, Tensor) or w.shape[0] != scale.shape[0] or (f is F.linear and x.ndim != 2):
            return None
        rest = {k: c[k] for k in names[3:] if k in c}
        w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        b = shift if b is None else torch.addcmul(shift, b, scale)
        return f(c["input"], w, b, **rest)


_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_FOLDABLE = {F.conv1d: _CONV_ARGS, F.conv2d: _CONV_ARGS, F.conv3d: _CONV_ARGS, F.linear: ("input", "weight", "bias")}
_BN_SIGNATURE = inspect.signature(F.batch_norm)


class _SavedBytes:
    """Counts the bytes autograd saves for backward (distinct storages) while the context is open."""

    def __init__(self) -> None:
        self.bytes = 0
        self._seen: set[int] = set()
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: Tensor) -> Tensor:
        try:
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key not in self._seen:
                self._seen.add(key)
                self.bytes += storage.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. functorch wrappers)
            self.bytes += t.numel() * t.element_size()
        # detached: a saved *output* packed as itself would reference its own grad_fn (a cycle that
        # only the garbage collector frees); autograd restores the graph metadata on unpack
        return t.detach()

    def __enter__(self) -> _SavedBytes:
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)


class _ProblemOperator(_LinearOperator):
    """Shared machinery of the Hessian and GGN operators of a Problem.

    Args:
        problem: the model (eval mode), its loss and the evaluation batches.
        params: which parameters the curvature is taken with respect to: ``None`` for every
            parameter that requires grad; a list of names (the model's current values); or a named
            dict ``{name: tensor}`` whose values are the point θ at which to evaluate (the model's
            own tensors are then not used for those names).
        cache: keep the autograd graph built by the first product and reuse it (each later
            product costs one backward pass, not a forward and two backward passes). ``None``
            decides from the measured size of the first batch's graph (see
            :data:`CACHE_FRACTION_CPU`); a cache is rebuilt when the weights change in place.
        batches: evaluate on these ``(x, y)`` batches instead of ``problem.batches``.
        world: share the batches out among ranks (:class:`~landscape.parallel.World`, or any object
            with ``rank``, ``size`` and ``allreduce_sum``): batch i is computed by rank i % size, and
            every product, gradient and loss is the float64 sum (``world.allreduce_sum``) of the
            ranks' partial sums, so each rank gets the whole result. Every rank must then make the
            same calls in the same order (they are collective); a rank without batches contributes
            zeros. ``None`` (default) or a world of size 1: one process computes every batch.
    """

    def __init__(self, problem, params: Sequence[str] | Named | None = None, cache: bool | None = None,
                 batches: Sequence[tuple[Tensor, Tensor]] | None = None, world=None):
        super().__init__()
        self.problem = problem
        self.model: nn.Module = problem.model
        named = dict(self.model.named_parameters())
        if params is None:
            source = {k: v for k, v in named.items() if v.requires_grad}
        elif isinstance(params, dict):
            unknown = [k for k in params if k not in named]
            if unknown:
                raise LandscapeError(f"params: {', '.join(unknown[:3])} are not parameters of the model")
            source = dict(params)
        else:
            unknown = [k for k in params if k not in named]
            if unknown:
                raise LandscapeError(f"params: {', '.join(unknown[:3])} are not parameters of the model")
            source = {k: named[k] for k in params}
        if not source:
            raise LandscapeError("the model has no parameters that require gradients: there is no curvature to compute")
        self._source = source
        self.names = list(source)
        self.shapes = {k: tuple(v.shape) for k, v in source.items()}
        self._numels = [v.numel() for v in source.values()]
        self._dtypes = [v.dtype for v in source.values()]
        self.dim = sum(self._numels)
        dtype = self._dtypes[0]
        for d in self._dtypes[1:]:
            dtype = torch.promote_types(dtype, d)
        self.dtype = dtype
        self.device = next(iter(source.values())).device
        self.buffers = dict(self.model.named_buffers())
        all_batches = problem.batches if batches is None else batches
        if type(all_batches).__name__ != "HostBatches":  # (streamed batches stay on the host, moved as read)
            all_batches = list(all_batches)
        if not all_batches:
            raise LandscapeError("the problem has no evaluation batches")
        self.n_samples = sum(len(x) for x, _ in all_batches)  # N of the whole set, on every rank
        self.world = world if world is not None and world.size > 1 else None
        if self.world is not None and not 0 <= self.world.rank < self.world.size:
            raise ValueError(f"world: rank {self.world.rank} is not in 0..{self.world.size - 1}")
        #: the batches this process computes (all of them without a world; batch i on rank i % size)
        self.batches = shard(all_batches, self.world)
        self.cache = cache
        self._cached: object | None = None
        self._cached_versions: tuple[int, ...] | None = None
        self.cache_bytes: int | None = None
        self.loss: float | None = None
        self._local_loss: float | None = None
        self._gradient: list[Tensor] | None = None
        self._grad_versions: tuple[int, ...] | None = None
        self._leaves: list[Tensor] = []
        if self.model.training:
            stoch = _training_modules(self.model)
            warnings.warn(
                "the model is in train mode" + (f" ({', '.join(stoch[:3])} ...)" if stoch else "")
                + ": curvature is defined for the eval-mode model (dropout off, BatchNorm on running "
                "statistics); call model.eval() first", stacklevel=3)

    # ------------------------------------------------------------------ vectors
    def leaves(self) -> list[Tensor]:
        """Detached leaves sharing storage (and version counters) with the parameters, requiring grad."""
        return [v.detach().requires_grad_(True) for v in self._source.values()]

    def unflatten(self, vec: Tensor) -> Named:
        """A flat vector as a named dict shaped (and typed) like the parameters."""
        if vec.numel() != self.dim:
            raise ValueError(f"vector has {vec.numel()} entries, expected {self.dim}")
        out, i = {}, 0
        for (k, shape), n, dt in zip(self.shapes.items(), self._numels, self._dtypes):
            out[k] = vec[i: i + n].reshape(shape).to(device=self.device, dtype=dt)
            i += n
        return out

    def flatten(self, named: Named) -> Tensor:
        return torch.cat([named[k].reshape(-1).to(self.dtype) for k in self.names])

    def _as_list(self, v: Named) -> list[Tensor]:
        extra = [k for k in v if k not in self.shapes]
        if extra:
            raise LandscapeError(f"vector has entries {', '.join(extra[:3])} that are not among the operator's "
                                 "parameters")
        out = []
        for k, dt in zip(self.names, self._dtypes):
            if k in v:
                t = v[k]
                if tuple(t.shape) != self.shapes[k]:
                    raise LandscapeError(f"vector entry {k} has shape {tuple(t.shape)}, expected {self.shapes[k]}")
                out.append(t.detach().to(device=self.device, dtype=dt))
            else:  # a missing entry is a zero block
                out.append(torch.zeros(self.shapes[k], device=self.device, dtype=dt))
        return out

    def _to_named(self, ts: Sequence[Tensor | None]) -> Named:
        return {k: (torch.zeros(self.shapes[k], device=self.device, dtype=dt) if t is None else t.detach())
                for k, t, dt in zip(self.names, ts, self._dtypes)}

    # ------------------------------------------------------------------ products
    def matvec(self, v: Named) -> Named:
        """The product with a parameter-shaped named dict (missing entries count as zeros)."""
        self.matvecs += 1
        return self._to_named(self._reduced(self._product(self._as_list(v), fresh=False)))

    def _matvec_flat(self, x: Tensor) -> Tensor:
        vs = list(self.unflatten(x).values())
        return torch.cat([t.reshape(-1).to(self.dtype)
                          for t in self._to_named(self._reduced(self._product(vs, False))).values()])

    def fresh_matvec_flat(self, x: Tensor) -> Tensor:
        """``matvec_flat`` recomputed from scratch (no cached graph): what :func:`check_deterministic` compares."""
        self.matvecs += 1
        vs = list(self.unflatten(x.to(self.device, self.dtype)).values())
        return torch.cat([t.reshape(-1).to(self.dtype)
                          for t in self._to_named(self._reduced(self._product(vs, True))).values()])

    def _product(self, v: list[Tensor], fresh: bool) -> list[Tensor | None]:
        """This process's part of the product: the sum over ``self.batches`` (all of them without a world)."""
        raise NotImplementedError

    def _reduced(self, parts: Sequence[Tensor | None]) -> list[Tensor | None]:
        """The sum over ranks of every rank's partial product (float64, one allreduce); unchanged without a world.

        ``None`` (no gradient reached that parameter on this rank, or no batches at all) counts as zeros.
        """
        if self.world is None:
            return list(parts)
        flat = torch.cat([torch.zeros(n, dtype=torch.float64, device=self.device) if t is None
                          else t.detach().reshape(-1).to(torch.float64) for t, n in zip(parts, self._numels)])
        return self._split(self.world.allreduce_sum(flat))

    def _split(self, flat: Tensor) -> list[Tensor]:
        out, i = [], 0
        for shape, n, dt in zip(self.shapes.values(), self._numels, self._dtypes):
            out.append(flat[i: i + n].reshape(shape).to(device=self.device, dtype=dt))
            i += n
        return out

    # ------------------------------------------------------------------ cache bookkeeping
    def _versions(self) -> tuple[int, ...]:
        return tuple(t._version for t in (*self._source.values(), *self.buffers.values()))

    def _cache_valid(self) -> bool:
        return self._cached is not None and self._cached_versions == self._versions()

    def clear_cache(self) -> None:
        """Drop the cached graph (frees its memory; the next product rebuilds it)."""
        self._cached = None
        self._cached_versions = None

    def _decide_cache(self, first_batch_bytes: int) -> bool:
        """Cache when the whole graph (first batch × number of batches) fits the memory budget.

        With a world, the graph of this rank's own batches: ranks may decide differently (a
        product costs the same collectives either way)."""
        n_first = len(self.batches[0][0])
        n_here = sum(len(x) for x, _ in self.batches)
        estimate = first_batch_bytes * math.ceil(n_here / max(n_first, 1))
        self.cache_bytes = estimate
        if self.cache is not None:
            return bool(self.cache)
        return estimate <= _memory_limit(self.device)

    def _batch_loss(self, leaves: list[Tensor], x: Tensor, y: Tensor) -> Tensor:
        """ℓ_b(θ)/N: batch b's summed loss over the N samples of the whole set."""
        return self.problem.loss_sum(self._forward(leaves, x), y) / self.n_samples

    def _forward(self, leaves: list[Tensor], x: Tensor) -> Tensor:
        out = functional_call(self.model, ({**self.buffers, **dict(zip(self.names, leaves))},), (x,))
        if not isinstance(out, Tensor):
            raise LandscapeError(f"the model returned {type(out).__name__}; curvature needs a tensor of outputs")
        return out

    def _ensure_cache(self, fresh: bool) -> bool:
        """Whether to answer from the cached graph, (re)building it when needed."""
        if fresh or self.cache is False:
            return False
        if self._cache_valid():
            return True
        built = self._build()
        if built is None:  # measured: it would not fit; every product recomputes from now on
            self.cache = False
            self._cached = None
            return False
        self.cache = True
        self._cached, self._cached_versions = built, self._versions()
        return True

    def _build(self) -> object | None:
        raise NotImplementedError

    # ------------------------------------------------------------------ by-products
    def _set_gradient(self, grads: list[Tensor], loss: float) -> None:
        """This process's sums (over ``self.batches``); with a world, :meth:`gradient` adds up the ranks'."""
        self._gradient, self._local_loss, self._grad_versions = grads, loss, self._versions()
        if self.world is None:
            self.loss = loss

    def gradient(self) -> Named:
        """∇L(θ): a by-product of the Hessian's products (else one forward+backward per batch).

        With a world this is collective (one allreduce of the gradient and the loss): call it on every rank.
        """
        if self._gradient is None or self._grad_versions != self._versions():
            leaves = self.leaves()
            grads = [torch.zeros_like(t) for t in leaves]
            self._set_gradient(grads, gradient_sums(self._batch_loss, leaves, self.batches, grads))
        assert self._gradient is not None
        if self.world is None:
            return self._to_named(self._gradient)
        flat = torch.cat([*(g.detach().reshape(-1).to(torch.float64) for g in self._gradient),
                          torch.tensor([self._local_loss], dtype=torch.float64, device=self.device)])
        flat = self.world.allreduce_sum(flat)
        self.loss = float(flat[-1])
        return self._to_named(self._split(flat[:-1]))

    def value(self) -> float:
        """L(θ), the mean loss over the evaluation set (collective with a world, like :meth:`gradient`)."""
        self.gradient()
        assert self.loss is not None
        return self.loss


class HessianOperator(_ProblemOperator):
    r"""v ↦ H v with H = ∇²L(θ), L the mean loss over the problem's evaluation set.

    Implementation choice (measured on CPU, torch 2.13, the zoo MLP on 512 digits): reverse-over-
    reverse (``autograd.grad`` with ``create_graph=True``, then a second ``autograd.grad``) costs
    ≈3× a forward+backward per product, forward-over-reverse (``torch.func.jvp(torch.func.grad(f))``)
    ≈15–30×: functorch's per-call transform overhead and dual-tensor kernels dominate on the CPU.
    Reverse-over-reverse has a second advantage: the graph of g(θ) = ∇L can be *kept*, and then
    every product H v = ∇_θ(g·v) is a single backward pass through it, with g and L as free
    by-products. That cache is used when it fits in memory (``cache``). Measured by
    ``benchmarks/speed/bench_hessian.py`` (N = 512/1024 digits, one batch or batches of 128): a cached
    product costs 1.2–1.5× a forward+backward on the MLP and 1.7–2.0× on ResNet-20, whose
    convolutions need ≈6 convolution-sized passes per product against 3 for forward+backward
    (eval-mode BatchNorm is folded into the convolutions for this, see ``_EvalBatchNormFolded``).
    Examples: the module docstring.
    """

    def __init__(self, problem, params: Sequence[str] | Named | None = None, cache: bool | None = None,
                 batches: Sequence[tuple[Tensor, Tensor]] | None = None, world=None, method: str = "auto"):
        super().__init__(problem, params=params, cache=cache, batches=batches, world=world)
        if method not in HVP_METHODS:
            raise LandscapeError(f"hvp method must be one of {', '.join(HVP_METHODS)}, got {method!r}")
        #: ``reverse`` (double backward) or ``forward`` (forward-over-reverse); ``auto`` resolves to the
        #: measured faster one, :data:`DEFAULT_HVP_METHOD`
        self.method = DEFAULT_HVP_METHOD if method == "auto" else method
        self._forward_probed = False

    def _forward(self, leaves: list[Tensor], x: Tensor) -> Tensor:
        with _EvalBatchNormFolded():
            return super()._forward(leaves, x)

    def _product(self, v: list[Tensor], fresh: bool) -> list[Tensor | None]:
        if self.method == "forward":
            if self._forward_probed:
                return self._forward_over_reverse(v)
            try:  # the probe: the first product, on the real batches
                out = self._forward_over_reverse(v)
                self._forward_probed = True
                return out
            except Exception as e:  # noqa: BLE001 - any model functorch cannot transform falls back
                print(f"landscape: forward-over-reverse Hessian-vector products failed for this model "
                       f"({type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}); "
                       "using double backward", file=sys.stderr, flush=True)
                self.method = "reverse"
        if self._ensure_cache(fresh):
            return self._cached_product(v)
        return self._recomputed_product(v)

    def _forward_over_reverse(self, v: list[Tensor]) -> list[Tensor | None]:
        """Σ_b (1/N) ∇²ℓ_b v as ``jvp(grad(ℓ_b/N), θ, v)``: one forward pass carrying dual numbers and one
        backward pass of those, per batch; no graph is kept between products (nothing to cache)."""
        primals = tuple(t.detach() for t in self._source.values())
        tangents = tuple(v)
        argnums = tuple(range(len(primals)))
        out: list[Tensor | None] = [None] * len(primals)
        loss_value, grads_sum = 0.0, [torch.zeros_like(t) for t in primals]
        for x, y in self.batches:
            def batch_loss(*ps: Tensor, x=x, y=y) -> tuple[Tensor, Tensor]:
                loss = self._batch_loss(list(ps), x, y)
                return loss, loss.detach()

            def gradient(*ps: Tensor) -> tuple[tuple[Tensor, ...], Tensor]:
                return grad(batch_loss, argnums=argnums, has_aux=True)(*ps)

            gs, hv, loss = jvp(gradient, primals, tangents, has_aux=True)
            loss_value += float(loss)
            for i, (g, h) in enumerate(zip(gs, hv)):
                grads_sum[i].add_(g.detach())
                out[i] = h.detach() if out[i] is None else out[i].add_(h.detach())
        self._set_gradient(grads_sum, loss_value)
        return out

    def _build(self) -> list[Tensor] | None:
        """Graph of ∇L over all batches (summed), or None when it would not fit (then products recompute)."""
        leaves = self.leaves()
        total: list[Tensor | None] = [None] * len(leaves)
        loss_value = 0.0
        grads_sum = [torch.zeros_like(t) for t in leaves]
        for b, (x, y) in enumerate(self.batches):
            counter = _SavedBytes()
            with counter if b == 0 else contextlib.nullcontext():
                loss = self._batch_loss(leaves, x, y)
                gs = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
            if b == 0 and not self._decide_cache(counter.bytes):
                return None
            loss_value += float(loss.detach())
            for i, g in enumerate(gs):
                if g is None:
                    continue
                grads_sum[i].add_(g.detach())
                if g.requires_grad:
                    total[i] = g if total[i] is None else total[i] + g
        self._set_gradient(grads_sum, loss_value)
        self._leaves = leaves
        return total  # type: ignore[return-value]

    def _cached_product(self, v: list[Tensor]) -> list[Tensor | None]:
        total: list[Tensor | None] = self._cached  # type: ignore[assignment]
        idx = [i for i, g in enumerate(total) if g is not None]
        if not idx:  # the gradient does not depend on θ: H = 0
            return [None] * len(v)
        return list(torch.autograd.grad([total[i] for i in idx], self._leaves, [v[i] for i in idx],
                                        retain_graph=True, allow_unused=True))

    def _recomputed_product(self, v: list[Tensor]) -> list[Tensor | None]:
        leaves = self.leaves()
        out: list[Tensor | None] = [None] * len(leaves)
        loss_value, grads_sum = 0.0, [torch.zeros_like(t) for t in leaves]
        for x, y in self.batches:
            loss = self._batch_loss(leaves, x, y)
            gs = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
            loss_value += float(loss.detach())
            for i, g in enumerate(gs):
                if g is not None:
                    grads_sum[i].add_(g.detach())
            idx = [i for i, g in enumerate(gs) if g is not None and g.requires_grad]
            if not idx:
                continue
            hv = torch.autograd.grad([gs[i] for i in idx], leaves, [v[i] for i in idx], allow_unused=True)
            accumulate(out, hv)
        self._set_gradient(grads_sum, loss_value)
        return out


class GGNOperator(_ProblemOperator):
    r"""v ↦ G v with the generalized Gauss–Newton matrix G = Σ_b (1/N) J_bᵀ H_ℓ,b J_b.

    J_b = ∂f(x_b; θ)/∂θ is the Jacobian of the model's outputs on batch b and H_ℓ,b = ∂²ℓ_b/∂f²
    the Hessian of the summed loss with respect to those outputs (block diagonal over samples;
    ``diag(p) − ppᵀ`` per sample for cross-entropy, 2/C·I for the mean-squared error over C outputs).
    G is positive semi-definite and equals H minus the term Σᵢ (∂ℓ/∂fᵢ) ∇²fᵢ. Each product is a JVP
    (``torch.func.jvp``, forward mode) for J v, a Hessian-vector product of the loss in output space,
    and a VJP (reverse mode) for Jᵀ(·). With ``cache`` the forward graphs of the VJPs are kept.
    Examples: the module docstring.
    """

    def _build(self) -> list[tuple[Tensor, Tensor]] | None:
        leaves = self.leaves()
        outs = []
        for b, (x, _) in enumerate(self.batches):
            counter = _SavedBytes()
            with counter if b == 0 else contextlib.nullcontext():
                out = self._forward(leaves, x)
            if b == 0 and not self._decide_cache(counter.bytes):
                return None
            outs.append(out)
        self._leaves = leaves
        return outs  # type: ignore[return-value]

    def _loss_hvp(self, out: Tensor, y: Tensor, u: Tensor) -> Tensor:
        """H_ℓ u for the summed batch loss / N: closed forms for the built-in losses, else double backward."""
        loss_name = getattr(self.problem, "loss", None)
        fn = getattr(self.problem, "loss_fn", None)
        if fn is not None and fn.shift:
            loss_name = None  # (the closed forms are for unshifted outputs)
        # (B, C) with class indices only: sequence outputs average each example's tokens, see landscape.losses
        if loss_name == "cross_entropy" and out.ndim == 2 and y.ndim == 1 and not y.is_floating_point():
            p = torch.softmax(out.detach(), dim=1)  # per sample: (diag(p) − ppᵀ) u
            return (p * u - p * (p * u).sum(dim=1, keepdim=True)) / self.n_samples
        if loss_name == "mse" and out.ndim >= 1 and out.shape[0]:
            per_example = out[0].numel()  # mean over the entries of one example's output
            return u * (2.0 / (per_example * self.n_samples))
        o = out.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = self.problem.loss_sum(o, y) / self.n_samples
            (g,) = torch.autograd.grad(loss, o, create_graph=True)
            if not g.requires_grad:  # loss linear in the outputs
                return torch.zeros_like(u)
            (h,) = torch.autograd.grad(g, o, u)
        return h

    def _jvp(self, x: Tensor, v: list[Tensor]) -> tuple[Tensor, Tensor]:
        primals = tuple(t.detach() for t in self._source.values())

        def f(*ps: Tensor) -> Tensor:
            return self._forward(list(ps), x)

        return quiet_jvp(f, primals, tuple(v))

    def _product(self, v: list[Tensor], fresh: bool) -> list[Tensor | None]:
        cached = self._cached if self._ensure_cache(fresh) else None
        out_acc: list[Tensor | None] = [None] * len(v)
        for b, (x, y) in enumerate(self.batches):
            out_b, jv = self._jvp(x, v)
            hjv = self._loss_hvp(out_b, y, jv)
            if cached is not None:
                out, leaves, keep = cached[b], self._leaves, True  # type: ignore[index]
            else:
                leaves = self.leaves()
                out, keep = self._forward(leaves, x), False
            gs = torch.autograd.grad(out, leaves, hjv, retain_graph=keep, allow_unused=True)
            accumulate(out_acc, gs)
        return out_acc


def accumulate(out: list[Tensor | None], parts: Sequence[Tensor | None]) -> None:
    """``out[i] += parts[i]`` in place, per parameter, over batches (``None``: nothing reached it yet)."""
    for i, t in enumerate(parts):
        if t is not None:
            out[i] = t if out[i] is None else out[i].add_(t)


def quiet_jvp(f, primals: tuple[Tensor, ...], tangents: tuple[Tensor, ...]):
    """``torch.func.jvp(f, primals, tangents)`` without the deprecation warning torch's first forward-AD call
    gives (it scripts its decompositions with the deprecated jit)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
        return jvp(f, primals, tangents)


def hvp(problem, v: Named, params: Sequence[str] | Named | None = None) -> Named:
    """H v for one parameter-shaped vector ``v`` (entries missing from ``v`` count as zeros).

    One product, so nothing is cached: a forward and two backward passes per batch. Build a
    :class:`HessianOperator` once for many products.

    Example:
        >>> import torch
        >>> from landscape.problem import make_problem
        >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=16, device="cpu",
        ...                  model_args={"width": 4, "depth": 1})
        >>> Hv = hvp(p, {"1.bias": torch.ones(4)})
        >>> tuple(Hv["1.weight"].shape)
        (4, 64)
    """
    return HessianOperator(problem, params=params, cache=False).matvec(v)


def check_deterministic(op, seed: int = 0, rtol: float | None = None) -> float:
    """Two products with the same random vector must agree; returns their relative difference.

    Raises :class:`~landscape.errors.LandscapeError` when they differ by more than ``rtol``
    (default 1e-4 in float32, 1e-8 in float64: room for non-deterministic GPU reductions, far below
    what a random dropout mask does), and for a Problem operator also when BatchNorm layers are in
    train mode (deterministic, but the curvature would then depend on how the data are batched and
    the running statistics would be overwritten). A Problem operator recomputes both products from
    scratch, so a cached graph cannot hide a random mask.
    """
    x = gaussian(op.dim, generator(seed), op.device).to(op.dtype)
    model = getattr(op, "model", None)
    fresh = getattr(op, "fresh_matvec_flat", op.matvec_flat)
    a, b = fresh(x).double(), fresh(x).double()
    diff = float((a - b).norm() / a.norm().clamp_min(torch.finfo(torch.float64).tiny))
    if rtol is None:
        rtol = 1e-8 if op.dtype == torch.float64 else 1e-4
    train = _training_modules(model) if isinstance(model, nn.Module) else []
    if not (diff <= rtol):  # NaN fails too
        cause = (f"modules in train mode: {', '.join(train[:4])}" if train else
                 "most likely dropout or BatchNorm in train mode, or a random layer")
        raise LandscapeError(f"two curvature-vector products of the same vector differ by {diff:.2e} (relative, "
                             f"tolerance {rtol:.0e}): the loss is not deterministic ({cause}); call model.eval()")
    bn_train = [n for n, m in model.named_modules() if m.training and isinstance(m, nn.modules.batchnorm._BatchNorm)
                ] if isinstance(model, nn.Module) else []
    if bn_train:
        raise LandscapeError(f"BatchNorm in train mode ({', '.join(bn_train[:4])}): the curvature would depend on "
                             "how the data are batched and the running statistics would be overwritten; "
                             "call model.eval()")
    return diff


def check_deterministic_loss(op, rtol: float | None = None) -> float:
    """Two forward passes of the loss must agree; returns their relative difference (:func:`check_deterministic`'s
    verdict and messages, for two forward passes instead of two products).

    Random layers, dropout and train-mode BatchNorm all act in the forward pass, so they show in the loss
    itself; the backward passes of a product add at most the reduction-order noise of GPU atomics, which
    the product check tolerated anyway. Two forward passes without a graph cost about a tenth of the two
    uncached products :func:`check_deterministic` spends (8.3 s on ResNet-20 with 512 images), and the
    products the command needs stay its only products. With a world the two losses are summed over the
    ranks (one allreduce), so every rank reaches the same verdict.
    """
    model = op.model
    leaves = [v.detach() for v in op.leaves()]
    local = torch.zeros(2, dtype=torch.float64, device=op.device)
    with torch.no_grad():
        for i in range(2):
            for x, y in op.batches:
                local[i] += op.problem.loss_sum(op._forward(leaves, x), y).to(torch.float64)
    both = op.world.allreduce_sum(local) if op.world is not None else local
    a, b = float(both[0]), float(both[1])
    diff = abs(a - b) / max(abs(a), torch.finfo(torch.float64).tiny)
    if rtol is None:
        rtol = 1e-8 if op.dtype == torch.float64 else 1e-5
    if not (diff <= rtol):  # NaN fails too
        train = _training_modules(model)
        cause = (f"modules in train mode: {', '.join(train[:4])}" if train else
                 "most likely dropout or BatchNorm in train mode, or a random layer")
        raise LandscapeError(f"two evaluations of the loss at the same weights differ by {diff:.2e} (relative, "
                             f"tolerance {rtol:.0e}): the loss is not deterministic ({cause}); call model.eval()")
    bn_train = [n for n, m in model.named_modules() if m.training and isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if bn_train:
        raise LandscapeError(f"BatchNorm in train mode ({', '.join(bn_train[:4])}): the curvature would depend on "
                             "how the data are batched and the running statistics would be overwritten; "
                             "call model.eval()")
    return diff
