"""Built-in models and data sets, addressed as ``zoo:NAME`` on the command line.

``MODELS[name](**kwargs) -> nn.Module`` (kwargs from ``--model-args key=value,...``) and
``DATASETS[name](split) -> (X, y)`` where split is ``all`` (default), ``train`` or ``test`` (a
fixed, seeded 80/20 split). ``torchvision_dataset("torchvision:CIFAR10:/data[:test]")`` reads a
torchvision data set that is already on disk.

Models (all default to digits: ``in_channels=1``, 8×8 inputs, ``num_classes=10``):

* ``mlp``: in_features=64, num_classes=10, width=32, depth=2, bn=False, act=relu
* ``cnn``: num_classes, in_channels, width=16, bn=False
* ``resnet``: depth=20 (any 6n+2), num_classes, in_channels, width=1, shortcut=True, bn=True
* ``resnet20``, ``resnet56``, ``resnet110``: num_classes, in_channels, width=1, shortcut=True, bn=True
* ``resnet20_noshort``, ``resnet56_noshort``, ``resnet110_noshort``: the same without shortcut
* ``vgg9``: num_classes, in_channels, width=1, bn=True, image_size=8 (32 for CIFAR-10)
* ``tinylm``: a tiny causal transformer for ``zoo:chars``: vocab=96, d_model=32, n_layers=2, n_heads=2,
  context=64, mlp_ratio=2 (token ids (B, L) → logits (B, L, vocab))

Data: ``digits`` (scikit-learn), ``synthetic`` (Gaussian blobs), ``chars`` (character-level language
modelling on the standard library's documentation strings: int64 ids (N, 32) and next ids (N, 32)).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from . import data, models
from .data import torchvision_dataset

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": models.MLP,
    "cnn": models.CNN,
    "resnet": models.resnet,
    "resnet20": models.resnet20,
    "resnet56": models.resnet56,
    "resnet110": models.resnet110,
    "resnet20_noshort": models.resnet20_noshort,
    "resnet56_noshort": models.resnet56_noshort,
    "resnet110_noshort": models.resnet110_noshort,
    "vgg9": models.vgg9,
    "tinylm": models.TinyLM,
}

DATASETS: dict[str, Callable[[str], tuple]] = {
    "digits": data.digits,
    "synthetic": data.synthetic,
    "chars": data.chars,
}

__all__ = ["MODELS", "DATASETS", "torchvision_dataset", "data", "models"]
