"""The model and data zoo: shapes, architecture facts, vmap-ability, data splits, torchvision errors."""

from __future__ import annotations

import os
import sys
import types
from collections import Counter

import pytest
import torch
from torch import nn
from torch.func import functional_call, vmap

from landscape.errors import LandscapeError
from landscape.problem import load_data, load_model
from landscape.zoo import DATASETS, MODELS, data, models, torchvision_dataset

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: intra-op threads only add sync cost (seconds on a busy 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _build(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[name](**kwargs).eval()


def _convs3x3(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules())


# --------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", sorted(set(MODELS) - {"tinylm"}))  # (image classifiers; tinylm: test_models_data)
def test_every_model_builds_for_digits_and_cifar(name):
    x = torch.rand(4, 1, 8, 8)
    assert _build(name)(x).shape == (4, 10)
    kwargs = {"in_features": 3 * 32 * 32} if name == "mlp" else {"in_channels": 3}
    with torch.no_grad():
        assert _build(name, num_classes=7, **kwargs)(torch.rand(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet20", "vgg9"])
def test_eval_mode_is_deterministic(name):
    model = _build(name)
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("depth,blocks", [(20, 9), (56, 27), (110, 54)])
def test_resnet_structure(depth, blocks):
    model = _build(f"resnet{depth}")
    assert model.blocks_per_stage * 3 == blocks
    assert sum(isinstance(m, models.BasicBlock) for m in model.modules()) == blocks
    for stage in (model.layer1, model.layer2, model.layer3):
        assert len(stage) == blocks // 3
    # depth = first conv + 2 convs per block + the linear head; projections are 1x1 (2 of them)
    assert _convs3x3(model) == depth - 1
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 1
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules()) == 2
    assert [model.layer1[0].conv1.out_channels, model.layer2[0].conv1.out_channels,
            model.layer3[0].conv1.out_channels] == [16, 32, 64]
    noshort = _build(f"resnet{depth}_noshort")
    assert _convs3x3(noshort) == depth - 1
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in noshort.modules())


def test_resnet_width_and_generic_depth():
    wide = _build("resnet20", width=2)
    assert wide.layer3[-1].conv2.out_channels == 128 and wide.linear.in_features == 128
    assert _convs3x3(_build("resnet", depth=32)) == 31


def test_resnet20_matches_li_et_al_parameter_count():
    """0.27M parameters, as in He et al. Table 6 (option B adds the two projections)."""
    n = sum(p.numel() for p in _build("resnet20", in_channels=3).parameters())
    assert 0.26e6 < n < 0.28e6


def test_shortcut_false_removes_the_skip():
    noshort = _build("resnet20_noshort")
    short = _build("resnet20")
    result = short.load_state_dict(noshort.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(".shortcut." in k for k in result.missing_keys)
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(short(x), noshort(x), atol=1e-4)
    # the same weights, with the skip removed only by the flag: identical to the _noshort entry
    flag = _build("resnet20", shortcut=False)
    flag.load_state_dict(noshort.state_dict())
    with torch.no_grad():
        assert torch.equal(flag(x), noshort(x))


@pytest.mark.parametrize("name,kwargs", [("mlp", {}), ("cnn", {}), ("resnet20", {"bn": False}),
                                         ("resnet56_noshort", {"bn": False}), ("vgg9", {"bn": False})])
def test_bn_false_has_no_batchnorm(name, kwargs):
    model = _build(name, **kwargs)
    assert not any(isinstance(m, BN_TYPES) for m in model.modules())
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear))
    assert model(torch.rand(3, 1, 8, 8)).shape == (3, 10)


def test_bn_true_has_batchnorm():
    for name, kwargs in [("cnn", {"bn": True}), ("resnet20", {}), ("vgg9", {}), ("mlp", {"bn": True})]:
        assert any(isinstance(m, BN_TYPES) for m in _build(name, **kwargs).modules()), name


def test_vgg9_is_li_et_al():
    """7 conv layers, 3 max-pools, 2 linear layers; Li et al.'s layer shapes at image_size=32."""
    model = _build("vgg9", in_channels=3, image_size=32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(256 * 4 * 4, 256), (256, 10)]
    assert {k.split(".")[0] for k in model.state_dict()} == {"features", "fc", "classifier"}
    assert _build("vgg9").fc[0].in_features == 256  # 8x8 digits: 1x1 after three pools


def _perturbed_copies(model: nn.Module, k: int) -> list[dict[str, torch.Tensor]]:
    """k different weight sets: params + noise, BN running stats moved away from 0/1."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(k):
        sd = {}
        for n, p in model.named_parameters():
            sd[n] = p.detach() + 0.1 * torch.randn(p.shape, generator=g)
        for n, b in model.named_buffers():
            if "running_mean" in n:
                b = b + 0.1 * torch.randn(b.shape, generator=g)
            elif "running_var" in n:
                b = b * torch.exp(0.2 * torch.randn(b.shape, generator=g))
            sd[n] = b.clone()
        out.append(sd)
    return out


@pytest.mark.parametrize("name,kwargs", [("mlp", {"bn": True}), ("cnn", {"bn": True}), ("resnet20", {}),
                                         ("resnet20_noshort", {}), ("vgg9", {})])
def test_vmap_functional_call_matches_separate_forwards(name, kwargs):
    model = _build(name, **kwargs)
    x = torch.rand(5, 1, 8, 8)
    copies = _perturbed_copies(model, 3)
    stacked = {n: torch.stack([c[n] for c in copies]) for n in copies[0]}
    with torch.no_grad():
        batched = vmap(lambda sd: functional_call(model, sd, (x,)))(stacked)
        separate = torch.stack([functional_call(model, c, (x,)) for c in copies])
    assert batched.shape == (3, 5, 10)
    torch.testing.assert_close(batched, separate, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(separate[0], separate[1])


@pytest.mark.parametrize("name,kwargs,match", [
    ("resnet", {"depth": 21}, "6n\\+2"),
    ("resnet", {"depth": 2}, "6n\\+2"),
    ("resnet20", {"width": 0}, "width"),
    ("resnet20", {"bn": "maybe"}, "bn"),
    ("cnn", {"width": -1}, "width"),
    ("vgg9", {"in_channels": 0}, "in_channels"),
    ("mlp", {"act": "swish"}, "activation"),
    ("mlp", {"depth": -1}, "depth"),
])
def test_bad_kwargs_raise_value_error(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MODELS[name](**kwargs)


def test_load_model_from_command_line_args():
    model = load_model("zoo:resnet20", "bn=false,width=0.5,in_channels=3")
    assert not any(isinstance(m, BN_TYPES) for m in model.modules())
    assert model.conv1.out_channels == 8
    with pytest.raises(LandscapeError, match="6n\\+2"):
        load_model("zoo:resnet", "depth=51")
    with pytest.raises(LandscapeError, match="does not accept"):
        load_model("zoo:resnet56_noshort", "shortcut=true")


# --------------------------------------------------------------------------- data
def _rows(X: torch.Tensor, y: torch.Tensor) -> Counter:
    return Counter((xi.numpy().tobytes(), int(yi)) for xi, yi in zip(X, y))


@pytest.mark.parametrize("name", sorted(set(DATASETS) - {"chars"}))  # (image data; chars: test_models_data)
def test_dataset_shapes_and_splits(name):
    if name == "digits":
        pytest.importorskip("sklearn")
    X, y = DATASETS[name]("all")
    assert X.dtype == torch.float32 and y.dtype == torch.int64
    assert X.ndim == 4 and X.shape[1:] == (1, 8, 8) and y.shape == (len(X),)
    assert int(y.min()) >= 0 and int(y.max()) == 9
    Xtr, ytr = DATASETS[name]("train")
    Xte, yte = DATASETS[name]("test")
    assert len(Xtr) == int(0.8 * len(X)) and len(Xtr) + len(Xte) == len(X)
    # a partition: as multisets of (image, label), train + test == all
    assert _rows(Xtr, ytr) + _rows(Xte, yte) == _rows(X, y)
    if name == "synthetic":  # continuous noise: every row is unique, so the splits are disjoint as sets
        assert not set(_rows(Xtr, ytr)) & set(_rows(Xte, yte))
    with pytest.raises(ValueError, match="split"):
        DATASETS[name]("validation")


def test_digits_range():
    pytest.importorskip("sklearn")
    X, _ = data.digits()
    assert X.shape == (1797, 1, 8, 8) and float(X.min()) >= 0.0 and float(X.max()) <= 1.0


def test_synthetic_is_deterministic():
    X1, y1 = data.synthetic("train")
    X2, y2 = data.synthetic("train")
    assert torch.equal(X1, X2) and torch.equal(y1, y2)
    X3, _ = data.synthetic("train", seed=1)
    assert not torch.equal(X1, X3)
    X4, y4 = data.synthetic(n=50, classes=3)
    assert X4.shape == (50, 1, 8, 8) and set(y4.tolist()) <= {0, 1, 2}


def test_zoo_data_through_load_data():
    X, y = load_data("zoo:synthetic:test")
    assert len(X) == 1024 - int(0.8 * 1024)
    with pytest.raises(LandscapeError, match="split"):
        load_data("zoo:synthetic:nope")


# --------------------------------------------------------------------------- torchvision
def test_torchvision_missing_gives_landscape_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails even where it is installed
    for call in (lambda: torchvision_dataset("torchvision:CIFAR10:/data/cifar10"),
                 lambda: load_data("torchvision:MNIST:/data/mnist:test")):
        with pytest.raises(LandscapeError, match="pip install torchvision") as err:
            call()
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("spec", ["torchvision:CIFAR10", "torchvision:CIFAR10:", "torchvision::/root",
                                  "torchvision:ImageNet:/root"])
def test_torchvision_bad_spec(spec):
    with pytest.raises(LandscapeError, match="torchvision"):
        torchvision_dataset(spec)


def test_torchvision_spec_parsing():
    assert data.parse_torchvision_spec("torchvision:CIFAR10:/data/c10") == ("CIFAR10", "/data/c10", "train")
    assert data.parse_torchvision_spec("torchvision:MNIST:/m:test") == ("MNIST", "/m", "test")
    assert data.parse_torchvision_spec("torchvision:FashionMNIST:C:\\data:all") == ("FashionMNIST", "C:\\data", "all")
    assert data.parse_torchvision_spec("torchvision:CIFAR10:/a:b") == ("CIFAR10", "/a:b", "train")


@pytest.fixture
def fake_torchvision(monkeypatch):
    """A stand-in torchvision: CIFAR10 'finds' its files only if ROOT holds data_batch_1."""
    calls: list[dict] = []

    class CIFAR10(torch.utils.data.Dataset):
        def __init__(self, root, train=True, transform=None, download=False):
            calls.append({"root": root, "train": train, "download": download})
            if not os.path.exists(os.path.join(root, "data_batch_1")):
                raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
            self.n, self.transform = (5 if train else 3), transform

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            return self.transform(torch.full((32, 32, 3), 0.5)), i % 10

    tv = types.ModuleType("torchvision")
    tv.datasets = types.SimpleNamespace(CIFAR10=CIFAR10)
    tr = types.ModuleType("torchvision.transforms")
    tr.ToTensor = lambda: (lambda img: img.permute(2, 0, 1))
    tr.Normalize = lambda mean, std: (lambda t: (t - torch.tensor(mean)[:, None, None])
                                      / torch.tensor(std)[:, None, None])
    tr.Compose = lambda fs: (lambda t: [t := f(t) for f in fs][-1])
    tv.transforms = tr
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.transforms", tr)
    return calls


def test_torchvision_files_missing_names_root(fake_torchvision, tmp_path):
    with pytest.raises(LandscapeError, match=str(tmp_path)) as err:
        torchvision_dataset(f"torchvision:CIFAR10:{tmp_path}")
    assert "not found" in str(err.value)
    assert fake_torchvision and all(c["download"] is False for c in fake_torchvision)
    with pytest.raises(LandscapeError, match="does not exist"):
        torchvision_dataset(f"torchvision:CIFAR10:{tmp_path}/nowhere")


def test_torchvision_dataset_found(fake_torchvision, tmp_path):
    (tmp_path / "data_batch_1").write_bytes(b"")
    train = torchvision_dataset(f"torchvision:CIFAR10:{tmp_path}")
    assert len(train) == 5 and fake_torchvision[-1] == {"root": str(tmp_path), "train": True, "download": False}
    x, _ = train[0]
    mean, std = data.NORMALIZATION["CIFAR10"]
    torch.testing.assert_close(x[:, 0, 0], (0.5 - torch.tensor(mean)) / torch.tensor(std))
    assert len(torchvision_dataset(f"torchvision:CIFAR10:{tmp_path}:test")) == 3
    assert len(torchvision_dataset(f"torchvision:CIFAR10:{tmp_path}:all")) == 8
    X, y = load_data(f"torchvision:CIFAR10:{tmp_path}:all")
    assert X.shape == (8, 3, 32, 32) and y.dtype == torch.int64
