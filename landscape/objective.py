"""The functional core: the mean loss (and accuracy, and gradient) of a model at given weights θ.

Notation: θ the trainable parameters, L(θ) = (1/N) Σ_b ℓ_sum(b; θ) the mean loss over the problem's
batches (every batch's *summed* loss divided by the same N, so batches count by their sizes), g = ∇L(θ).

Everything here evaluates the network through :func:`torch.func.functional_call` with an explicit
parameter dict, so the model's own tensors are never written, and under :func:`eval_mode` (BatchNorm on
running statistics, dropout off; every module's flag is put back afterwards). Sharpness, curvature,
layer-wise conditioning and training all compute "the loss at θ" with these functions.

Under MPI pass ``world`` (a :class:`~landscape.parallel.World`, or any object with ``rank``, ``size`` and
``allreduce_sum``): batch i is computed by rank i % size (:func:`shard`), the partial sums are added up in
float64 by one allreduce, and every rank gets the single-process result. Every rank must make the same
calls (they are collective).

Example:
    >>> from landscape.problem import make_problem
    >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=32, device="cpu",
    ...                  model_args={"width": 4, "depth": 1})
    >>> theta = trainable(p.model)
    >>> loss, g = loss_grad(p, theta)
    >>> abs(loss - loss_at(p, theta)) < 1e-5, sorted(g) == sorted(theta)
    (True, True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .params import Named
from .problem import Batch, Problem

T = TypeVar("T")


# --------------------------------------------------------------------------- mode and parameters
@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Force eval mode (BatchNorm on running statistics) and restore every module's flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, t in flags:
            m.training = t


def trainable(model: nn.Module) -> Named:
    """Detached copies of the trainable parameters θ (``requires_grad``), in registration order."""
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def frozen(model: nn.Module, theta: Named) -> Named:
    """Parameters not in θ (frozen ones) plus buffers: passed unchanged to ``functional_call``."""
    out = {k: v for k, v in model.named_parameters() if k not in theta}
    out.update(dict(model.named_buffers()))
    return out


def forward(model: nn.Module, theta: Named, x) -> Tensor:
    """f(x; θ): the model's output with the parameters in ``theta`` replaced (the others and buffers as they are)."""
    return functional_call(model, {**frozen(model, theta), **theta}, (x,))


# --------------------------------------------------------------------------- sharding
def solo(world) -> bool:
    """Whether one process computes everything (no world, or a world of one rank)."""
    return world is None or world.size == 1


def shard(items: Sequence[T], world) -> Sequence[T]:
    """This rank's share of ``items``: item i on rank i % size (all of them when running alone)."""
    return items if solo(world) else items[world.rank::world.size]


def n_samples(batches: Iterable[Batch]) -> int:
    """N, the number of examples in ``batches``."""
    return sum(len(x) for x, _ in batches)


# --------------------------------------------------------------------------- loss, accuracy, gradient
def loss_acc_sums(model_forward: Callable, batches: Iterable[Batch], loss_sum: Callable,
                  correct: Callable | None = None, device=None) -> tuple[Tensor, Tensor]:
    """Σ_b ℓ_sum(b) and Σ_b correct(b) in float64 over ``batches`` (no gradient): the one loss/accuracy loop.

    ``model_forward(x)`` gives the outputs, ``loss_sum(out, y)`` the summed loss of a batch, ``correct(out,
    y)`` its number of correct predictions (None: accuracy not wanted, its sum stays 0).
    """
    total = torch.zeros((), dtype=torch.float64, device=device)
    right = torch.zeros((), dtype=torch.float64, device=device)
    with torch.no_grad():
        for x, y in batches:
            out = model_forward(x)
            total += loss_sum(out, y).double()
            if correct is not None:
                right += correct(out, y).double()
    return total, right


def loss_at(problem: Problem, theta: Named, batches: Sequence[Batch] | None = None, world=None) -> float:
    """L(θ) = (1/N) Σ_b ℓ_sum(b): mean loss over ``batches`` (default: the problem's) at weights θ.

    ``world``: batch i is computed by rank i % size and the float64 sums are added up over the ranks
    (collective: every rank must call it); every rank gets the whole result.
    """
    return loss_acc_at(problem, theta, batches, world, accuracy=False)[0]


def loss_acc_at(problem: Problem, theta: Named, batches: Sequence[Batch] | None = None,
                world=None, accuracy: bool = True) -> tuple[float, float]:
    """Mean loss and accuracy (NaN for regression, or when ``accuracy`` is False) at θ (``world``: batches
    shared out, as :func:`loss_at`)."""
    batches = problem.batches if batches is None else batches
    acc = accuracy and problem.classification
    with eval_mode(problem.model):
        total, correct = loss_acc_sums(lambda x: forward(problem.model, theta, x), shard(batches, world),
                                       problem.loss_sum, problem.correct if acc else None, problem.device)
    if not solo(world):
        if acc:
            total, correct = world.allreduce_sum(torch.stack([total, correct]))
        else:
            total = world.allreduce_sum(total.reshape(1))[0]
    n = n_samples(batches)
    return float(total) / n, (float(correct) / n if acc else float("nan"))


def gradient_sums(batch_loss: Callable[[list[Tensor], Tensor, Tensor], Tensor], leaves: list[Tensor],
                  batches: Iterable[Batch], grads: list[Tensor]) -> float:
    """Adds Σ_b ∇ batch_loss(leaves, x_b, y_b) into ``grads`` (unused parameters get nothing) and returns
    Σ_b batch_loss: the one per-batch gradient loop (``batch_loss`` already divides by N)."""
    total = 0.0
    for x, y in batches:
        loss = batch_loss(leaves, x, y)
        gs = torch.autograd.grad(loss, leaves, allow_unused=True)
        for acc, gb in zip(grads, gs):
            if gb is not None:
                acc.add_(gb)
        total += float(loss.detach())
    return total


def allreduce_named(world, parts: Sequence[Tensor], shapes: Sequence[tuple], dtypes: Sequence[torch.dtype],
                    extra: Sequence[float] = (), device=None) -> tuple[list[Tensor], list[float]]:
    """The float64 sum over ranks of per-rank tensors ``parts`` (and scalars ``extra``), in one allreduce;
    returned split back into tensors of ``shapes``/``dtypes`` and a list of the summed scalars."""
    tail = torch.tensor(list(extra), dtype=torch.float64, device=device)
    flat = world.allreduce_sum(torch.cat([*(p.detach().reshape(-1).to(torch.float64) for p in parts), tail]))
    out, pos = [], 0
    for shape, dt in zip(shapes, dtypes):
        n = 1
        for s in shape:
            n *= s
        out.append(flat[pos: pos + n].reshape(shape).to(dt))
        pos += n
    return out, [float(v) for v in flat[pos:]]


def loss_grad(problem: Problem, theta: Named, batches: Sequence[Batch] | None = None,
              world=None) -> tuple[float, Named]:
    """L(θ) and ∇L(θ) = Σ_b ∇ℓ_sum(b)/N (batch-size weighted; unused parameters get zeros).

    ``world``: each rank sums the gradients of its own batches (batch i on rank i % size) in float64,
    then one allreduce of [gradient, loss] gives every rank the whole result (in θ's dtypes).
    """
    batches = problem.batches if batches is None else batches
    n = n_samples(batches)
    keys = list(theta)
    leaves = [theta[k].detach().requires_grad_(True) for k in keys]
    alone = solo(world)
    # alone: accumulate in θ's dtype, as always; under a world: in float64, so that only the order of
    # float64 additions differs from one process
    grads = [torch.zeros_like(t) if alone else torch.zeros_like(t, dtype=torch.float64) for t in leaves]

    def batch_loss(ls: list[Tensor], x, y) -> Tensor:
        return problem.loss_sum(forward(problem.model, dict(zip(keys, ls)), x), y) / n

    with eval_mode(problem.model):
        total = gradient_sums(batch_loss, leaves, shard(batches, world), grads)
    if alone:
        return total, dict(zip(keys, grads))
    out, (loss,) = allreduce_named(world, grads, [t.shape for t in leaves], [t.dtype for t in leaves], [total],
                                   problem.device)
    return loss, dict(zip(keys, out))
