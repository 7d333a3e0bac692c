"""Callables for the MPI tests (``--data tests.mpi_helpers:failing_data`` etc.; they fail on rank 1 only), and
the launcher of ``[mpiexec -n R] landscape ...`` subprocesses (:mod:`tests.launch`, re-exported here).
"""

from __future__ import annotations

import os
import time

import torch
from torch import nn

from landscape.parallel import world
from landscape.zoo.models import MLP
from tests.launch import (  # noqa: F401 - the tests import the launcher from here
    HAVE_MPI,
    MPIEXEC,
    ROOT,
    command,
    descendants,
    finish,
    kill9,
    launcher,
    start,
    subprocess_env,
)

# ----------------------------------------------------------------------------- callables that fail on rank 1


def _rank() -> int:
    return world().rank


def failing_data():
    """``zoo:digits``, except that it raises on rank 1 (a failure while every rank sets up)."""
    if _rank() == 1:
        raise RuntimeError("injected failure in the data callable on rank 1")
    from landscape.zoo.data import digits

    return digits("all")


class _FailLater(nn.Module):
    """Wraps an MLP; on rank 1 its forward raises from the ``after``-th call on (mid-run failure)."""

    def __init__(self, after: int):
        super().__init__()
        self.net = MLP()
        self.after = after
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if _rank() == 1 and self.calls >= self.after:
            raise RuntimeError("injected failure in the forward pass on rank 1")
        return self.net(x)


def failing_model():
    """A model whose forward pass starts raising on rank 1 once the surface is under way."""
    return _FailLater(after=int(os.environ.get("LANDSCAPE_TEST_FAIL_AFTER", "3")))


class SleepyModel(nn.Module):
    """``net`` whose forward pass also sleeps ``LANDSCAPE_TEST_SLEEP`` seconds (default 0.05): a slow run that
    leaves the cores free."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.seconds = float(os.environ.get("LANDSCAPE_TEST_SLEEP", "0.05"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return self.net(x)


def slow_model():
    """MLP + ``LANDSCAPE_TEST_SLEEP`` seconds (default 0.05) per forward pass, for the kill/restart test."""
    return SleepyModel(MLP())
