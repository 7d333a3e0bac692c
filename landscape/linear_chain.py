r"""K grid points through a sequential chain of ``Linear`` layers as batched matrix products (no ``vmap``).

The batched evaluator's fast path for the most common small model: an ``nn.Sequential`` MLP whose
first layer is folded (:class:`landscape.evaluate.InputFold`) and whose remaining modules are
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
* **the loss along the long axis**: logits are ``(K, classes, rows)``, so the max, the
  log-sum-exp and the target logit reduce over a short strided axis with the rows vectorised;
  the prediction is the first index of the maximum (``argmax``'s rule), found without ``argmax``.

Same numbers as the per-point path to float rounding (about 1e-7 relative; each call holds K
points, so a point's value does not depend on which other points share its call).

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

from dataclasses import dataclass

import torch
from torch import Tensor, nn

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
#: one-hot targets (classes, rows), classes - target (rows,), and 0 for the classes before the target,
#: -inf from it on (classes, rows); all float32
Chunk = tuple[Tensor, Tensor, Tensor, Tensor]


class LinearChain:
    """The body of a folded sequential MLP as batched matrix products over K points; see the module doc.

    Build with :meth:`build` (None where the model is not such a chain); :meth:`layout` turns a
    split's groups into feature-major row chunks (cached per groups object and chunk size);
    :meth:`run` returns the K points' summed loss and correct counts.
    """

    def __init__(self, steps: list, ndim: int, ones_row: bool, classes: int):
        self.steps = steps
        self.ndim = ndim
        self.ones_row = ones_row  # the activations carry a ones row (some Linear follows the fold)
        self.classes = classes
        self._layouts: dict[tuple[int, int], tuple[object, list[Chunk]]] = {}

    # ----------------------------------------------------------------- construction
    @classmethod
    def build(cls, fold, directions, classes: int) -> LinearChain | None:
        """The chain for ``fold.body`` (an :class:`~landscape.evaluate.InputFold`'s), or None if unsupported.

        Supported: a first layer that is an ``nn.Linear`` on flat inputs, then ``Linear`` (plain
        ``forward``), :data:`ELEMENTWISE` activations, :data:`PASS_THROUGH` modules and
        ``BatchNorm1d`` with running statistics, all in eval mode, float32.
        """
        if fold is None or classes < 1 or type(fold.layer) is not nn.Linear or fold.dtype != torch.float32:
            return None
        modules = list(fold.body.children())
        if any(m.training for m in modules):
            return None  # (Dropout and BatchNorm are identities / fixed affine maps only in eval mode)
        center, vectors = directions.center, directions.vectors
        ones_row = any(type(m) is nn.Linear for m in modules)
        has_ones = ones_row
        remaining_linear = sum(type(m) is nn.Linear for m in modules)
        features = fold.layer.out_features
        steps: list = []

        def tensors(name: str, module: nn.Module, what: str) -> list[Tensor | None]:
            """``name.what`` at the centre and along each direction (zero where a direction does not move it)."""
            own = getattr(module, what)
            if own is None:
                return [None] * (1 + len(vectors))
            key = f"{name}.{what}"  # (the body keeps the model's child names)
            return [center.get(key, own.detach())] + [v.get(key, torch.zeros_like(own)) for v in vectors]

        for name, m in fold.body.named_children():
            if type(m) is nn.Linear:
                if m.in_features != features:
                    return None
                remaining_linear -= 1
                keep = remaining_linear > 0  # every Linear but the last passes the ones row on
                ws, bs = tensors(name, m, "weight"), tensors(name, m, "bias")
                stack = torch.zeros((len(ws), m.out_features + keep, m.in_features + 1), dtype=torch.float32,
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
                    keeps_one = bool(m(torch.ones(1, dtype=torch.float32)) == 1.0)
                steps.append(_Elementwise(m, type(m) is nn.ReLU, has_ones and not keeps_one))
            elif type(m) in PASS_THROUGH:
                continue
            elif type(m) is nn.BatchNorm1d and m.running_mean is not None and m.num_features == features:
                parts = [tensors(name, m, w) for w in ("weight", "bias", "running_mean", "running_var")]
                stack = torch.zeros((1 + len(vectors), 4, features), dtype=torch.float32,
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
        return cls(steps, len(vectors), ones_row, classes)

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
        for zs, y, onehot in groups:
            z = zs[0] if len(zs) == 1 else torch.cat(zs, 1)
            n = z.shape[1]
            step = rows or n
            for lo in range(0, n, step):
                hi = min(n, lo + step)
                part = z[:, lo:hi].transpose(1, 2)
                if self.ones_row:
                    block = torch.zeros((z.shape[0], z.shape[2] + 1, hi - lo), dtype=z.dtype, device=z.device)
                    block[:, :-1] = part
                    block[0, -1] = 1.0
                else:
                    block = part.contiguous()
                oh = onehot[lo:hi].t().contiguous().to(torch.float32)
                yw = (self.classes - y[lo:hi]).to(torch.float32)
                classes = torch.arange(self.classes, device=y.device).view(-1, 1)
                before = torch.where(classes < y[lo:hi].view(1, -1), 0.0, float("-inf")).to(torch.float32)
                chunks.append((block, oh, yw, before))
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
        total, correct = self._run(coeffs, chunks, nan_aware=False)
        # A NaN logit is the maximum for max/argmax; the fast pass ignores that. A NaN logit makes the
        # loss NaN, so only such groups (one host read per K points) are run again with the exact rule.
        if bool(torch.isnan(total).any()):
            total, correct = self._run(coeffs, chunks, nan_aware=True)
        return total, correct

    def _run(self, coeffs: Tensor, chunks: list[Chunk], nan_aware: bool) -> tuple[Tensor, Tensor]:
        k = len(coeffs)
        dev = coeffs.device
        cf = torch.cat([torch.ones((k, 1), dtype=torch.float64, device=dev), coeffs], 1).to(torch.float32)
        weights = self._weights(cf)
        total = torch.zeros(k, dtype=torch.float64, device=dev)
        correct = torch.zeros(k, dtype=torch.int64, device=dev)
        rank = torch.arange(self.classes, 0, -1, dtype=torch.float32, device=dev).view(1, -1, 1)
        for z, oh, yw, before in chunks:
            r = z.shape[-1]
            a = (cf @ z.reshape(len(z), -1)).view(k, -1, r)
            for s, w in zip(self.steps, weights):
                if isinstance(s, _Linear):
                    a = torch.bmm(w, a)
                elif isinstance(s, _Elementwise):
                    a = torch.relu_(a) if s.in_place_relu else s.fn(a)
                    if s.restore_ones:
                        a[:, -1].fill_(1.0)
                else:
                    scale, shift = w
                    body = a[:, :scale.shape[1]]
                    body.mul_(scale).add_(shift)
            # a: (K, classes, r) logits
            m = a.amax(1)
            picked = (a * oh).sum(1)  # the target logits (K, r)
            if nan_aware:  # the first index of the maximum (a NaN counts as one): the largest classes - index
                first = (((a == m.unsqueeze(1)) | a.isnan()) * rank).amax(1)
                correct += (first == yw).sum(1)
            else:  # finite logits: correct if the target is a maximum and no earlier class reaches it
                earlier = (a + before).amax(1)
                correct += ((picked == m) & (earlier < m)).sum(1)
            lse = (a - m.unsqueeze(1)).clamp_(min=-80.0).exp_().sum(1).log_()
            total += lse.sum(1) + m.sum(1) - picked.sum(1)
        return total, correct
