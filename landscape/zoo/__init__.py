"""Built-in models and data sets, addressed as ``zoo:NAME`` on the command line.

``MODELS[name](**kwargs) -> nn.Module`` and ``DATASETS[name](split) -> (X, y)`` where split is
``all`` (default), ``train`` or ``test`` (a fixed, seeded 80/20 split).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from . import data, models

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": models.MLP,
}

DATASETS: dict[str, Callable] = {
    "digits": data.digits,
    "synthetic": data.synthetic,
}


def torchvision_dataset(spec: str):
    """``torchvision:CLASS:ROOT`` → a torchvision Dataset (not downloaded; must be in ROOT)."""
    from ..errors import LandscapeError

    raise LandscapeError(f"--data {spec}: torchvision data sets are not supported yet")
