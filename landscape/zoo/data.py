"""Zoo data sets: functions ``split -> (X, y)`` with X float32 and y int64 class labels.

Plus :func:`torchvision_dataset` for ``data="torchvision:CLASS:ROOT[:SPLIT]"``: standard image data
sets already on disk (never downloaded: a landscape run on a cluster node must not reach the
network, and a silent download to the wrong place wastes a job).
"""

from __future__ import annotations

import importlib
import inspect
import os

import torch
from torch.utils.data import ConcatDataset

from ..errors import LandscapeError

SPLITS = ("all", "train", "test")


def _split(X: torch.Tensor, y: torch.Tensor, split: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
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


def digits(split: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8×8 handwritten digits (1,797 images, 10 classes), as (N, 1, 8, 8) in [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ValueError("zoo:digits needs scikit-learn: pip install 'landscape[demo]'") from e
    d = load_digits()
    X = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    return _split(X, y, split)


def synthetic(split: str = "all", n: int = 1024, classes: int = 10,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded Gaussian blobs shaped like digits: (n, 1, 8, 8), ``classes`` labels.

    Needs nothing beyond torch, so tests and ``demo --fast`` run anywhere.
    """
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, 64, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    X = (centers[y] + 0.8 * torch.randn(n, 64, generator=g)).reshape(n, 1, 8, 8)
    return _split(X, y, split)


# --------------------------------------------------------------------------- torchvision
# (mean, std) per channel. CIFAR-10 uses the constants of Li et al.'s dataloader, so their
# checkpoints see the inputs they were trained on.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "CIFAR10": (tuple(c / 255.0 for c in (125.3, 123.0, 113.9)), tuple(c / 255.0 for c in (63.0, 62.1, 66.7))),
    "CIFAR100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "MNIST": ((0.1307,), (0.3081,)),
    "FashionMNIST": ((0.2860,), (0.3530,)),
}
TORCHVISION_SPLITS = ("train", "test", "all")


def parse_torchvision_spec(spec: str) -> tuple[str, str, str]:
    """``torchvision:CLASS:ROOT[:SPLIT]`` → (CLASS, ROOT, SPLIT); SPLIT defaults to ``train``.

    ROOT may itself hold colons (``C:\\data``); only a trailing ``:train``/``:test``/``:all`` is a split.
    """
    usage = "expected torchvision:CLASS:ROOT[:train|test|all], e.g. torchvision:CIFAR10:/data/cifar10"
    if not spec.startswith("torchvision:"):
        raise LandscapeError(f"`data` {spec}: {usage}")
    name, _, root = spec[len("torchvision:"):].partition(":")
    split = "train"
    head, sep, tail = root.rpartition(":")
    if sep and tail in TORCHVISION_SPLITS:
        root, split = head, tail
    if not name or not root:
        raise LandscapeError(f"`data` {spec}: {usage}")
    if name not in NORMALIZATION:
        raise LandscapeError(f"`data` {spec}: unsupported torchvision data set {name!r}; "
                             f"choose one of {', '.join(NORMALIZATION)}")
    return name, root, split


def torchvision_dataset(spec: str):
    """``torchvision:CLASS:ROOT[:SPLIT]`` → a torchvision Dataset (ToTensor + per-channel normalization).

    SPLIT is ``train`` (default), ``test`` or ``all`` (both, train first). The files must already be
    in ROOT, laid out as torchvision's ``download=True`` leaves them; nothing is downloaded.
    """
    name, root, split = parse_torchvision_spec(spec)
    try:
        import torchvision
        from torchvision import transforms
    except ImportError as e:
        raise LandscapeError(f"`data` {spec}: torchvision is not installed (pip install torchvision)") from e
    if not os.path.isdir(root):
        raise LandscapeError(f"`data` {spec}: root directory {root!r} does not exist")
    mean, std = NORMALIZATION[name]
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    cls = getattr(torchvision.datasets, name)
    parts = []
    for train in {"train": (True,), "test": (False,), "all": (True, False)}[split]:
        try:
            parts.append(cls(root=root, train=train, transform=transform, download=False))
        except (RuntimeError, OSError, ValueError) as e:
            raise LandscapeError(
                f"`data` {spec}: {name} ({'train' if train else 'test'} split) not found in {root!r} "
                f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); put the files there, "
                f"e.g. with torchvision.datasets.{name}({root!r}, download=True) on a machine with network"
            ) from e
    if len(parts) == 1:
        return parts[0]
    return ConcatDataset(parts)


# --------------------------------------------------------------------------- characters
#: modules whose documentation strings make the ``zoo:chars`` corpus (all in the standard library)
CORPUS_MODULES = ("textwrap", "string", "functools", "itertools", "collections", "json", "heapq", "bisect",
                  "fractions", "statistics", "shlex", "difflib", "calendar", "base64", "random")
#: the character vocabulary: newline, then printable ASCII (space .. ~); other characters are dropped
VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))


def corpus_text() -> str:
    """The documentation strings of :data:`CORPUS_MODULES` and of their public members, in a fixed order.

    Ships with Python (no download); the text, and so the data, differ between Python versions.
    """
    parts: list[str] = []
    for name in CORPUS_MODULES:
        mod = importlib.import_module(name)
        parts.append(inspect.getdoc(mod) or "")
        for attr in sorted(getattr(mod, "__all__", None) or [a for a in dir(mod) if not a.startswith("_")]):
            obj = getattr(mod, attr, None)
            if callable(obj) and getattr(obj, "__module__", None) == name:
                parts.append(inspect.getdoc(obj) or "")
    keep = set(VOCAB)
    return "\n\n".join(p for p in parts if p).translate({ord(c): None for c in set("".join(parts)) - keep})


def encode(text: str) -> torch.Tensor:
    index = {c: i for i, c in enumerate(VOCAB)}
    return torch.tensor([index[c] for c in text if c in index], dtype=torch.int64)


def chars(split: str = "all", length: int = 32, n: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Character-level language modelling on :func:`corpus_text`: ``(ids, next ids)``, both ``(N, length)`` int64.

    Consecutive, non-overlapping windows of ``length + 1`` characters (at most ``n`` of them), input
    the first ``length``, target the last ``length`` (the next character at every position);
    ``len(VOCAB)`` = 96 symbols. For ``zoo:tinylm``.
    """
    ids = encode(corpus_text())
    windows = min(n, (len(ids) - 1) // length)
    seq = ids[: windows * length + 1]
    X = seq[:-1].reshape(windows, length)
    y = seq[1:].reshape(windows, length)
    return _split(X, y, split)
