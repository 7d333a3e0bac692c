r"""K grid points through a sequential chain of ``Linear`` layers as batched matrix products (no ``vmap``).

The batched evaluator's fast path for the most common small model: an ``nn.Sequential`` MLP whose
first layer is folded (:class:`landscape.evaluate.fold.InputFold`) and whose remaining modules are
``Linear`` layers, elementwise activations, ``Dropout``/``Identity`` in eval mode and
``BatchNorm1d`` in eval mode, with the built-in cross-entropy on class-index targets. On a CPU,
``vmap`` over ``functional_call`` turns each ``Linear`` into ``bmm`` plus a separate bias pass and
reduces the logits along their short last axis; for a small MLP that costs more than the matrix
products themselves. Here the K points run in a feature-major layout, ``(K, features, rows)``:

* **biases inside the product**: every activation carries a last row of ones and every ``Linear``
  an augmented weight :math:`\begin{pmatrix} W & b \\ 0 & 1 \end{pmatrix}`, so a layer is one
  ``bmm`` (the ones row passes through ``ReLU`` unchanged; other activations get it written back);
* **weights of K points in one product**: the augmented weights of the centre and of each direction
  are stacked once, :math:`S = [\tilde W_\theta; \tilde W_{d_1}; \dots]`, and the K points' weights are
  ``C @ S`` with ``C = [1, c]`` the points' coefficients (the corner 1 stays exactly 1);
* **the loss along the long axis**: logits are ``(K, classes, rows)``, so the max and the
  log-sum-exp reduce over a short strided axis with the rows vectorised, and the target logits are
  one ``index_select``; the logits come in base 2 (the last layer's weights times
  :math:`\log_2 e`, so the log-sum-exp uses ``exp2``, about twice as fast as ``exp``), and the
  prediction is the first index of the maximum (``argmax``'s rule), found without ``argmax``;
* **no allocation per layer**: two activation buffers used in turn, kept from call to call.

The loss is :mod:`landscape.kernels`' stable form, (m − z_t)·ln 2 + log1p(off-maximum mass) per
sample (in base 2 here), summed in float64, so it is exact relative to each sample's loss also at a
trained minimum; the off-maximum terms are masked with ``sign(z − m)`` (a float mask: a bool mask and
``masked_fill`` cost 3× the whole log-sum-exp on a CPU). The chain runs in the fold's dtype (float32,
or float64 for float64 models and ``precision="fp64"``). Same numbers as the per-point path to float
rounding (about 1e-7 relative; each call holds K points, so a point's value does not depend on which
other points share its call).

Example:
    >>> import torch
    >>> from landscape.problem import make_problem
    >>> from landscape.directions import make_random_directions
    >>> from landscape.evaluate import BatchedEvaluator, PointEvaluator
    >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=64, device="cpu")
    >>> d = make_random_directions(p.model, 2, seed=0)
    >>> ev = BatchedEvaluator(p, d, 4)
    >>> ev.chain is not None
    True
    >>> c = torch.tensor([[0.0, 0.0], [0.5, -0.5]]).numpy()
    >>> bool(abs(ev(c)["train_loss"] - PointEvaluator(p, d)(c)["train_loss"]).max() < 1e-5)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..kernels import exp_floor

#: parameter-free modules that act on each entry alone (so the feature-major layout does not matter)
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
               nn.Sigmoid, nn.Softplus, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.LogSigmoid, nn.Softsign,
               nn.Tanhshrink)
#: identities in eval mode
PASS_THROUGH = (nn.Identity, nn.Dropout, nn.AlphaDropout)


@dataclass
class _Linear:
    stack: Tensor  # (1 + ndim, out (+1 for the ones row), in + 1): augmented weights of the centre and directions


@dataclass
class _Elementwise:
    fn: nn.Module
    in_place_relu: bool  # torch.relu_ (no allocation)
    restore_ones: bool  # fn(1) != 1: write the ones row back afterwards


@dataclass
class _BatchNorm:
    stack: Tensor  # (1 + ndim, 4, features): weight, bias, running mean, running variance
    eps: float


#: a chunk of the evaluation data: the first layer's stack (1 + ndim, features (+ ones), rows), the
#: targets' positions in the flattened (classes, rows) logits (int64), classes - target (rows,), and 0
#: for the classes before the target, -inf from it on (classes, rows) (the chain's dtype)
Chunk = tuple[Tensor, Tensor, Tensor, Tensor]
LOG2E = math.log2(math.e)
LN2 = math.log(2.0)


class LinearChain:
    """The body of a folded sequential MLP as batched matrix products over K points; see the module doc.

    Build with :meth:`build` (None where the model is not such a chain); :meth:`layout` turns a
    split's groups into feature-major row chunks (cached per groups object and chunk size);
    :meth:`run` returns the K points' summed loss and correct counts.
    """

    def __init__(self, steps: list, ones_row: bool, classes: int, dtype: torch.dtype = torch.float32):
        self.steps = steps
        self.dtype = dtype
        self.ones_row = ones_row  # the activations carry a ones row (some Linear follows the fold)
        self.classes = classes
        # logits in base 2 (the last Linear's weights times log2 e) when nothing follows that Linear
        self.base2 = bool(steps) and isinstance(steps[-1], _Linear)
        if self.base2:
            steps[-1] = _Linear(steps[-1].stack * LOG2E)
        self._floor = exp_floor(dtype) * (LOG2E if self.base2 else 1.0)  # no denormals, nothing lost
        self._layouts: dict[tuple[int, int], tuple[object, list[Chunk]]] = {}
        self._buffers: dict[str, Tensor] = {}  # activations and loss temporaries, reused by every call

    # ----------------------------------------------------------------- construction
    @classmethod
    def build(cls, fold, directions, classes: int) -> LinearChain | None:
        """The chain for ``fold.body`` (an :class:`~landscape.evaluate.fold.InputFold`'s), or None if unsupported.

        Supported: a first layer that is an ``nn.Linear`` on flat inputs, then ``Linear`` (plain
        ``forward``), :data:`ELEMENTWISE` activations, :data:`PASS_THROUGH` modules and
        ``BatchNorm1d`` with running statistics, all in eval mode, float32 or float64 (the fold's dtype).
        """
        if fold is None or classes < 1 or type(fold.layer) is not nn.Linear or \
                fold.dtype not in (torch.float32, torch.float64):
            return None
        dtype = fold.dtype
        modules = list(fold.body.children())
        if any(m.training for m in modules):
            return None  # (Dropout and BatchNorm are identities / fixed affine maps only in eval mode)
        center, vectors = directions.center, directions.vectors
        ones_row = any(type(m) is nn.Linear for m in modules)
        has_ones = ones_row
        remaining_linear = sum(type(m) is nn.Linear for m in modules)
        features = fold.layer.out_features
        steps: list = []

        used = set(fold.names)

        def tensors(name: str, module: nn.Module, what: str) -> list[Tensor | None]:
            """``name.what`` at the centre and along each direction (zero where a direction does not move it)."""
            own = getattr(module, what)
            if own is None:
                return [None] * (1 + len(vectors))
            key = f"{name}.{what}"  # (the body keeps the model's child names)
            used.add(key)
            return [center.get(key, own.detach())] + [v.get(key, torch.zeros_like(own)) for v in vectors]

        for name, m in fold.body.named_children():
            if type(m) is nn.Linear:
                if m.in_features != features:
                    return None
                remaining_linear -= 1
                keep = remaining_linear > 0  # every Linear but the last passes the ones row on
                ws, bs = tensors(name, m, "weight"), tensors(name, m, "bias")
                stack = torch.zeros((len(ws), m.out_features + keep, m.in_features + 1), dtype=dtype,
                                    device=ws[0].device)
                for j, (w, b) in enumerate(zip(ws, bs)):
                    stack[j, :m.out_features, :-1] = w
                    if b is not None:
                        stack[j, :m.out_features, -1] = b
                if keep:
                    stack[0, -1, -1] = 1.0  # the centre's corner: C @ S gives 1·1 + Σ cᵢ·0 = 1 exactly
                steps.append(_Linear(stack))
                has_ones, features = keep, m.out_features
            elif type(m) in ELEMENTWISE:
                with torch.no_grad():
                    keeps_one = bool(m(torch.ones(1, dtype=dtype)) == 1.0)
                steps.append(_Elementwise(m, type(m) is nn.ReLU, has_ones and not keeps_one))
            elif type(m) in PASS_THROUGH:
                continue
            elif type(m) is nn.BatchNorm1d and m.running_mean is not None and m.num_features == features:
                parts = [tensors(name, m, w) for w in ("weight", "bias", "running_mean", "running_var")]
                stack = torch.zeros((1 + len(vectors), 4, features), dtype=dtype,
                                    device=parts[2][0].device)
                stack[0, 0] = 1.0  # without affine parameters: weight 1, bias 0
                for i, part in enumerate(parts):
                    for j, t in enumerate(part):
                        if t is not None:
                            stack[j, i] = t
                steps.append(_BatchNorm(stack, float(m.eps)))
            else:
                return None
        if features != classes:
            return None
        if any(bool(torch.any(v[key] != 0)) for key in center if key not in used for v in vectors):
            return None  # a direction moves a tensor the chain does not read
        return cls(steps, ones_row, classes, dtype)

    # ----------------------------------------------------------------- data layout
    def layout(self, groups: list, rows: int) -> list[Chunk]:
        """Feature-major chunks of at most ``rows`` samples (all rows if 0) of prepared groups, cached.

        ``groups``: the fold's prepared groups ``([stack (1 + ndim, n, features)], y, onehot)``.
        The cache keeps a reference to ``groups``, so its ``id`` stays unique while cached.
        """
        key = (id(groups), rows)
        hit = self._layouts.get(key)
        if hit is not None:
            return hit[1]
        chunks: list[Chunk] = []
        for zs, y, _ in groups:
            classes = torch.arange(self.classes, device=y.device).view(-1, 1)
            z = zs[0] if len(zs) == 1 else torch.cat(zs, 1)
            n = z.shape[1]
            step = rows or max(n, 1)
            for lo in range(0, n, step):
                hi = min(n, lo + step)
                part = z[:, lo:hi].transpose(1, 2)
                if self.ones_row:
                    block = torch.zeros((z.shape[0], z.shape[2] + 1, hi - lo), dtype=z.dtype, device=z.device)
                    block[:, :-1] = part
                    block[0, -1] = 1.0
                else:
                    block = part.contiguous()
                yc = y[lo:hi].long()
                flat = yc * (hi - lo) + torch.arange(hi - lo, device=y.device)  # of (classes, rows) flattened
                yw = (self.classes - yc).to(self.dtype)
                before = torch.where(classes < yc.view(1, -1), 0.0, float("-inf")).to(self.dtype)
                chunks.append((block, flat, yw, before))
        self._layouts[key] = (groups, chunks)
        return chunks

    def release(self, keep: set[tuple[int, int]] = frozenset()) -> None:
        """Drop the cached layouts except those keyed ``(id(groups), rows)`` in ``keep``."""
        for key in [k for k in self._layouts if k not in keep]:
            del self._layouts[key]

    # ----------------------------------------------------------------- evaluation
    def _weights(self, cf: Tensor) -> list:
        """Per step: the K points' augmented weights (K, out, in), or BatchNorm's (scale, shift) (K, n, 1)."""
        k = len(cf)
        out = []
        for s in self.steps:
            if isinstance(s, _Linear):
                out.append((cf @ s.stack.reshape(len(s.stack), -1)).view(k, *s.stack.shape[1:]))
            elif isinstance(s, _BatchNorm):
                w, b, mean, var = (cf @ s.stack.reshape(len(s.stack), -1)).view(k, 4, -1, 1).unbind(1)
                scale = w / torch.sqrt(var + s.eps)
                out.append((scale, b - mean * scale))
            else:
                out.append(None)
        return out

    def run(self, coeffs: Tensor, chunks: list[Chunk]) -> tuple[Tensor, Tensor]:
        """Summed cross-entropy (K,) float64 and correct counts (K,) int64 of the points ``coeffs`` (K, ndim)."""
        with torch.inference_mode():
            total, correct = self._run(coeffs, chunks, nan_aware=False)
            # A NaN logit is the maximum for max/argmax; the fast pass ignores that. A NaN logit makes the
            # loss NaN, so only such groups (one host read per K points) are run again with the exact rule.
            if bool(torch.isnan(total).any()):
                total, correct = self._run(coeffs, chunks, nan_aware=True)
        return total, correct

    def _buffer(self, name: str, numel: int, device: torch.device) -> Tensor:
        """A buffer of at least ``numel`` entries in the chain's dtype, kept from call to call (no fresh pages)."""
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.device != device:
            buf = self._buffers[name] = torch.empty(numel, dtype=self.dtype, device=device)
        return buf

    def _run(self, coeffs: Tensor, chunks: list[Chunk], nan_aware: bool) -> tuple[Tensor, Tensor]:
        k = len(coeffs)
        dev = coeffs.device
        cf = torch.cat([torch.ones((k, 1), dtype=torch.float64, device=dev), coeffs], 1).to(self.dtype)
        weights = self._weights(cf)
        total = torch.zeros(k, dtype=torch.float64, device=dev)
        correct = torch.zeros(k, dtype=torch.int64, device=dev)
        if nan_aware:  # (classes - index) per class, for the first index of the maximum
            rank = torch.arange(self.classes, 0, -1, dtype=self.dtype, device=dev).view(1, -1, 1)
        if not chunks:
            return total, correct
        # Two activation buffers used in turn and one for the loss's temporaries, reused by every chunk:
        # the same memory stays in the cache, instead of fresh allocations per layer and chunk.
        rows = max(z.shape[-1] for z, *_ in chunks)
        width = max([chunks[0][0].shape[1]] + [w.shape[1] for s, w in zip(self.steps, weights)
                                               if isinstance(s, _Linear)])
        buffers = [self._buffer(f"activations{i}", k * width * rows, dev) for i in range(2)]
        scratch = self._buffer("scratch", k * self.classes * rows, dev)
        sign_buf = self._buffer("sign", k * self.classes * rows, dev)

        def view(flat: Tensor, features: int, r: int) -> Tensor:
            return flat[:k * features * r].view(k, features, r)

        for z, flat, yw, before in chunks:
            r = z.shape[-1]
            a = view(buffers[0], z.shape[1], r)
            torch.mm(cf, z.reshape(len(z), -1), out=a.view(k, -1))
            held = 0  # the buffer holding a (None: a fresh tensor)
            for s, w in zip(self.steps, weights):
                if isinstance(s, _Linear):
                    target = 1 if held == 0 else 0
                    a = torch.bmm(w, a, out=view(buffers[target], w.shape[1], r))
                    held = target
                elif isinstance(s, _Elementwise):
                    if s.in_place_relu:
                        torch.relu_(a)
                    else:
                        out = s.fn(a)
                        if out.data_ptr() != a.data_ptr():  # (a module with inplace=True keeps the buffer)
                            a, held = out, None
                    if s.restore_ones:
                        a[:, -1].fill_(1.0)
                else:
                    scale, shift = w
                    body = a[:, :scale.shape[1]]
                    body.mul_(scale).add_(shift)
            # a: (K, classes, r) logits
            m = a.amax(1)
            tmp = view(scratch, self.classes, r)
            picked = a.view(k, -1).index_select(1, flat)  # the target logits (K, r)
            if nan_aware:  # the first index of the maximum (a NaN counts as one): the largest classes - index
                first = (((a == m.unsqueeze(1)) | a.isnan()) * rank).amax(1)
                correct += (first == yw).sum(1)
            else:  # finite logits: correct if the target is a maximum and no earlier class reaches it
                earlier = torch.add(a, before, out=tmp).amax(1)
                correct += ((picked == m) & (earlier < m)).sum(1)
            # landscape.kernels' stable cross-entropy, (m − z_t) + log1p(off-maximum mass), in the layout's
            # order; in base 2 when the logits come scaled by log2(e) (exp2 is about twice as fast as exp)
            shifted = torch.sub(a, m.unsqueeze(1), out=tmp)
            sign = torch.sign(shifted, out=view(sign_buf, self.classes, r))  # -1 below the maximum, 0 at it
            shifted.clamp_(min=self._floor)
            (shifted.exp2_() if self.base2 else shifted.exp_()).mul_(sign)
            # the off-maximum mass; ties beyond the first count 1 each (Σ sign + C − 1 = ties − 1, exactly)
            mass = sign.sum(1).add_(self.classes - 1).sub_(shifted.sum(1))
            gap = torch.sub(m, picked)
            if self.base2:
                gap.mul_(LN2)
            total += gap.add_(mass.log1p_()).sum(1, dtype=torch.float64)
        return total, correct
