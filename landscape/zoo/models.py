"""Zoo models. Defaults fit ``zoo:digits`` (1×8×8 images, 10 classes).

Every model here:

* takes ``num_classes`` and ``in_channels`` (the MLP takes ``in_features`` instead) and ends in
  adaptive pooling, so the same class works on 8×8 digits and 32×32 CIFAR images;
* is deterministic in eval mode (no dropout) and uses only standard modules with no in-place
  operations, so ``torch.func.functional_call`` + ``vmap`` over stacked weights works on it (BatchNorm
  included, in eval mode) — that is how :mod:`landscape.evaluate` scores many grid points at once;
* keeps the module names of Li et al.'s reference code (github.com/tomgoldstein/loss-landscape,
  ``cifar10/models/{resnet,vgg}.py``), so their CIFAR-10 checkpoints load with ``in_channels=3``
  (and ``image_size=32`` for VGG-9).

Bad keyword values raise :class:`ValueError` (``landscape.problem.load_model`` turns it into a
one-line user error).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "elu": nn.ELU}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _positive_int(name: str, value: object) -> int:
    """Command-line kwargs arrive parsed (``width=8`` → 8); refuse floats, bools and ≤ 0 early."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _channels(base: int, width: object) -> int:
    """``base`` channels scaled by the width multiplier (int or float), at least 1."""
    if isinstance(width, bool) or not isinstance(width, int | float) or not width > 0 or math.isinf(width):
        raise ValueError(f"width must be a positive number (a channel multiplier), got {width!r}")
    return max(1, round(base * width))


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


class MLP(nn.Sequential):
    """Fully connected net: Flatten → [Linear → (BatchNorm1d) → act] × depth → Linear."""

    def __init__(self, in_features: int = 64, num_classes: int = 10, width: int = 32, depth: int = 2,
                 bn: bool = False, act: str = "relu"):
        _positive_int("in_features", in_features)
        _positive_int("num_classes", num_classes)
        _positive_int("width", width)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be a non-negative integer, got {depth!r}")
        bn = _flag("bn", bn)
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


# --------------------------------------------------------------------------- small CNN
class CNN(nn.Module):
    """Two conv blocks (conv → (BN) → ReLU → 2×2 max-pool) and a linear head.

    The smallest convolutional model worth a landscape: fast enough for the demo on a CPU, yet
    with filters, so filter normalization means something. Adaptive average pooling to 2×2 before
    the head keeps it shape-agnostic (8×8 digits: an identity; 32×32: a 4×4 average).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16, bn: bool = False):
        super().__init__()
        _positive_int("num_classes", num_classes)
        _positive_int("in_channels", in_channels)
        _positive_int("width", width)
        bn = _flag("bn", bn)
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out in (width, 2 * width):
            layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm2d(c_out))
            layers += [nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Linear(c_in * 4, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


# --------------------------------------------------------------------------- CIFAR ResNets
class BasicBlock(nn.Module):
    """conv3×3 → BN → ReLU → conv3×3 → BN (+ shortcut) → ReLU (He et al. 2016).

    Shortcut: identity when shapes match, else a 1×1 strided convolution (+ BN), i.e. He et al.'s
    option B, as in Li et al.'s code (so their checkpoints load). ``shortcut=False`` builds no
    shortcut at all: the "noshort" nets of Li et al. §5, whose landscapes turn chaotic with depth.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: bool = True, bn: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=not bn)
        self.bn1 = nn.BatchNorm2d(planes) if bn else nn.Identity()
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=not bn)
        self.bn2 = nn.BatchNorm2d(planes) if bn else nn.Identity()
        self.relu2 = nn.ReLU()
        self.has_shortcut = shortcut
        if shortcut:
            if stride != 1 or in_planes != planes:
                proj: list[nn.Module] = [nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=not bn)]
                if bn:
                    proj.append(nn.BatchNorm2d(planes))
                self.shortcut = nn.Sequential(*proj)
            else:
                self.shortcut = nn.Sequential()  # identity; same (empty) module as in Li et al.

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.has_shortcut:
            out = out + self.shortcut(x)  # not +=: in-place ops on activations break vmap/autograd
        return self.relu2(out)


class CifarResNet(nn.Module):
    """ResNet for CIFAR (He et al. 2016 §4.2): 3 stages of n = (depth-2)/6 basic blocks.

    conv3×3(16w) → stage 16w (stride 1) → stage 32w (stride 2) → stage 64w (stride 2) → global
    average pool → linear; ``w`` is the ``width`` multiplier (Li et al.'s WRN-56-k is ``width=k``).
    ``depth`` counts the weighted layers on the main path: 1 + 6n convs + 1 linear.
    ``bn=False`` drops every BatchNorm and gives the convolutions a bias instead.
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 1, width: float = 1,
                 shortcut: bool = True, bn: bool = True):
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"resnet depth must be 6n+2 with n ≥ 1 (8, 14, 20, 32, 44, 56, 110, ...), got {depth!r}")
        _positive_int("num_classes", num_classes)
        _positive_int("in_channels", in_channels)
        shortcut, bn = _flag("shortcut", shortcut), _flag("bn", bn)
        n = (depth - 2) // 6
        planes = [_channels(c, width) for c in (16, 32, 64)]
        self.depth, self.blocks_per_stage = depth, n
        self.conv1 = nn.Conv2d(in_channels, planes[0], kernel_size=3, stride=1, padding=1, bias=not bn)
        self.bn1 = nn.BatchNorm2d(planes[0]) if bn else nn.Identity()
        self.relu = nn.ReLU()
        c_in = planes[0]
        stages = []
        for i, p in enumerate(planes):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(c_in, p, stride=2 if (i > 0 and j == 0) else 1, shortcut=shortcut, bn=bn))
                c_in = p
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(self.pool(out).flatten(1))


def resnet(depth: int = 20, num_classes: int = 10, in_channels: int = 1, width: float = 1,
           shortcut: bool = True, bn: bool = True) -> CifarResNet:
    """CIFAR ResNet of any depth 6n+2 (``zoo:resnet --model-args depth=32``)."""
    return CifarResNet(depth, num_classes, in_channels, width, shortcut, bn)


def _fixed_resnet(depth: int, shortcut: bool) -> Callable[..., CifarResNet]:
    """A registry entry with the depth (and, for ``_noshort``, the shortcut) fixed by its name."""

    def with_short(num_classes: int = 10, in_channels: int = 1, width: float = 1,
                   shortcut: bool = True, bn: bool = True) -> CifarResNet:
        return CifarResNet(depth, num_classes, in_channels, width, shortcut, bn)

    def noshort(num_classes: int = 10, in_channels: int = 1, width: float = 1, bn: bool = True) -> CifarResNet:
        return CifarResNet(depth, num_classes, in_channels, width, False, bn)

    factory = with_short if shortcut else noshort
    factory.__name__ = f"resnet{depth}" + ("" if shortcut else "_noshort")
    factory.__doc__ = f"ResNet-{depth} for CIFAR ({'with' if shortcut else 'without'} shortcuts)."
    return factory


resnet20, resnet56, resnet110 = (_fixed_resnet(d, True) for d in (20, 56, 110))
resnet20_noshort, resnet56_noshort, resnet110_noshort = (_fixed_resnet(d, False) for d in (20, 56, 110))


# --------------------------------------------------------------------------- VGG-9
VGG9_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M"]  # Li et al.'s VGG9


class VGG(nn.Module):
    """VGG-9 of Li et al.: 7 conv3×3 (+BN) layers with 3 max-pools, then FC → (BN) → ReLU → FC.

    Their FC layer reads the flattened last feature map (256 × 4 × 4 on 32×32 CIFAR). Here an
    adaptive average pool to ``ceil(image_size / 8)`` squared comes first, so the layer shapes are
    exactly Li et al.'s for ``image_size=32`` (the pool is then an identity) and any other input
    size still works (8×8 digits with the default ``image_size=8``: 1×1, FC 256 → 256).
    ``width`` scales every layer's channels.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1, bn: bool = True,
                 image_size: int = 8, cfg: list[int | str] | None = None):
        super().__init__()
        _positive_int("num_classes", num_classes)
        _positive_int("in_channels", in_channels)
        _positive_int("image_size", image_size)
        bn = _flag("bn", bn)
        cfg = VGG9_CFG if cfg is None else cfg
        layers: list[nn.Module] = []
        c_in, size = in_channels, image_size
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))  # 1×1 stays 1×1
                size = math.ceil(size / 2)
            else:
                c_out = _channels(int(v), width)
                layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1))  # biased even with BN, as in Li et al.
                if bn:
                    layers.append(nn.BatchNorm2d(c_out))
                layers.append(nn.ReLU())
                c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(size)
        fc: list[nn.Module] = [nn.Linear(c_in * size * size, c_in)]
        if bn:
            fc.append(nn.BatchNorm1d(c_in))
        fc.append(nn.ReLU())
        self.fc = nn.Sequential(*fc)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.fc(self.pool(self.features(x)).flatten(1)))


def vgg9(num_classes: int = 10, in_channels: int = 1, width: float = 1, bn: bool = True,
         image_size: int = 8) -> VGG:
    """VGG-9 of Li et al. (``in_channels=3,image_size=32`` for their CIFAR-10 checkpoints)."""
    return VGG(num_classes, in_channels, width, bn, image_size)


# --------------------------------------------------------------------------- tiny causal transformer
class _Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(LN(x)), then x + MLP(LN(x)); causal self-attention."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, mlp_ratio * d_model)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_ratio * d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        h = self.n_heads
        q, k, v = self.qkv(self.ln1(x)).reshape(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        # written out (not scaled_dot_product_attention) so that vmap and double backward work everywhere
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // h)
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        att = scores.masked_fill(future, float("-inf")).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class TinyLM(nn.Module):
    """A tiny GPT-style causal language model: token + position embeddings, pre-LN blocks, a linear head.

    ``forward(ids)`` maps token ids ``(B, L)`` (``L <= context``) to next-token logits ``(B, L, vocab)``;
    the target at position t is token t + 1 (``zoo:chars`` gives such pairs). Defaults (vocab 96 =
    ``zoo:chars``, d_model 32, 2 layers, 2 heads) hold about 25k parameters.
    """

    def __init__(self, vocab: int = 96, d_model: int = 32, n_layers: int = 2, n_heads: int = 2,
                 context: int = 64, mlp_ratio: int = 2):
        for name, v in (("vocab", vocab), ("d_model", d_model), ("n_heads", n_heads), ("context", context),
                        ("mlp_ratio", mlp_ratio)):
            _positive_int(name, v)
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 0:
            raise ValueError(f"n_layers must be a non-negative integer, got {n_layers!r}")
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        super().__init__()
        self.context = context
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, mlp_ratio) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)
        for m in self.modules():  # GPT-2's initialization scale
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, ids: Tensor) -> Tensor:
        t = ids.shape[-1]
        if t > self.context:
            raise ValueError(f"sequences of {t} tokens are longer than the model's context of {self.context}")
        x = self.tok(ids) + self.pos(torch.arange(t, device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))
