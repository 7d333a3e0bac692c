"""Zoo data sets: functions ``split -> (X, y)`` with X float32 and y int64 class labels."""

from __future__ import annotations

import torch

SPLITS = ("all", "train", "test")


def _split(X: torch.Tensor, y: torch.Tensor, split: str, seed: int = 0):
    """A fixed 80/20 train/test split (seeded permutation), or everything for ``all``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "all":
        return X, y
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(X))
    idx = perm[:cut] if split == "train" else perm[cut:]
    idx = idx.sort().values
    return X[idx], y[idx]


def digits(split: str = "all"):
    """scikit-learn's 8×8 handwritten digits (1,797 images, 10 classes), as (N, 1, 8, 8) in [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ValueError("zoo:digits needs scikit-learn: pip install 'landscape[demo]'") from e
    d = load_digits()
    X = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    return _split(X, y, split)


def synthetic(split: str = "all", n: int = 1024, classes: int = 10, seed: int = 0):
    """Seeded Gaussian blobs shaped like digits: (n, 1, 8, 8), ``classes`` labels."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, 64, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    X = (centers[y] + 0.8 * torch.randn(n, 64, generator=g)).reshape(n, 1, 8, 8)
    return _split(X, y, split)
