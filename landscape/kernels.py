r"""Accurate loss and accuracy kernels for classification outputs, where the loss is small.

A landscape is centred on a trained minimum, so the values that matter most are the smallest ones.
The textbook forms lose them: ``log Σⱼ exp(zⱼ − m) + m − z_t`` rounds ``1 + s`` (s the off-maximum
mass, ≈ the loss at a minimum) to the unit roundoff *u* of the dtype (6e-8 in float32), and summing
the max and target logits over thousands of rows before subtracting them cancels digits of logits
of size ~10. Here, per example with logits z, target t and m = maxⱼ zⱼ,

.. math::

    \ell = \operatorname{lse}(z) - z_t = (m - z_t) + \operatorname{log1p}(s), \qquad
    s = \sum_{j:\, z_j < m} e^{z_j - m} + (\#\{j: z_j = m\} - 1),

both terms non-negative (no cancellation), ``log1p`` keeps the relative precision of a small s, and
the per-example losses are summed in float64.

Error model (given the logits as computed; the forward pass's own rounding of the logits is not
covered and is common to every way of computing the loss): with the logits' unit roundoff *u* and C
classes, each example's loss has relative error at most about u·(C + 3 + maxⱼ |zⱼ − m|), whatever
its size (down to C·e^{-80} ≈ 1e-34 in float32, C·e^{-700} in float64, where the ``exp`` argument
is clamped to avoid denormals); the float64 sum adds at most N·2⁻⁵³ relative over N examples.
Plain float32 ``F.cross_entropy`` instead has an absolute error of about u per example, i.e. a
relative error of u/ℓ: 6e-4 at ℓ = 1e-4.

The accuracy uses ``argmax``'s rule (the first index of the maximum; a NaN logit counts as the
maximum). Both kernels work under ``torch.func.vmap`` and are differentiable (the gradient of
``max`` routes through the arg-max, which gives the exact gradient of ``lse``), and take logits of
any float dtype.

Example:
    >>> import torch
    >>> z = torch.tensor([[30.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    >>> y = torch.tensor([0, 2])
    >>> float(cross_entropy_terms(z, y)[0]) > 0   # F.cross_entropy in float32 gives exactly 0 here
    True
    >>> int(correct_count(z, y)), cross_entropy_sum(z, y).dtype
    (1, torch.float64)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cross_entropy_and_correct", "cross_entropy_sum", "cross_entropy_terms", "correct_count", "exp_floor"]


def exp_floor(dtype: torch.dtype) -> float:
    """The smallest ``exp`` argument used for ``dtype`` (lower ones are clamped: no slow denormals)."""
    return -700.0 if dtype == torch.float64 else -80.0


def cross_entropy_terms(logits: Tensor, target: Tensor, dim: int = -1, maximum: Tensor | None = None) -> Tensor:
    r"""Per-example cross-entropy ``lse(z) − z_t`` of class-index ``target``, stably (see the module doc).

    ``logits``: classes along ``dim``; ``target``: integer class indices, the logits' shape without
    ``dim``. ``maximum``: the max over ``dim`` if already computed. Returns the logits' dtype
    (float16/bfloat16 logits are computed in float32).
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    m = logits.amax(dim) if maximum is None else maximum.to(logits.dtype)
    z = logits - m.unsqueeze(dim)  # ≤ 0, exactly 0 at the maxima
    sign = torch.sign(z)  # -1 below the maximum, 0 at it (a float mask: much faster than a bool one)
    below = z.clamp(min=exp_floor(logits.dtype)).exp() * sign  # -exp(z_j - m) below the maximum, 0 at it
    # the off-maximum mass: ties beyond the first count 1 each (Σ sign + C − 1 = ties − 1, an exact integer)
    s = (sign.sum(dim) + (logits.shape[dim] - 1)) - below.sum(dim)
    picked = logits.gather(dim, target.long().unsqueeze(dim)).squeeze(dim)
    return (m - picked) + torch.log1p(s)


def cross_entropy_sum(logits: Tensor, target: Tensor, dim: int = -1) -> Tensor:
    """Summed cross-entropy (0-d float64) of class-index targets: :func:`cross_entropy_terms` summed in float64."""
    return cross_entropy_terms(logits, target, dim).sum(dtype=torch.float64)


def correct_count(logits: Tensor, target: Tensor, dim: int = -1) -> Tensor:
    """Examples whose first arg-max equals the class-index target (0-d int64)."""
    return (logits.argmax(dim) == target).sum()


def cross_entropy_and_correct(logits: Tensor, target: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    """``(cross_entropy_sum, correct_count)`` sharing one max reduction: float64 and int64, 0-d."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    m, idx = logits.max(dim)  # (the first index of the maximum, as argmax)
    loss = cross_entropy_terms(logits, target, dim, maximum=m).sum(dtype=torch.float64)
    return loss, (idx == target).sum()
