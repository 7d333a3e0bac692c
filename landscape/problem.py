"""What is being measured: a model, its loss, and evaluation batches already on the device.

A :class:`Problem` is built once per process from three specs:

* model: ``zoo:NAME`` (see :mod:`landscape.zoo`) or ``package.module:callable`` returning an
  ``nn.Module`` (keyword arguments from ``model_args``: a dict or ``"key=value,..."``);
* checkpoint: a ``state_dict`` (or a dict holding one under ``state_dict``/``model``/``net``),
  ``.pt``/``.pth`` loaded with ``torch.load(weights_only=True)``, or ``.safetensors``;
* data: ``zoo:NAME[:SPLIT]``, ``torchvision:CLASS:ROOT`` or ``package.module:callable``
  returning a Dataset, a DataLoader, an ``(X, y)`` pair, or whole-data tensors/tuples/dicts; batches
  of any structure (see :mod:`landscape.batches`), input dtypes kept.

``package.module:callable`` specs (also ``path/to/file.py:callable``; the current folder is on the
import path, as with ``python -m``) are the one place where user code runs; checkpoints never
unpickle code unless ``unsafe_load=True``.

The loss (:mod:`landscape.losses`) is checked on the first batch before any long work. Batches
stay on the device unless ``data_on_device`` says to stream them from the host
(:class:`HostBatches`: moved per batch, in a fixed order, so the numbers do not change).

Example:
    >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=64, batch_size=32, device="cpu")
    >>> len(p.batches), p.n_samples
    (2, 64)
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from . import batches as B
from . import losses as L
from . import parallel, zoo
from .autotune import auto_batch_size, free_memory
from .errors import LandscapeError
from .kernels import cross_entropy_sum
from .parallel import device_for_rank
from .specs import import_callable, parse_kwargs

#: ``(inputs, target)``: inputs a tensor or a :class:`~landscape.batches.Inputs` (several/keyword inputs)
Batch = tuple["Tensor | B.Inputs", Tensor]
LOSSES = L.BUILTIN
DATA_ON_DEVICE = ("auto", "always", "never")
#: ``data_on_device="auto"`` keeps the data on the device while it takes at most this share of the free memory
DATA_MEMORY_SHARE = 0.5


# --------------------------------------------------------------------------- models
def load_model(spec: str, model_args: dict | str | None = None, seed: int = 0) -> nn.Module:
    """Build a model from ``zoo:NAME`` or ``package.module:callable``.

    Construction runs under ``torch.manual_seed(seed)`` (in a forked RNG state), so a model used
    without a checkpoint has the same initial weights on every rank and every run.
    """
    kwargs = parse_kwargs(model_args) if isinstance(model_args, str) or model_args is None else dict(model_args)
    if spec.startswith("zoo:"):
        name = spec[4:]
        if name not in zoo.MODELS:
            raise LandscapeError(f"`model`: unknown zoo model {name!r}; choose one of {', '.join(sorted(zoo.MODELS))}")
        factory = zoo.MODELS[name]
    else:
        factory = import_callable(spec, "`model`")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = factory(**kwargs)
    except (TypeError, ValueError) as e:
        raise LandscapeError(f"`model_args`: {spec} does not accept {kwargs} ({e})") from e
    except LandscapeError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's constructor failed: say so in one line
        first = (str(e).strip().splitlines() or [""])[0]
        raise LandscapeError(f"`model`: building {spec} failed ({type(e).__name__}: {first[:200]}); fix the model "
                             "code or its `model_args`") from e
    if not isinstance(model, nn.Module):
        raise LandscapeError(f"`model`: {spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


# --------------------------------------------------------------------------- checkpoints
STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "params")


def _parameter(flag: str) -> str:
    """``flag`` as errors name it: a parameter name in backticks (``test_data`` -> ```test_data```); a ``--flag``
    spelling (from callers that name the option themselves) as it is."""
    return flag if flag.startswith(("`", "--")) else f"`{flag}`"


def _checkpoint_label(flag: str | None) -> str:
    return f"{_parameter(flag)}: checkpoint" if flag else "checkpoint"


def read_state_dict(path: str, unsafe_load: bool = False, flag: str | None = None,
                    strip_prefix: str | None = None) -> dict[str, Tensor]:
    """Read a checkpoint file into a plain ``{name: tensor}`` dict.

    ``.pt``/``.pth``/anything else goes through ``torch.load(weights_only=True)``; a file that
    would need to unpickle code (a whole pickled model) is refused unless ``unsafe_load``.
    ``flag`` (``checkpoint``, ``init``, ...) is the parameter the path came from; errors name it in backticks
    (a ``--flag`` spelling is kept as it is). ``strip_prefix`` (``"model."``, Lightning's): keep the keys that start
    with it, without it.
    """
    what = _checkpoint_label(flag)
    if not os.path.isfile(path):
        raise LandscapeError(f"{what} {path!r} does not exist")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head == b"\x89HDF\r\n\x1a\n":
        raise LandscapeError(f"{what} {path!r} is an HDF5 file (a landscape result?), not a checkpoint; give the "
                             "model's weights: a state_dict saved with torch.save (.pt) or a .safetensors file")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise LandscapeError(f"{what} {path!r}: reading .safetensors needs 'pip install safetensors'") from e
        try:
            return dict(load_file(path))
        except Exception as e:  # noqa: BLE001 - truncated or garbage: safetensors raises its own errors
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise LandscapeError(f"{what} {path!r} is not a readable .safetensors file ({type(e).__name__}: "
                                 f"{first[:160]}); it may be truncated or corrupted: save the weights again") from e
    check_torch_floor(unsafe_load, what, path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not unsafe_load)
    except pickle.UnpicklingError as e:
        raise LandscapeError(
            f"{what} {path!r} holds pickled objects that may run code; refusing to load it "
            "(save model.state_dict() instead, or pass `unsafe_load` if you trust the file)"
        ) from e
    except Exception as e:  # noqa: BLE001
        first = str(e).splitlines()[0] if str(e) else ""
        raise LandscapeError(f"{what} {path!r} could not be read ({type(e).__name__}: {first})") from e
    if unsafe_load:
        flag = parallel.render_message("`unsafe_load`")  # (the CLI's flag)
        print(f"landscape: warning: {flag}: {path} was unpickled with full code execution (only for files you trust)",
              file=sys.stderr, flush=True)
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
    if strip_prefix:
        return _strip(obj, strip_prefix, f"{what} {path!r}")
    return obj


#: the oldest torch whose ``torch.load(weights_only=True)`` runs no code from a crafted file
#: (CVE-2025-32434 was fixed in 2.6, a later weights_only advisory in 2.10)
SAFE_TORCH = (2, 10)


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in str(text).split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_torch_floor(unsafe_load: bool, what: str, path: str) -> None:
    """Refuse to unpickle checkpoints on a torch whose weights_only loader is known to run code."""
    if unsafe_load or _version_tuple(torch.__version__) >= SAFE_TORCH:
        return
    need = ".".join(map(str, SAFE_TORCH))
    raise LandscapeError(f"{what} {path!r}: torch {torch.__version__} is older than {need}, whose weights_only loading "
                         f"can run code from a crafted file (CVE-2025-32434 and later); upgrade torch (pip install "
                         f"'torch>={need}'), use a .safetensors file, or pass `unsafe_load` if you trust the file")


def _strip(sd: dict[str, Tensor], prefix: str, what: str) -> dict[str, Tensor]:
    out = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if not out:
        raise LandscapeError(f"`strip_prefix` {prefix!r}: no key of {what} starts with it (keys look like "
                             f"{', '.join(list(sd)[:3])}); give the prefix its keys have")
    return out


def load_checkpoint(model: nn.Module, path: str, unsafe_load: bool = False, flag: str | None = None,
                    strip_prefix: str | None = None) -> None:
    """Load a checkpoint into ``model``, naming the first mismatches if keys or shapes differ (and ``flag``)."""
    sd = read_state_dict(path, unsafe_load=unsafe_load, flag=flag, strip_prefix=strip_prefix)
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
    # quantized (int8, ...) weights would be cast to float silently by load_state_dict: not the model's weights
    dtypes = [f"{k} is {str(sd[k].dtype).replace('torch.', '')}" for k in own if k in sd
              and own[k].is_floating_point() and not (sd[k].is_floating_point() or sd[k].is_complex())]
    if dtypes:
        raise LandscapeError(f"{_checkpoint_label(flag)} {path!r} holds integer tensors where the model has floating "
                             f"point weights ({'; '.join(dtypes[:3])}{' ...' if len(dtypes) > 3 else ''}): a "
                             "quantized checkpoint? Give the float weights (dequantize before saving)")
    if problems:
        hint = "" if strip_prefix or not unexpected or "." not in unexpected[0] else \
            f", or `strip_prefix` {unexpected[0].split('.')[0]}. if the keys carry a wrapper's prefix"
        raise LandscapeError(f"{_checkpoint_label(flag)} {path!r} does not match the model: {'; '.join(problems)} "
                             f"(check `model` and `model_args`{hint})")
    model.load_state_dict(sd)


# --------------------------------------------------------------------------- data
def _as_tensors(obj, spec: str, target_key: str = B.TARGET_KEY) -> Batch:
    """Turn what a data callable returned into ``(inputs, target)`` on the CPU (dtypes kept).

    A Dataset or DataLoader is iterated in order (a Dataset in batches of 512) and its batches of
    any structure (:func:`landscape.batches.split_batch`) concatenated; anything else (a tensor,
    an ``(inputs..., target)`` tuple, a dict) is taken as one batch holding all the data.
    """
    if isinstance(obj, DataLoader | Dataset):
        loader = obj if isinstance(obj, DataLoader) else DataLoader(obj, batch_size=512, shuffle=False)
        xs, ys = [], []
        try:
            for item in loader:
                x, y = B.split_batch(item, target_key)
                B.check_lengths(x, y, spec)
                if xs and type(x) is not type(xs[0]):
                    raise LandscapeError(f"`data`: {spec} yields batches of different structures")
                xs.append(x)
                ys.append(y)
        except LandscapeError:
            raise
        except Exception as e:  # noqa: BLE001
            raise LandscapeError(f"`data`: iterating {spec} failed ({type(e).__name__}: {e})") from e
        if not xs:
            raise LandscapeError(f"`data`: {spec} is empty")
        try:
            X, y = B.cat(xs), torch.cat(ys)
        except Exception as e:  # noqa: BLE001 - ragged batches (sequences of different lengths)
            raise LandscapeError(f"`data`: the batches of {spec} cannot be joined ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''}); pad them to one shape") from e
    elif isinstance(obj, Tensor | tuple | list | Mapping):
        X, y = B.split_batch(obj, target_key)
    else:
        raise LandscapeError(
            f"`data`: {spec} returned {type(obj).__name__}; expected a Dataset, a DataLoader, an (X, y) pair "
            "or a dict of tensors"
        )
    B.check_lengths(X, y, spec)
    return X, y


def load_data(spec: str, flag: str = "data", target_key: str = B.TARGET_KEY) -> Batch:
    """All samples of a data spec as CPU ``(inputs, target)`` (``flag``: the parameter errors name, ``data``
    or ``test_data``)."""
    name = _parameter(flag)
    try:
        return _load_data(spec, name, target_key)
    except LandscapeError as e:
        if name != "`data`" and str(e).startswith("`data`"):
            raise LandscapeError(name + str(e)[len("`data`"):]) from e
        raise


def _load_data(spec: str, flag: str, target_key: str) -> Batch:
    if spec.startswith("zoo:"):
        name, _, split = spec[4:].partition(":")
        if name not in zoo.DATASETS:
            names = ", ".join(sorted(zoo.DATASETS))
            raise LandscapeError(f"`data`: unknown zoo data set {name!r}; choose one of {names}")
        try:
            obj = zoo.DATASETS[name](split or "all")
        except ValueError as e:
            raise LandscapeError(f"`data` {spec}: {e}") from e
    elif spec.startswith("torchvision:"):
        obj = zoo.torchvision_dataset(spec)
    else:
        fn = import_callable(spec, "`data`")
        try:
            obj = fn()
        except LandscapeError:
            raise
        except Exception as e:  # noqa: BLE001
            raise LandscapeError(f"`data`: calling {spec} failed ({type(e).__name__}: {e})") from e
    return _as_tensors(obj, spec, target_key)


def inputs_for(model: nn.Module, X, device: torch.device | str = "cpu"):
    """``X`` as the model (on ``device``) takes it: integer/bool inputs are kept unless the model fails on them
    and runs on their float cast (images or features stored as integers, which older versions always cast)."""
    if not isinstance(X, Tensor) or X.is_floating_point():
        return X
    try:
        with torch.inference_mode():
            model(X[:2].to(device))
        return X
    except Exception:  # noqa: BLE001 - try the float cast
        try:
            with torch.inference_mode():
                model(X[:2].to(device).float())
        except Exception:  # noqa: BLE001 - neither: keep the dtype; check_output names the error
            return X
        return X.float()


def subsample(X, y: Tensor, samples: int | None, seed: int = 0) -> tuple:
    """A fixed, seeded subset of ``samples`` examples (sorted indices; all if None)."""
    n = len(X)
    if samples is None or samples >= n:
        idx = torch.arange(n)
    else:
        if samples <= 0:
            raise LandscapeError(f"`samples` must be positive, got {samples}")
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(n, generator=g)[:samples].sort().values
    return X[idx], y[idx], idx


def fingerprint_data(X, y: Tensor) -> str:
    h = hashlib.sha256()
    if isinstance(X, B.Inputs):
        h.update(repr((len(X.args), sorted(X.kwargs))).encode())
    for t in (*B.tensors_of(X), y):
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- device
def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:(local_rank % n_gpus)`` when CUDA is there, else CPU (as
    :func:`landscape.parallel.device_for_rank`); ``cuda:N`` is checked against the GPUs there are."""
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
            raise LandscapeError(f"`device`: {device!r} is not auto, cpu, cuda or cuda:N")
        if int(index) >= n:
            if not n:
                raise LandscapeError(f"`device` {device}: no CUDA device is available (use `device` cpu or auto)")
            raise LandscapeError(f"`device` {device}: only cuda:0..cuda:{n - 1} exist (use `device` auto, cpu or "
                                 f"cuda:N with N < {n})")
        return torch.device(device)
    raise LandscapeError(f"`device`: {device!r} is not auto, cpu, cuda or cuda:N")


# --------------------------------------------------------------------------- the problem
def loss_sum(loss: str | L.Loss, output: Tensor, target: Tensor) -> Tensor:
    """Summed per-example loss of a batch (so batches are weighted by their size).

    ``cross_entropy`` on class-index targets without autograd (loss values): the stable kernel of
    :mod:`landscape.kernels` (float64 sum); with autograd, ``F.cross_entropy`` (its gradient
    softmax − one-hot is accurate as it is, and it is the fused kernel).
    ``mse``: per example the mean over output entries of (f - t)², with integer class targets
    one-hot encoded; the mean over examples equals ``nn.MSELoss()``. Other losses: see
    :mod:`landscape.losses` (``loss`` a name or a :class:`~landscape.losses.Loss`).
    """
    if isinstance(loss, L.Loss):
        if not (loss.name == "cross_entropy" and not loss.shift and output.ndim == 2 and target.ndim == 1
                and not target.is_floating_point()):
            return loss.sum(output, target)
        loss = "cross_entropy"  # the classic path below
    if loss == "cross_entropy" and output.ndim == 2 and target.ndim == 1 and not target.is_floating_point():
        if not torch.is_grad_enabled():
            return cross_entropy_sum(output, target)  # values: stable where the loss is small, float64 sum
        return F.cross_entropy(output, target, reduction="sum")
    if loss == "mse":
        if not target.is_floating_point():
            target = F.one_hot(target.long(), output.shape[-1]).to(output.dtype)
        target = target.reshape(output.shape)
        per = (output - target).pow(2).reshape(output.shape[0], -1).mean(dim=1)
        return per.sum()
    return L.get_loss(loss).sum(output, target)


def correct_count(output: Tensor, target: Tensor, loss: L.Loss | None = None) -> Tensor:
    """Number of correctly classified examples (0-d tensor; argmax over the last dim), or with ``loss``
    its summed per-example accuracy (token shares for sequences)."""
    if loss is not None and not (output.ndim == 2 and target.ndim == 1 and loss.name in ("cross_entropy", "mse")):
        return loss.correct(output, target)
    if target.is_floating_point() and target.shape == output.shape and output.ndim == 2:
        target = target.argmax(-1)
    return (output.argmax(-1) == target.reshape(output.shape[:-1])).sum()


class HostBatches(Sequence):
    """Batches kept on the host (pinned on CUDA) and moved to ``device`` as each one is read.

    Indexing and iterating give device batches, in the stored (fixed) order, so every consumer
    that loops over ``problem.batches`` streams them unchanged; ``host`` holds the originals.
    """

    def __init__(self, host: list[Batch], device: torch.device):
        self.host = host
        self.device = device

    def __len__(self) -> int:
        return len(self.host)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return HostBatches(self.host[i], self.device)
        return to_device(self.host[i], self.device)


def to_device(batch: Batch, device: torch.device) -> Batch:
    x, y = batch
    if y.device == device:
        return x, y
    nb = device.type == "cuda"
    return x.to(device, non_blocking=nb), y.to(device, non_blocking=nb)


class _ModelError(Exception):
    """The model's own error in the set-up forward pass (wrapped to tell it from a LandscapeError)."""


@dataclass
class Problem:
    """A model (eval mode, on ``device``), a loss and preloaded evaluation batches per split.

    ``splits[s]`` is a list of device batches, or :class:`HostBatches` when the data is streamed.
    """

    model: nn.Module
    loss: str
    splits: dict[str, list[Batch]]
    device: torch.device
    classification: bool = True
    info: dict = field(default_factory=dict)
    #: the loss as an object (from :func:`landscape.losses.get_loss`); None: built from ``loss``
    loss_fn: L.Loss | None = None

    def __post_init__(self):
        if self.loss_fn is None and self.loss in L.BUILTIN:
            self.loss_fn = L.get_loss(self.loss)

    @property
    def streamed(self) -> bool:
        """True when the batches live on the host and move to the device one at a time."""
        return any(isinstance(b, HostBatches) for b in self.splits.values())

    @property
    def batches(self) -> list[Batch]:
        """The training split's batches (what surfaces and curvature are computed on)."""
        return self.splits["train"]

    @property
    def n_samples(self) -> int:
        b = self.batches
        return sum(len(x) for x, _ in (b.host if isinstance(b, HostBatches) else b))

    def loss_sum(self, output: Tensor, target: Tensor) -> Tensor:
        return loss_sum(self.loss_fn if self.loss_fn is not None else self.loss, output, target)

    def correct(self, output: Tensor, target: Tensor) -> Tensor:
        return correct_count(output, target, self.loss_fn)

    def check_output(self) -> None:
        """Run the first batch to catch a model/loss/target mismatch, or a loss that cannot mean anything,
        before any long work."""
        x, y = self.batches[0]
        try:
            with torch.inference_mode():
                try:
                    full = self.model(x[:256])  # (one forward pass, as before: models that count their calls)
                except LandscapeError:
                    raise
                except Exception as e:  # noqa: BLE001 - reported below with the shapes
                    raise _ModelError(e) from e
                out = full[:2] if isinstance(full, Tensor) else full
                self.loss_sum(out, y[:2])
        except LandscapeError as e:
            if not str(e).startswith("`loss`") and not str(e).startswith("class targets"):
                raise  # (`output_key` and friends: already one line naming the fix)
            msg = str(e)
            raise LandscapeError(
                f"the model's output does not fit `loss` {self.loss} and the data's targets "
                f"(input {B.describe(x)}, target {tuple(y.shape[1:])}): {msg}"
            ) from e
        except Exception as e:  # noqa: BLE001
            e = e.args[0] if isinstance(e, _ModelError) else e
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise LandscapeError(
                f"the model's output does not fit `loss` {self.loss} and the data's targets "
                f"(input {B.describe(x)}, target {tuple(y.shape[1:])}): {msg}"
            ) from e
        if not isinstance(out, Tensor):
            raise LandscapeError(f"the model returned {type(out).__name__}; it must return a tensor of outputs")
        _check_all_labels(self, full, y[:len(full)])  # before the loss sees a label out of range
        if self.loss_fn is not None:
            L.check_setup(self.loss_fn, full, y[:256])


def check_labels(y: Tensor, n_classes: int, flag: str = "data", ignore_index: int | None = None) -> None:
    """Every integer class label in ``y`` must lie in ``0 .. n_classes-1`` (a full scan, not a sample): one line
    naming the first bad label and its index otherwise (cross-entropy would fail mid-run, or one-hot would).
    ``ignore_index``: a label the loss skips (cross-entropy's -100)."""
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or y.numel() == 0:
        return
    flat = y.reshape(len(y), -1) if y.ndim > 1 else y.reshape(-1, 1)
    wrong = (flat < 0) | (flat >= n_classes)
    if ignore_index is not None:
        wrong &= flat != ignore_index
    bad = wrong.any(dim=1)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        label = int(flat[i][wrong[i]][0])
        raise LandscapeError(f"{_parameter(flag)}: label {label} of example {i} is outside the model's {n_classes} "
                             f"classes (0..{n_classes - 1}); fix the labels or the model's number of outputs")


def check_finite_inputs(problem: Problem) -> None:
    """Every input of every split is finite: one line naming the first example with NaN or inf."""
    for split, batches in problem.splits.items():
        start = 0
        for x, _ in batches:
            for part in B.tensors_of(x):
                if not part.is_floating_point():
                    continue
                bad = ~torch.isfinite(part.reshape(len(part), -1)).all(dim=1)
                if bool(bad.any()):
                    i = start + int(torch.nonzero(bad)[0, 0])
                    flag = "`data`" if split == "train" else "`test_data`"
                    raise LandscapeError(f"{flag}: the input of example {i} holds NaN or inf; losses and curvature "
                                         "need finite inputs (clean the data set or choose other `samples`)")
            start += len(x)


def make_batches(X, y: Tensor, batch_size: int, device: torch.device, on_device: bool = True) -> list[Batch]:
    """Batches of ``batch_size`` in order; on ``device`` (pinned and non-blocking from the host), or kept on
    the host (pinned on CUDA) when not ``on_device``."""
    if batch_size <= 0:
        raise LandscapeError(f"`batch_size` must be positive, got {batch_size}")
    pin = device.type == "cuda"
    out = []
    for i in range(0, len(X), batch_size):
        xb, yb = X[i : i + batch_size], y[i : i + batch_size]
        if pin:
            xb, yb = xb.pin_memory(), yb.pin_memory()
        out.append((xb.to(device, non_blocking=pin), yb.to(device, non_blocking=pin)) if on_device else (xb, yb))
    return out


def _data_bytes(parts) -> int:
    return sum(t.numel() * t.element_size() for X, y in parts for t in (*B.tensors_of(X), y))


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
    target_key: str = B.TARGET_KEY,
    output_key: str | None = None,
    shift_labels: bool = False,
    data_on_device: str = "auto",
    strip_prefix: str | None = None,
    shards: int = 1,
) -> Problem:
    """Load everything, check the loss on the first batch and put the evaluation batches on the device once.

    ``data_on_device``: ``always``, ``never`` (stream batches from the host, in a fixed order) or
    ``auto`` (on the device while the data takes at most :data:`DATA_MEMORY_SHARE` of its free memory).
    ``batch_size`` None: chosen from the activations' memory (:func:`landscape.autotune.auto_batch_size`;
    all of a small data set in one batch), with at least ``shards`` batches (ranks that share them).
    """
    loss_obj = L.get_loss(loss, shift=shift_labels)
    if data_on_device not in DATA_ON_DEVICE:
        raise LandscapeError(f"`data_on_device`: {data_on_device!r} is not one of {', '.join(DATA_ON_DEVICE)}")
    dev = resolve_device(device, local_rank)
    net = load_model(model, model_args, seed=seed) if isinstance(model, str) else model
    if checkpoint:
        load_checkpoint(net, checkpoint, unsafe_load=unsafe_load, flag="checkpoint", strip_prefix=strip_prefix)
    net = net.to(dev).eval()
    info: dict = {"model": model if isinstance(model, str) else type(model).__name__,
                  "model_args": parse_kwargs(model_args) if isinstance(model_args, str) else (model_args or {}),
                  "checkpoint": checkpoint, "loss": loss, "samples": samples, "seed": seed,
                  "batch_size": batch_size}
    for key, value, default in (("target_key", target_key, B.TARGET_KEY), ("output_key", output_key, None),
                                ("shift_labels", shift_labels, False), ("strip_prefix", strip_prefix, None)):
        if value != default:
            info[key] = value
    loaded = {}
    for split, spec in (("train", data), ("test", test_data)):
        if spec is None:
            continue
        flag = "data" if split == "train" else "test_data"
        X, y = load_data(spec, flag, target_key) if isinstance(spec, str) else _as_tensors(spec, "data", target_key)
        loaded[split] = (spec, X, y)
    B.adapt_model(net, None, output_key)  # (hooks: Inputs → model(*args, **kwargs); any output → its tensor)
    splits: dict[str, list[Batch]] = {}
    fps = []
    subsets = {}
    for split, (spec, X, y) in loaded.items():
        info[f"{split}_total"] = len(X)
        X, y, idx = subsample(inputs_for(net, X, dev), y, samples, seed)
        subsets[split] = (spec, X, y, idx)
    if data_on_device == "auto":
        on_device = dev.type == "cpu" or \
            _data_bytes([(X, y) for _, X, y, _ in subsets.values()]) <= DATA_MEMORY_SHARE * free_memory(dev)
    else:
        on_device = data_on_device == "always"
    info["data_on_device"] = bool(on_device)
    for split, (spec, X, y, idx) in subsets.items():
        # a float64 model gets float64 inputs (zoo and most data sets are float32); the fingerprint stays the data's
        cast = isinstance(X, Tensor) and X.is_floating_point() and X.dtype != torch.float64 \
            and any(p.dtype == torch.float64 for p in net.parameters())
        if batch_size is None:  # from the first split, for all (see landscape.autotune)
            batch_size = auto_batch_size(net, X.double() if cast else X, len(X), dev, shards)
            info["batch_size"] = batch_size
        built = make_batches(X.double() if cast else X, y, batch_size, dev, on_device)
        splits[split] = built if on_device else HostBatches(built, dev)
        info[f"{split}_data"] = spec if isinstance(spec, str) else "<tensors>"
        info[f"{split}_samples"] = len(X)
        info[f"{split}_indices"] = idx
        fps.append(fingerprint_data(X, y))
    info["data_fingerprint"] = hashlib.sha256("".join(fps).encode()).hexdigest()
    y0 = subsets["train"][2]
    classification = loss_obj.has_accuracy(y0)
    prob = Problem(model=net, loss=loss, splits=splits, device=dev, classification=classification, info=info,
                   loss_fn=loss_obj)
    prob.check_output()
    return prob


def _check_all_labels(prob: Problem, out: Tensor, y: Tensor) -> None:
    """:func:`check_labels` on every split, with the class count of ``out`` (the model's output for the
    targets ``y`` of the first batch); class losses only."""
    if y.is_floating_point() or prob.loss not in ("cross_entropy", "nll", "mse", "huber"):
        return  # no class labels (custom losses decide for themselves what their targets mean)
    if not isinstance(out, Tensor) or out.ndim < 2:
        return
    ce = prob.loss in ("cross_entropy", "nll")
    # the class dimension: last for (B, C) and token outputs (B, L, V) against (B, L); else 1 for
    # (B, C, ...) maps against (B, ...) targets
    n_classes = int(out.shape[-1] if out.shape[:-1] == y.shape or not ce else out.shape[1])
    for split, batches in prob.splits.items():
        host = batches.host if isinstance(batches, HostBatches) else batches
        check_labels(torch.cat([t.cpu() for _, t in host]), n_classes,
                     "data" if split == "train" else "test_data", ignore_index=-100 if ce else None)

