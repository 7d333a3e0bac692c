"""Zoo models. Defaults fit ``zoo:digits`` (1×8×8 images, 10 classes)."""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "elu": nn.ELU}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Sequential):
    """Fully connected net: Flatten → [Linear → (BatchNorm1d) → act] × depth → Linear."""

    def __init__(self, in_features: int = 64, num_classes: int = 10, width: int = 32, depth: int = 2,
                 bn: bool = False, act: str = "relu"):
        layers: list[nn.Module] = [nn.Flatten()]
        d = in_features
        for _ in range(depth):
            layers.append(nn.Linear(d, width))
            if bn:
                layers.append(nn.BatchNorm1d(width))
            layers.append(_activation(act))
            d = width
        layers.append(nn.Linear(d, num_classes))
        super().__init__(*layers)
