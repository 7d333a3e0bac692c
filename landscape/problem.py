"""What is being measured: a model, its loss, and evaluation batches already on the device.

A :class:`Problem` is built once per process from three specs:

* model: ``zoo:NAME`` (see :mod:`landscape.zoo`) or ``package.module:callable`` returning an
  ``nn.Module`` (keyword arguments from ``--model-args key=value,...``);
* checkpoint: a ``state_dict`` (or a dict holding one under ``state_dict``/``model``/``net``),
  ``.pt``/``.pth`` loaded with ``torch.load(weights_only=True)``, or ``.safetensors``;
* data: ``zoo:NAME[:SPLIT]``, ``torchvision:CLASS:ROOT`` or ``package.module:callable``
  returning a Dataset, a DataLoader or an ``(X, y)`` pair.

``package.module:callable`` specs are the one place where user code runs; checkpoints never
unpickle code unless ``unsafe_load=True``.

Example:
    >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=64, batch_size=32, device="cpu")
    >>> len(p.batches), p.n_samples
    (2, 64)
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import LandscapeError

Batch = tuple[Tensor, Tensor]
LOSSES = ("cross_entropy", "mse")


# --------------------------------------------------------------------------- specs
def parse_kwargs(text: str | None) -> dict:
    """``"depth=3,width=64,bn=true,act=relu"`` → ``{'depth': 3, 'width': 64, 'bn': True, ...}``."""
    out: dict = {}
    if not text:
        return out
    for item in text.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise LandscapeError(f"--model-args: {item!r} is not key=value (example: depth=3,bn=true)")
        key, value = (s.strip() for s in item.split("=", 1))
        out[key] = _literal(value)
    return out


def _literal(v: str):
    low = v.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low == "none":
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def import_callable(spec: str, what: str) -> Callable:
    """Resolve ``package.module:callable`` (runs user code: the import itself)."""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise LandscapeError(f"{what}: {spec!r} is not 'zoo:NAME' or 'package.module:callable'")
    try:
        module = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the user's to fix
        raise LandscapeError(f"{what}: cannot import module {mod_name!r} ({type(e).__name__}: {e})") from e
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise LandscapeError(f"{what}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise LandscapeError(f"{what}: {spec!r} is not callable")
    return obj


def load_model(spec: str, model_args: dict | str | None = None, seed: int = 0) -> nn.Module:
    """Build a model from ``zoo:NAME`` or ``package.module:callable``.

    Construction runs under ``torch.manual_seed(seed)`` (in a forked RNG state), so a model used
    without a checkpoint has the same initial weights on every rank and every run.
    """
    from . import zoo

    kwargs = parse_kwargs(model_args) if isinstance(model_args, str) or model_args is None else dict(model_args)
    if spec.startswith("zoo:"):
        name = spec[4:]
        if name not in zoo.MODELS:
            raise LandscapeError(f"--model: unknown zoo model {name!r}; choose one of {', '.join(sorted(zoo.MODELS))}")
        factory = zoo.MODELS[name]
    else:
        factory = import_callable(spec, "--model")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = factory(**kwargs)
    except (TypeError, ValueError) as e:
        raise LandscapeError(f"--model-args: {spec} does not accept {kwargs} ({e})") from e
    if not isinstance(model, nn.Module):
        raise LandscapeError(f"--model: {spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


# --------------------------------------------------------------------------- checkpoints
STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "params")


def _checkpoint_label(flag: str | None) -> str:
    return f"{flag}: checkpoint" if flag else "checkpoint"


def read_state_dict(path: str, unsafe_load: bool = False, flag: str | None = None) -> dict[str, Tensor]:
    """Read a checkpoint file into a plain ``{name: tensor}`` dict.

    ``.pt``/``.pth``/anything else goes through ``torch.load(weights_only=True)``; a file that
    would need to unpickle code (a whole pickled model) is refused unless ``unsafe_load``.
    ``flag`` (``--checkpoint``, ``--init``, ...) is the option the path came from; errors name it.
    """
    what = _checkpoint_label(flag)
    if not os.path.isfile(path):
        raise LandscapeError(f"{what} {path!r} does not exist")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise LandscapeError(f"{what} {path!r}: reading .safetensors needs 'pip install safetensors'") from e
        return dict(load_file(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not unsafe_load)
    except pickle.UnpicklingError as e:
        raise LandscapeError(
            f"{what} {path!r} holds pickled objects that may run code; refusing to load it "
            "(save model.state_dict() instead, or pass --unsafe-load if you trust the file)"
        ) from e
    except Exception as e:  # noqa: BLE001
        first = str(e).splitlines()[0] if str(e) else ""
        raise LandscapeError(f"{what} {path!r} could not be read ({type(e).__name__}: {first})") from e
    if unsafe_load:
        warnings.warn(f"--unsafe-load: {path} was unpickled with full code execution", stacklevel=2)
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in STATE_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                inner = inner.state_dict()
            if isinstance(inner, dict) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise LandscapeError(
            f"{what} {path!r} is not a state_dict (expected {{name: tensor}}, possibly under one of {STATE_KEYS})"
        )
    # DataParallel / torch.compile prefixes
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def load_checkpoint(model: nn.Module, path: str, unsafe_load: bool = False, flag: str | None = None) -> None:
    """Load a checkpoint into ``model``, naming the first mismatches if keys or shapes differ (and ``flag``)."""
    sd = read_state_dict(path, unsafe_load=unsafe_load, flag=flag)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
    if shapes:
        problems.append(f"shape {'; '.join(shapes[:3])}{' ...' if len(shapes) > 3 else ''}")
    if problems:
        raise LandscapeError(f"{_checkpoint_label(flag)} {path!r} does not match the model: {'; '.join(problems)} "
                             "(check --model and --model-args)")
    model.load_state_dict(sd)


# --------------------------------------------------------------------------- data
def _as_tensors(obj, spec: str) -> Batch:
    """Turn what a data callable returned into ``(X, y)`` tensors on the CPU."""
    from torch.utils.data import DataLoader, Dataset

    if isinstance(obj, tuple | list) and len(obj) == 2 and not isinstance(obj, Dataset):
        X, y = obj
        X = torch.as_tensor(X)
        y = torch.as_tensor(y)
    elif isinstance(obj, DataLoader | Dataset):
        loader = obj if isinstance(obj, DataLoader) else DataLoader(obj, batch_size=512, shuffle=False)
        xs, ys = [], []
        try:
            for item in loader:
                if not isinstance(item, tuple | list) or len(item) < 2:
                    raise LandscapeError(f"--data: {spec} yields {type(item).__name__}, expected (input, target) pairs")
                xs.append(torch.as_tensor(item[0]))
                ys.append(torch.as_tensor(item[1]))
        except LandscapeError:
            raise
        except Exception as e:  # noqa: BLE001
            raise LandscapeError(f"--data: iterating {spec} failed ({type(e).__name__}: {e})") from e
        if not xs:
            raise LandscapeError(f"--data: {spec} is empty")
        X, y = torch.cat(xs), torch.cat(ys)
    else:
        raise LandscapeError(
            f"--data: {spec} returned {type(obj).__name__}; expected a Dataset, a DataLoader or an (X, y) pair"
        )
    if X.ndim == 0 or y.ndim == 0 or len(X) != len(y) or len(X) == 0:
        raise LandscapeError(f"--data: {spec} gave inputs of shape {tuple(X.shape)} and targets of shape "
                             f"{tuple(y.shape)}; they need the same non-zero length")
    if not X.is_floating_point():
        X = X.float()
    return X, y


def load_data(spec: str, flag: str = "--data") -> Batch:
    """All samples of a data spec as CPU tensors ``(X, y)`` (``flag`` names the option in errors)."""
    try:
        return _load_data(spec, flag)
    except LandscapeError as e:
        if flag != "--data" and str(e).startswith("--data"):
            raise LandscapeError(flag + str(e)[len("--data"):]) from e
        raise


def _load_data(spec: str, flag: str) -> Batch:
    from . import zoo

    if spec.startswith("zoo:"):
        name, _, split = spec[4:].partition(":")
        if name not in zoo.DATASETS:
            names = ", ".join(sorted(zoo.DATASETS))
            raise LandscapeError(f"--data: unknown zoo data set {name!r}; choose one of {names}")
        try:
            obj = zoo.DATASETS[name](split or "all")
        except ValueError as e:
            raise LandscapeError(f"--data {spec}: {e}") from e
    elif spec.startswith("torchvision:"):
        obj = zoo.torchvision_dataset(spec)
    else:
        fn = import_callable(spec, "--data")
        try:
            obj = fn()
        except LandscapeError:
            raise
        except Exception as e:  # noqa: BLE001
            raise LandscapeError(f"--data: calling {spec} failed ({type(e).__name__}: {e})") from e
    return _as_tensors(obj, spec)


def subsample(X: Tensor, y: Tensor, samples: int | None, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """A fixed, seeded subset of ``samples`` examples (sorted indices; all if None)."""
    n = len(X)
    if samples is None or samples >= n:
        idx = torch.arange(n)
    else:
        if samples <= 0:
            raise LandscapeError(f"--samples must be positive, got {samples}")
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(n, generator=g)[:samples].sort().values
    return X[idx], y[idx], idx


def fingerprint_data(X: Tensor, y: Tensor) -> str:
    h = hashlib.sha256()
    for t in (X, y):
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- device
def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:(local_rank % n_gpus)`` when CUDA is there, else CPU (as
    :func:`landscape.parallel.device_for_rank`); ``cuda:N`` is checked against the GPUs there are."""
    from .parallel import device_for_rank

    if isinstance(device, torch.device):
        return device
    if device in ("auto", "cuda"):
        return torch.device(device_for_rank(device, local_rank))
    if device == "cpu":
        return torch.device(device)
    if device.startswith("cuda:"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device[5:]
        if not index.isdigit():
            raise LandscapeError(f"--device: {device!r} is not auto, cpu, cuda or cuda:N")
        if int(index) >= n:
            if not n:
                raise LandscapeError(f"--device {device}: no CUDA device is available (use --device cpu or auto)")
            raise LandscapeError(f"--device {device}: only cuda:0..cuda:{n - 1} exist (use --device auto, cpu or "
                                 f"cuda:N with N < {n})")
        return torch.device(device)
    raise LandscapeError(f"--device: {device!r} is not auto, cpu, cuda or cuda:N")


# --------------------------------------------------------------------------- the problem
def loss_sum(loss: str, output: Tensor, target: Tensor) -> Tensor:
    """Summed per-example loss of a batch (so batches are weighted by their size).

    ``mse``: per example the mean over output entries of (f - t)², with integer class targets
    one-hot encoded; the mean over examples equals ``nn.MSELoss()``.
    """
    if loss == "cross_entropy":
        return F.cross_entropy(output, target, reduction="sum")
    if loss == "mse":
        if not target.is_floating_point():
            target = F.one_hot(target.long(), output.shape[-1]).to(output.dtype)
        target = target.reshape(output.shape)
        per = (output - target).pow(2).reshape(output.shape[0], -1).mean(dim=1)
        return per.sum()
    raise LandscapeError(f"--loss: {loss!r} is not one of {', '.join(LOSSES)}")


def correct_count(output: Tensor, target: Tensor) -> Tensor:
    """Number of correctly classified examples (0-d tensor; argmax over the last dim)."""
    if target.is_floating_point() and target.shape == output.shape and output.ndim == 2:
        target = target.argmax(-1)
    return (output.argmax(-1) == target.reshape(output.shape[:-1])).sum()


@dataclass
class Problem:
    """A model (eval mode, on ``device``), a loss and preloaded evaluation batches per split."""

    model: nn.Module
    loss: str
    splits: dict[str, list[Batch]]
    device: torch.device
    classification: bool = True
    info: dict = field(default_factory=dict)

    @property
    def batches(self) -> list[Batch]:
        """The training split's batches (what surfaces and curvature are computed on)."""
        return self.splits["train"]

    @property
    def n_samples(self) -> int:
        return sum(len(x) for x, _ in self.batches)

    def loss_sum(self, output: Tensor, target: Tensor) -> Tensor:
        return loss_sum(self.loss, output, target)

    def correct(self, output: Tensor, target: Tensor) -> Tensor:
        return correct_count(output, target)

    def check_output(self) -> None:
        """Run one batch to catch a model/loss/target mismatch before any long work."""
        x, y = self.batches[0]
        try:
            with torch.inference_mode():
                out = self.model(x[:2])
                self.loss_sum(out, y[:2])
        except Exception as e:  # noqa: BLE001
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise LandscapeError(
                f"the model's output does not fit --loss {self.loss} and the data's targets "
                f"(input {tuple(x.shape[1:])}, target {tuple(y.shape[1:])}): {msg}"
            ) from e
        if not isinstance(out, Tensor):
            raise LandscapeError(f"the model returned {type(out).__name__}; it must return a tensor of outputs")


def make_batches(X: Tensor, y: Tensor, batch_size: int, device: torch.device) -> list[Batch]:
    if batch_size <= 0:
        raise LandscapeError(f"--batch-size must be positive, got {batch_size}")
    pin = device.type == "cuda"
    out = []
    for i in range(0, len(X), batch_size):
        xb, yb = X[i : i + batch_size], y[i : i + batch_size]
        if pin:
            xb, yb = xb.pin_memory(), yb.pin_memory()
        out.append((xb.to(device, non_blocking=pin), yb.to(device, non_blocking=pin)))
    return out


def make_problem(
    model: str | nn.Module,
    *,
    data: str | Batch,
    checkpoint: str | None = None,
    model_args: dict | str | None = None,
    loss: str = "cross_entropy",
    samples: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    test_data: str | Batch | None = None,
    unsafe_load: bool = False,
    local_rank: int = 0,
    shards: int = 1,
) -> Problem:
    """Load everything and put the evaluation batches on the device once.

    ``batch_size`` None: chosen from the activations' memory (:func:`landscape.autotune.auto_batch_size`;
    all of a small data set in one batch), with at least ``shards`` batches (ranks that share them).
    """
    if loss not in LOSSES:
        raise LandscapeError(f"--loss: {loss!r} is not one of {', '.join(LOSSES)}")
    dev = resolve_device(device, local_rank)
    net = load_model(model, model_args, seed=seed) if isinstance(model, str) else model
    if checkpoint:
        load_checkpoint(net, checkpoint, unsafe_load=unsafe_load, flag="--checkpoint")
    net = net.to(dev).eval()
    info: dict = {"model": model if isinstance(model, str) else type(model).__name__,
                  "model_args": parse_kwargs(model_args) if isinstance(model_args, str) else (model_args or {}),
                  "checkpoint": checkpoint, "loss": loss, "samples": samples, "seed": seed,
                  "batch_size": batch_size}
    splits: dict[str, list[Batch]] = {}
    fps = []
    for split, spec in (("train", data), ("test", test_data)):
        if spec is None:
            continue
        flag = "--data" if split == "train" else "--test-data"
        X, y = load_data(spec, flag) if isinstance(spec, str) else _as_tensors(spec, "data")
        info[f"{split}_total"] = len(X)
        X, y, idx = subsample(X, y, samples, seed)
        if batch_size is None:
            from .autotune import auto_batch_size

            batch_size = auto_batch_size(net, X, len(X), dev, shards)
            info["batch_size"] = batch_size
        splits[split] = make_batches(X, y, batch_size, dev)
        info[f"{split}_data"] = spec if isinstance(spec, str) else "<tensors>"
        info[f"{split}_samples"] = len(X)
        info[f"{split}_indices"] = idx
        fps.append(fingerprint_data(X, y))
    info["data_fingerprint"] = hashlib.sha256("".join(fps).encode()).hexdigest()
    classification = loss == "cross_entropy" or not splits["train"][0][1].is_floating_point()
    prob = Problem(model=net, loss=loss, splits=splits, device=dev, classification=classification, info=info)
    prob.check_output()
    return prob
