r"""Losses by name: per-example loss, accuracy where it is defined, and setup checks.

Every loss is a per-example loss :math:`\ell_i(f(x_i), y_i)`; the tool sums it over a batch and
divides by the example count :math:`N`, so batches of any size weigh correctly:
:math:`L = \frac1N \sum_i \ell_i`.

=================  =====================================================================  ============
name               :math:`\ell_i`                                                          accuracy
=================  =====================================================================  ============
``cross_entropy``  :math:`-\log \mathrm{softmax}(f_i)_{y_i}`; soft targets (class          argmax
                   probabilities of the output's shape): :math:`-\sum_c t_c \log p_c`
``nll``            :math:`-f_{i, y_i}` (the output already holds log-probabilities)         argmax
``mse``            :math:`\frac1{|f_i|}\sum_j (f_{ij} - t_{ij})^2` (integer targets one-hot)  argmax, for
                                                                                           integer targets
``huber``          the same with Huber's :math:`\rho_1` in place of the square             as ``mse``
``bce``            :math:`\frac1{|f_i|}\sum_j` BCE-with-logits (binary or multi-label)      :math:`f>0` vs
                                                                                           :math:`t>0.5`
``pkg.mod:fn``     ``fn(output, target)``, which must return the ``(B,)`` per-example      none
                   losses
=================  =====================================================================  ============

**Sequences.** An output ``(B, L, V)`` with integer targets ``(B, L)`` (a language model) is
token-level cross-entropy / NLL with ``ignore_index=-100``: :math:`\ell_i` is the mean over
sequence *i*'s labelled tokens, and accuracy is the share of those tokens predicted right (the
reported loss is then the token mean whenever every sequence has as many labelled tokens, as with
fixed-length chunks). Class-first outputs ``(B, C, d...)`` with targets ``(B, d...)`` (segmentation)
work the same. ``shift=True`` (``shift_labels``) scores position *t* against target *t + 1*, for
models that do not shift themselves (HuggingFace causal LMs given ``labels``).

:func:`check_setup` refuses combinations that cannot mean what the user wants (one line naming the
fix): cross-entropy with float targets that are not class probabilities of the output's shape, a
one-column output with cross-entropy (identically 0), a per-example loss of the wrong shape, and
a loss that is constant in the model's output on the probe batch.

Example:
    >>> import torch
    >>> loss = get_loss("mse")
    >>> float(loss.sum(torch.zeros(2, 1), torch.ones(2, 1))), loss.has_accuracy(torch.ones(2))
    (2.0, False)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import LandscapeError
from .kernels import cross_entropy_terms
from .specs import import_callable

#: the built-in losses (a ``package.module:callable`` or ``path/file.py:callable`` spec is also accepted)
BUILTIN = ("cross_entropy", "mse", "bce", "nll", "huber")
IGNORE_INDEX = -100


def _per_example_mean(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).mean(1)


def _masked_mean(t: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(t.dtype)
    return (t * m).reshape(t.shape[0], -1).sum(1) / m.reshape(t.shape[0], -1).sum(1).clamp(min=1)


def _class_layout(out: Tensor, y: Tensor) -> str:
    """``flat`` (B, C)/(B,), ``last`` (B, ..., C)/(B, ...), ``first`` (B, C, ...)/(B, ...), or ``soft``."""
    if y.is_floating_point():
        return "soft"
    if out.ndim == 2 and y.ndim == 1:
        return "flat"
    if out.ndim == y.ndim + 1 and out.shape[:-1] == y.shape:
        return "last"
    if out.ndim == y.ndim + 1 and out.shape[0] == y.shape[0] and out.shape[2:] == y.shape[1:]:
        return "first"
    raise LandscapeError(f"class targets of shape {tuple(y.shape)} do not fit outputs of shape {tuple(out.shape)} "
                         "(expected (B, C) with (B,), or (B, L, V) with (B, L))")


def _nll_like(log_probs: bool) -> Callable[[Tensor, Tensor], Tensor]:
    def per_example(out: Tensor, y: Tensor) -> Tensor:
        layout = _class_layout(out, y)
        if layout == "soft":
            logp = out if log_probs else F.log_softmax(out, -1)
            return _per_example_mean(-(y.reshape(out.shape).to(out.dtype) * logp).sum(-1, keepdim=True))
        fn = F.nll_loss if log_probs else F.cross_entropy
        y = y.long()
        if not log_probs and layout in ("flat", "last") and not torch.is_grad_enabled():
            # loss values: the stable kernel (accurate where the loss is small; see landscape.kernels)
            valid = y != IGNORE_INDEX
            tok = cross_entropy_terms(out, torch.where(valid, y, 0)) * valid
            return tok if layout == "flat" else _masked_mean(tok, valid)
        if layout == "flat":
            return fn(out, y, reduction="none")
        if layout == "last":
            tok = fn(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="none", ignore_index=IGNORE_INDEX)
            tok = tok.reshape(y.shape)
        else:
            tok = fn(out, y, reduction="none", ignore_index=IGNORE_INDEX)
        return _masked_mean(tok, y != IGNORE_INDEX)

    return per_example


def _argmax_accuracy(out: Tensor, y: Tensor) -> Tensor:
    layout = _class_layout(out, y)
    if layout == "soft":
        hit = out.argmax(-1) == y.reshape(out.shape).argmax(-1)
        return _per_example_mean(hit.to(torch.float64))
    if layout == "flat":
        return (out.argmax(-1) == y).to(torch.int64)
    pred = out.argmax(-1) if layout == "last" else out.argmax(1)
    return _masked_mean((pred == y).to(torch.float64), y != IGNORE_INDEX)


def _regression_target(out: Tensor, y: Tensor) -> Tensor:
    if not y.is_floating_point():
        y = F.one_hot(y.long(), out.shape[-1])
    return y.to(out.dtype).reshape(out.shape)


def _mse(out: Tensor, y: Tensor) -> Tensor:
    return _per_example_mean((out - _regression_target(out, y)).pow(2))


def _huber(out: Tensor, y: Tensor) -> Tensor:
    return _per_example_mean(F.huber_loss(out, _regression_target(out, y), reduction="none", delta=1.0))


def _regression_accuracy(out: Tensor, y: Tensor) -> Tensor:
    return (out.argmax(-1) == y.reshape(out.shape[:-1])).to(torch.int64)


def _bce(out: Tensor, y: Tensor) -> Tensor:
    return _per_example_mean(F.binary_cross_entropy_with_logits(out, y.to(out.dtype).reshape(out.shape),
                                                                reduction="none"))


def _bce_accuracy(out: Tensor, y: Tensor) -> Tensor:
    hit = (out > 0) == (y.reshape(out.shape) > 0.5)
    if out.ndim == 1 or out[0].numel() == 1:
        return hit.reshape(-1).to(torch.int64)
    return _per_example_mean(hit.to(torch.float64))  # multi-label: the share of labels right


@dataclass(frozen=True)
class Loss:
    """A per-example loss by name, with its accuracy (or none) and ``shift`` for sequence outputs."""

    name: str
    per_example_fn: Callable[[Tensor, Tensor], Tensor]
    accuracy_fn: Callable[[Tensor, Tensor], Tensor] | None
    #: accuracy only for integer targets (mse, huber)
    accuracy_needs_int: bool = False
    shift: bool = False
    builtin: bool = True

    def _shifted(self, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.shift:
            if out.ndim < 3 or y.ndim < 2:
                raise LandscapeError(f"`shift_labels` needs sequence outputs (B, L, V) and targets (B, L); got "
                                     f"{tuple(out.shape)} and {tuple(y.shape)}")
            return out[:, :-1], y[:, 1:]
        return out, y

    def per_example(self, out: Tensor, y: Tensor) -> Tensor:
        """``(B,)`` losses of the examples of a batch."""
        out, y = self._shifted(out, y)
        per = self.per_example_fn(out, y)
        if not isinstance(per, Tensor) or per.shape != (out.shape[0],):
            shape = tuple(per.shape) if isinstance(per, Tensor) else type(per).__name__
            raise LandscapeError(f"`loss` {self.name} returned {shape}; it must return the ({out.shape[0]},) "
                                 "per-example losses of a batch (use reduction='none')")
        return per

    def sum(self, out: Tensor, y: Tensor) -> Tensor:
        """Summed per-example loss of a batch."""
        per = self.per_example(out, y)
        # loss values are summed in float64 (as the kernels do); under autograd in the model's dtype
        return per.sum() if torch.is_grad_enabled() else per.sum(dtype=torch.float64)

    def has_accuracy(self, y: Tensor) -> bool:
        return self.accuracy_fn is not None and not (self.accuracy_needs_int and y.is_floating_point())

    def correct(self, out: Tensor, y: Tensor) -> Tensor:
        """Summed per-example accuracy (a count, or a sum of per-sequence token shares)."""
        out, y = self._shifted(out, y)
        assert self.accuracy_fn is not None
        return self.accuracy_fn(out, y).sum()


def get_loss(spec: str, shift: bool = False) -> Loss:
    """The :class:`Loss` named ``spec`` (a built-in name, or a ``package.module:callable`` spec)."""
    table = {
        "cross_entropy": (_nll_like(False), _argmax_accuracy, False),
        "nll": (_nll_like(True), _argmax_accuracy, False),
        "mse": (_mse, _regression_accuracy, True),
        "huber": (_huber, _regression_accuracy, True),
        "bce": (_bce, _bce_accuracy, False),
    }
    if spec in table:
        fn, acc, needs_int = table[spec]
        return Loss(spec, fn, acc, needs_int, shift)
    if ":" not in spec:
        raise LandscapeError(f"`loss`: {spec!r} is not one of {', '.join(BUILTIN)} or a package.module:callable "
                             "returning per-example losses")
    return Loss(spec, import_callable(spec, "`loss`"), None, False, shift, builtin=False)


def check_setup(loss: Loss, out: Tensor, y: Tensor) -> None:
    """Refuse, with one line naming the fix, a loss that cannot mean what the user wants on ``(out, y)``."""
    o, t = loss._shifted(out, y) if out.ndim >= 3 and y.ndim >= 2 else (out, y)
    if loss.name in ("cross_entropy", "nll"):
        classes = o.shape[-1] if o.ndim != t.ndim + 1 or o.shape[:-1] == t.shape else o.shape[1]
        if o.ndim >= 2 and classes == 1:
            raise LandscapeError(f"`loss` {loss.name} on a one-column output is identically 0 (a single class); "
                                 "use `loss` mse or huber for regression, bce for binary labels")
        if t.is_floating_point():
            probs = t.shape == o.shape and bool((t >= 0).all()) and \
                bool(torch.allclose(t.double().sum(-1), torch.ones((), dtype=torch.float64), atol=1e-4))
            if not probs:
                raise LandscapeError(
                    f"`loss` {loss.name}: the targets are floats {tuple(t.shape[1:])} but not class probabilities "
                    f"of the output's shape {tuple(o.shape[1:])}; use `loss` mse or huber for regression, bce "
                    "for 0/1 labels, or integer class targets")
    if loss.name == "bce" and t.numel() != o.numel():
        raise LandscapeError(f"`loss` bce needs one target per output entry; got targets {tuple(t.shape)} for "
                             f"outputs {tuple(o.shape)}")
    if loss.name == "bce" and not bool(((t >= 0) & (t <= 1)).all()):
        raise LandscapeError(f"`loss` bce needs targets in [0, 1] (labels or probabilities); these range over "
                             f"[{float(t.min()):g}, {float(t.max()):g}]: use `loss` mse or huber for regression")
    if loss.name in ("mse", "huber") and t.is_floating_point() and t.numel() != o.numel():
        raise LandscapeError(f"`loss` {loss.name}: targets {tuple(t.shape)} do not match outputs {tuple(o.shape)}")
    # constant in the output: its gradient vanishes at the output and at a random point near it
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode(False), torch.enable_grad():
        out, y = out.clone(), y.clone()  # (normal tensors even if made under inference_mode)
        for shift in (0.0, 1.0):
            noise = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.device, out.dtype)
            o2 = (out.detach().float() + shift * noise.float()).to(out.dtype).requires_grad_(True)
            val = loss.sum(o2, y)
            if not val.requires_grad:
                grad = torch.zeros_like(o2)
            else:
                (grad,) = torch.autograd.grad(val, o2, allow_unused=True)
                grad = torch.zeros_like(o2) if grad is None else grad
            if bool(torch.any(grad != 0)) or not bool(torch.isfinite(val)):
                return
    raise LandscapeError(f"`loss` {loss.name} is constant in the model's output on the first batch (outputs "
                         f"{tuple(out.shape[1:])}, targets {tuple(y.shape[1:])}): every point would have the same "
                         "loss; choose the loss that fits the targets (`loss` mse for regression)")
