"""Models, data and process helpers for the fault-injection tests (``--model tests.faults.fault_helpers:NAME``).

The subprocesses that use them run from the repository root with it on ``PYTHONPATH`` (launched by
``tests.mpi_helpers.start``, the one launcher of the test suite).
Environment knobs (read when the model is built, so a parent test can set them per run):

* ``LANDSCAPE_FAULT_SLEEP``: seconds each forward pass of :func:`slow_mlp` sleeps (default 0.05);
* ``LANDSCAPE_FAULT_LOG``: a file that gets one line ``pid batch`` per finished forward pass;
* ``LANDSCAPE_FAULT_OOM_AFTER``: :func:`oom_mlp` raises "CUDA out of memory" from that call on;
* ``LANDSCAPE_FAULT_OOM_RANK``: ... on that MPI rank only.

Issue 17 adds data with a bad label or a NaN input far into the set, and a model constructor that raises.
"""

from __future__ import annotations

import os
import time

import h5py
import numpy as np
import torch
from torch import nn


# ----------------------------------------------------------------------------- models
def _mlp() -> nn.Module:
    from landscape.zoo.models import MLP

    return MLP(in_features=16, width=8, depth=1)


class _Slow(nn.Module):
    """A small MLP whose forward pass sleeps and logs each finished call (one call = one grid point here)."""

    def __init__(self):
        super().__init__()
        self.net = _mlp()
        self.sleep = float(os.environ.get("LANDSCAPE_FAULT_SLEEP", "0.05"))
        self.log = os.environ.get("LANDSCAPE_FAULT_LOG")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.sleep)
        out = self.net(x)
        if self.log:
            with open(self.log, "a") as f:  # O_APPEND: one short line per call, atomic across processes
                f.write(f"{os.getpid()} {x.shape[0]}\n")
        return out


def slow_mlp() -> nn.Module:
    return _Slow()


class _OOM(nn.Module):
    def __init__(self, after: int, rank: int | None = None):
        super().__init__()
        self.net = _mlp()
        self.after, self.calls = after, 0
        if rank is not None:
            from landscape.parallel import world

            self.after = after if world().rank == rank else 2**62  # other ranks never run out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls >= self.after:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.15 GiB total capacity)")
        return self.net(x)


def oom_mlp() -> nn.Module:
    """Raises the error torch raises when a batch does not fit, from the ``LANDSCAPE_FAULT_OOM_AFTER``-th call
    (on the MPI rank ``LANDSCAPE_FAULT_OOM_RANK`` only, when set)."""
    rank = os.environ.get("LANDSCAPE_FAULT_OOM_RANK")
    return _OOM(int(os.environ.get("LANDSCAPE_FAULT_OOM_AFTER", "4")), None if rank is None else int(rank))


class _Wrong(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _mlp()

    def forward(self, x):
        return self.net(x)[:, :3].reshape(-1)  # 1-D: not (batch, classes)


def wrong_shape_mlp() -> nn.Module:
    """Output of shape (3·batch,) instead of (batch, classes): no loss can pair it with the targets."""
    return _Wrong()


def frozen_mlp() -> nn.Module:
    """An MLP with no parameter that requires gradients (Hessian directions are impossible)."""
    m = _mlp()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


class _Blowup(nn.Module):
    """Logits scaled by exp(|w|²): finite near the centre, overflowing to inf/NaN far away."""

    def __init__(self):
        super().__init__()
        self.net = _mlp()

    def forward(self, x):
        w = self.net[1].weight if isinstance(self.net, nn.Sequential) else next(self.net.parameters())
        scale = torch.exp(w.pow(2).sum())
        return self.net(x) * scale


def blowup_mlp() -> nn.Module:
    return _Blowup()


def synthetic16():
    """64 seeded examples with 16 features and 10 classes."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 16, generator=g), torch.randint(0, 10, (64,), generator=g)


# ----------------------------------------------------------------------------- files
def done_count(path: str) -> int | None:
    """Points marked done on disk, or None while the file does not exist yet."""
    if not os.path.exists(path):
        return None
    with h5py.File(path, "r", locking=False) as f:
        return int(np.asarray(f["surfaces/done"][()]).sum())


def read_all(path: str) -> dict[str, np.ndarray]:
    """Every dataset and the root attributes: opening and reading all of it proves the file is valid HDF5."""
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r", locking=False) as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
        out["@attrs"] = dict(f.attrs)
    return out


def forward_calls(log: str, batch: int) -> int:
    """Finished forward passes over a full evaluation batch of ``batch`` examples (one per grid point)."""
    if not os.path.exists(log):
        return 0
    with open(log) as f:
        return sum(1 for line in f if line.split()[-1:] == [str(batch)])


# ----------------------------------------------------------------------------- issue 17: bad data and models
def late_bad_label_data():
    """:func:`synthetic16` with label 10 (of 10 classes: 0..9) at example 50, far past the first batch rows."""
    x, y = synthetic16()
    y = y.clone()
    y[50] = 10
    return x, y


def nan_input_data():
    """:func:`synthetic16` with a NaN in the input of example 40."""
    x, y = synthetic16()
    x = x.clone()
    x[40, 3] = float("nan")
    return x, y


def raising_model() -> nn.Module:
    """A model constructor that fails (a bug in the user's code)."""
    raise RuntimeError("boom: the constructor of this model is broken")
