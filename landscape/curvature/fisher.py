r"""The empirical Fisher, and the names of the curvature operators.

The **empirical Fisher** of the mean loss over the N evaluation samples is

.. math::  F = \frac1N \sum_{i=1}^N ∇ℓ_i(θ)\, ∇ℓ_i(θ)ᵀ, \qquad F v = \frac1N \sum_i ∇ℓ_i\,(∇ℓ_iᵀ v),

the uncentred second moment of the per-example gradients (Kunstner, Hennig, Balles 2019 call it
the "empirical Fisher" to set it apart from the true one). Per batch b a product is one JVP of the
vector of per-example losses ℓ_b(θ) ∈ ℝ^{n_b} (d = J_ℓ v, with J_ℓ = ∂ℓ_b/∂θ) and one VJP with the
cotangent d/N (J_ℓᵀ d / N): no per-example gradient is ever materialized. F is positive
semi-definite, and at a minimum where every ℓ_i is minimized it is zero.

Why the *empirical* Fisher and not the *true* one: for the losses this tool knows (cross-entropy
on logits, squared error), the true Fisher — the expectation of ∇ log p ∇ log pᵀ under the
model's own predictive distribution — *is* the generalized Gauss–Newton matrix
(:class:`~landscape.curvature.GGNOperator`, Martens 2020 §9.2; for squared error up to the noise
scale). ``--operator ggn`` is therefore the true Fisher, and ``--operator fisher`` is the other one,
the one whose spectrum Sagun et al. (2018) and Li et al. (2019) set beside the Hessian's.

:func:`~landscape.curvature.operators.make_operator` builds ``hessian`` | ``ggn`` | ``fisher`` by name
for the commands and the Python API.

Example:
    >>> from landscape.curvature import hessian_eigenpairs
    >>> from landscape.problem import make_problem
    >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=16, device="cpu",
    ...                  model_args={"width": 3, "depth": 1})
    >>> eig = hessian_eigenpairs(EmpiricalFisherOperator(p), k=1, max_iter=30, return_vectors=False)
    >>> bool(eig.eigenvalues[0] >= 0)  # F = (1/N) Σᵢ ∇ℓᵢ∇ℓᵢᵀ is positive semi-definite
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import LandscapeError
from .hvp import _ProblemOperator, accumulate, quiet_jvp

#: the operators a command can be asked for (``--operator``)
OPERATORS = ("hessian", "ggn", "fisher")
#: how each reads in a picture or a table
OPERATOR_LABELS = {"hessian": "Hessian", "ggn": "Gauss–Newton (GGN)", "fisher": "empirical Fisher"}


def per_example_loss(loss: str, output: Tensor, target: Tensor) -> Tensor:
    """ℓ_i for each example of a batch, shape (n,): the terms whose sum is :func:`landscape.problem.loss_sum`."""
    if loss == "cross_entropy":
        return F.cross_entropy(output, target, reduction="none")
    if loss == "mse":
        if not target.is_floating_point():
            target = F.one_hot(target.long(), output.shape[-1]).to(output.dtype)
        target = target.reshape(output.shape)
        return (output - target).pow(2).reshape(output.shape[0], -1).mean(dim=1)
    raise LandscapeError(f"the empirical Fisher needs per-example losses; `loss` {loss!r} is not one of "
                         "cross_entropy, mse")


class EmpiricalFisherOperator(_ProblemOperator):
    r"""v ↦ F v with the empirical Fisher F = (1/N) Σᵢ ∇ℓᵢ ∇ℓᵢᵀ (see the module docstring).

    Same constructor as :class:`~landscape.curvature.HessianOperator` (``params``, ``batches``,
    ``world``: batch i on rank i % size, products summed over ranks in float64). Nothing is cached:
    each product is a JVP and a forward+VJP per batch.
    """

    def __init__(self, problem, *args, **kwargs):
        kwargs["cache"] = False
        super().__init__(problem, *args, **kwargs)
        per_example_loss(getattr(problem, "loss", ""), *self._probe())  # an unknown loss fails here, not mid-run

    def _probe(self) -> tuple[Tensor, Tensor]:
        x, y = (self.batches or self.problem.batches)[0]
        with torch.no_grad():
            return self._forward([t.detach() for t in self._source.values()], x[:1]), y[:1]

    def _losses(self, leaves: list[Tensor], x: Tensor, y: Tensor) -> Tensor:
        return per_example_loss(self.problem.loss, self._forward(leaves, x), y)

    def _build(self) -> None:  # never cached
        return None

    def _product(self, v: list[Tensor], fresh: bool) -> list[Tensor | None]:
        out: list[Tensor | None] = [None] * len(v)
        primals = tuple(t.detach() for t in self._source.values())
        for x, y in self.batches:
            _, d = quiet_jvp(lambda *ps, x=x, y=y: self._losses(list(ps), x, y), primals, tuple(v))
            leaves = self.leaves()
            gs = torch.autograd.grad(self._losses(leaves, x, y), leaves, d.detach() / self.n_samples,
                                     allow_unused=True)
            accumulate(out, gs)
        return out
