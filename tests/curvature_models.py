"""Builders shared by the curvature tests: explicit symmetric matrices with a chosen spectrum, and the dense
float64 references (``torch.func.hessian`` / ``jacrev`` over all the data in one batch) that the operators
are compared with."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.func import functional_call

from landscape.problem import Problem

# torch.func's forward-mode AD scripts its decompositions on first use (torch.jit.script, deprecated)
IGNORE_JIT_SCRIPT = pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:DeprecationWarning")


def random_basis(eigs, seed: int = 0) -> torch.Tensor:
    """V diag(eigs) Vᵀ in float64, V a random orthogonal matrix (QR of a Gaussian one drawn with ``seed``)."""
    eigs = torch.as_tensor(eigs, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    V, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=g, dtype=torch.float64))
    return (V * eigs) @ V.T


# ------------------------------------------------------------------ named ↔ flat parameters
def named(problem: Problem, names=None) -> dict[str, torch.Tensor]:
    """The trainable parameters (or those in ``names``), detached."""
    return {k: v.detach() for k, v in problem.model.named_parameters()
            if (names is None and v.requires_grad) or (names is not None and k in names)}


def flat(d):
    return torch.cat([t.reshape(-1) for t in d.values()])


def unflat(vec, like):
    out, i = {}, 0
    for k, t in like.items():
        out[k] = vec[i: i + t.numel()].view_as(t)
        i += t.numel()
    return out


def all_data(problem):
    return torch.cat([x for x, _ in problem.batches]), torch.cat([y for _, y in problem.batches])


# ------------------------------------------------------------------ dense references
def dense_hessian(problem: Problem, names=None) -> torch.Tensor:
    """∇² of the mean loss over the full data (one big batch) wrt the flattened parameters."""
    params = named(problem, names)
    buffers = dict(problem.model.named_buffers())
    X, Y = all_data(problem)

    def loss(theta):
        out = functional_call(problem.model, {**buffers, **unflat(theta, params)}, (X,))
        return problem.loss_sum(out, Y) / len(X)

    return torch.func.hessian(loss)(flat(params))


def dense_ggn(problem: Problem) -> torch.Tensor:
    """Jᵀ H_ℓ J over the full data: J = ∂f/∂θ, H_ℓ the Hessian of the mean loss wrt the outputs."""
    params = named(problem)
    buffers = dict(problem.model.named_buffers())
    X, Y = all_data(problem)

    def f(theta):
        return functional_call(problem.model, {**buffers, **unflat(theta, params)}, (X,))

    theta = flat(params)
    out = f(theta)
    J = torch.func.jacrev(f)(theta).reshape(out.numel(), -1)
    Hl = torch.func.hessian(lambda o: problem.loss_sum(o.reshape(out.shape), Y) / len(X))(out.reshape(-1))
    return J.T @ Hl @ J


def dense_loss_acc_grad(problem: Problem) -> tuple[float, float, dict[str, torch.Tensor]]:
    """Mean cross-entropy, accuracy and gradient in float64 over all examples at once (torch.func)."""
    model = copy.deepcopy(problem.model).double().eval()
    X = torch.cat([x for x, _ in problem.batches]).double()
    Y = torch.cat([y for _, y in problem.batches])
    theta = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p):
        return torch.nn.functional.cross_entropy(functional_call(model, p, (X,)), Y)

    acc = float((functional_call(model, theta, (X,)).argmax(1) == Y).double().mean())
    return float(loss(theta)), acc, torch.func.grad(loss)(theta)
