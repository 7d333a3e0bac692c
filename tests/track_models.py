"""A tiny float64 regression problem for the track and operator tests: ``--model tests.track_models:tiny_model
--data tests.track_models:tiny_data --loss mse`` (50 parameters, 8 examples × 2 outputs), and helpers that write a
checkpoint series from random weights to a trained minimum (loss ≤ 1e-4)."""

from __future__ import annotations

import os

import torch
from torch import nn

from tests.mpi_helpers import SleepyModel

N, D_IN, WIDTH, D_OUT = 8, 3, 8, 2


def tiny_model(width: int = WIDTH) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D_IN, width), nn.Tanh(), nn.Linear(width, D_OUT)).double()


def tiny_data():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(N, D_IN, generator=g, dtype=torch.float64)
    Y = torch.randn(N, D_OUT, generator=g, dtype=torch.float64)
    return X, Y


def tiny_labels():
    """The same inputs with 2 class labels (for cross-entropy)."""
    X, Y = tiny_data()
    return X, (Y[:, 0] > 0).long()


def _loss(model: nn.Module, X, Y) -> torch.Tensor:
    return (model(X) - Y).pow(2).mean(dim=1).mean()


def write_series(folder: str, gd_steps: int = 3, lr: float = 0.05, prefix: str = "") -> list[str]:
    """ckpt_00000 (random), ckpt_0000{1..gd_steps} (GD steps of ``lr``), ckpt_01000 (a minimum, loss ≤ 1e-4).
    ``prefix`` goes before every key (``net.`` for :func:`slow_tiny_model`)."""
    model = tiny_model()
    X, Y = tiny_data()
    paths = []

    def save(step: int) -> None:
        p = os.path.join(folder, f"ckpt_{step:05d}.pt")
        torch.save({prefix + k: v.detach().clone() for k, v in model.state_dict().items()}, p)
        paths.append(p)

    save(0)
    for s in range(1, gd_steps + 1):
        model.zero_grad()
        _loss(model, X, Y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
        save(s)
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = _loss(model, X, Y)
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    with torch.no_grad():
        final = float(_loss(model, X, Y))
    assert final <= 1e-4, final
    save(1000)
    return paths


def tiny_model_f32() -> nn.Module:
    """The same network in float32 (``landscape surface``'s input-layer fold needs the data's dtype)."""
    return tiny_model().float()


def tiny_data_f32():
    X, Y = tiny_data()
    return X.float(), Y.float()


def slow_tiny_model() -> nn.Module:
    """:func:`tiny_model` whose forward pass also sleeps ``LANDSCAPE_TEST_SLEEP`` seconds (kill -9 tests)."""
    return SleepyModel(tiny_model())
