"""Batches and model outputs of any structure.

A data set yields batches as a user's training loop sees them; each is split once into
``(inputs, target)``:

* a tensor ``t``: inputs ``t``, target ``t`` (a causal LM fed token ids; use ``--shift-labels``);
* a tuple/list ``(inputs..., target)``: one input stays a tensor, several become an :class:`Inputs`
  passed positionally (``model(a, b)``);
* a dict: the target under ``target_key`` (``labels``), every other entry passed as a keyword
  argument (``model(input_ids=..., attention_mask=...)``), as an :class:`Inputs`.

Input dtypes are kept (token ids stay integer). An :class:`Inputs` behaves like a batch tensor
where the tools need one: ``len``, slicing and indexing along the example dimension, ``.to``,
``pin_memory``, ``split`` and :func:`cat`; it is a pytree, so ``torch.func.vmap`` sees its tensors.

The model's output may be a tensor, a tuple or list (its first element), a dict or a
``ModelOutput``-like object (``output_key``, default ``logits``). :func:`adapt_model` installs a
forward pre-hook that unpacks an :class:`Inputs` into ``model(*args, **kwargs)`` and a forward hook
that picks the output tensor, so every ``model(x)`` in the tool (and ``functional_call``) works
unchanged and parameter names stay the model's own.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.utils import _pytree

from .errors import LandscapeError

#: the dict-batch key holding the target, unless `target_key` says otherwise
TARGET_KEY = "labels"
#: the output attribute/key read from dict or ModelOutput-like outputs, unless `output_key` says otherwise
OUTPUT_KEY = "logits"


class Inputs:
    """Several model inputs of one batch: positional ``args`` and keyword ``kwargs``, all ``(B, ...)`` tensors."""

    __slots__ = ("args", "kwargs")

    def __init__(self, args: tuple = (), kwargs: dict | None = None):
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})

    def tensors(self) -> list[Tensor]:
        return [*self.args, *self.kwargs.values()]

    def _map(self, fn) -> Inputs:
        return Inputs(tuple(fn(t) for t in self.args), {k: fn(t) for k, t in self.kwargs.items()})

    def __len__(self) -> int:
        return len(self.tensors()[0])

    def __getitem__(self, index) -> Inputs:
        return self._map(lambda t: t[index])

    def to(self, *args, **kwargs) -> Inputs:
        return self._map(lambda t: t.to(*args, **kwargs))

    def pin_memory(self) -> Inputs:
        return self._map(lambda t: t.pin_memory())

    def contiguous(self) -> Inputs:
        return self._map(lambda t: t.contiguous())

    @property
    def device(self) -> torch.device:
        return self.tensors()[0].device

    def split(self, size: int, dim: int = 0) -> list[Inputs]:
        parts = [t.split(size, dim) for t in self.tensors()]
        na = len(self.args)
        keys = list(self.kwargs)
        return [Inputs(p[:na], dict(zip(keys, p[na:]))) for p in zip(*parts)]

    def describe(self) -> str:
        """``(int64 (8,), mask=bool (8,))``: per-example shapes and dtypes, for messages."""
        def one(t: Tensor) -> str:
            return f"{str(t.dtype).replace('torch.', '')} {tuple(t.shape[1:])}"
        return "(" + ", ".join([one(t) for t in self.args] + [f"{k}={one(t)}" for k, t in self.kwargs.items()]) + ")"

    def __repr__(self) -> str:
        return f"Inputs{self.describe()}"


def _flatten(x: Inputs):
    return x.tensors(), (len(x.args), tuple(x.kwargs))


def _unflatten(values, context) -> Inputs:
    na, keys = context
    values = list(values)
    return Inputs(tuple(values[:na]), dict(zip(keys, values[na:])))


_pytree.register_pytree_node(Inputs, _flatten, _unflatten, serialized_type_name="landscape.batches.Inputs")


def cat(parts: list) -> Tensor | Inputs:
    """Concatenate batch inputs (tensors or :class:`Inputs` of the same structure) along the examples."""
    if isinstance(parts[0], Inputs):
        first = parts[0]
        na = len(first.args)
        return Inputs(tuple(torch.cat([p.args[i] for p in parts]) for i in range(na)),
                      {k: torch.cat([p.kwargs[k] for p in parts]) for k in first.kwargs})
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def tensors_of(x: Tensor | Inputs) -> list[Tensor]:
    return x.tensors() if isinstance(x, Inputs) else [x]


def describe(x: Tensor | Inputs) -> str:
    return x.describe() if isinstance(x, Inputs) else str(tuple(x.shape[1:]))


def _tensor(v, where: str) -> Tensor:
    if isinstance(v, Tensor):
        return v
    try:
        return torch.as_tensor(v)
    except Exception as e:  # noqa: BLE001
        raise LandscapeError(f"`data`: {where} is {type(v).__name__}, not a tensor ({e})") from e


def split_batch(item, target_key: str = TARGET_KEY) -> tuple[Tensor | Inputs, Tensor]:
    """One batch as the data gives it → ``(inputs, target)`` (see the module docstring)."""
    if isinstance(item, Mapping):
        if target_key not in item:
            raise LandscapeError(f"`data`: a dict batch has no target {target_key!r} (its keys: "
                                 f"{', '.join(map(str, item))}); name the target with `target_key`")
        kwargs = {str(k): _tensor(v, f"batch entry {k!r}") for k, v in item.items() if k != target_key}
        if not kwargs:
            raise LandscapeError(f"`data`: a dict batch holds only the target {target_key!r}, no inputs")
        return Inputs((), kwargs), _tensor(item[target_key], f"batch entry {target_key!r}")
    if isinstance(item, tuple | list):
        if len(item) == 0:
            raise LandscapeError("`data`: an empty batch")
        parts = [_tensor(v, f"batch element {i}") for i, v in enumerate(item)]
        if len(parts) == 1:
            return parts[0], parts[0]
        if len(parts) == 2:
            return parts[0], parts[1]
        return Inputs(tuple(parts[:-1])), parts[-1]
    t = _tensor(item, "a batch")
    return t, t


def check_lengths(x: Tensor | Inputs, y: Tensor, where: str) -> None:
    """Every input and the target hold the same non-zero number of examples."""
    ts = tensors_of(x)
    if any(t.ndim == 0 for t in (*ts, y)) or len({len(t) for t in (*ts, y)}) != 1 or len(y) == 0:
        shapes = ", ".join(str(tuple(t.shape)) for t in ts)
        raise LandscapeError(f"`data`: {where} gave inputs of shape {shapes} and targets of shape "
                             f"{tuple(y.shape)}; they need the same non-zero length")


# --------------------------------------------------------------------------- outputs
def pick_output(out, key: str | None = None):
    """The tensor in a model's output: itself, a tuple's first element, ``out[key]`` or ``out.key``."""
    if isinstance(out, Tensor):
        return out
    name = key or OUTPUT_KEY
    if isinstance(out, Mapping):
        if name not in out:
            raise LandscapeError(f"the model returned a dict-like {type(out).__name__} without {name!r} (keys: "
                                 f"{', '.join(map(str, out))}); name the output with `output_key`")
        return out[name]
    if isinstance(out, tuple | list):
        if key is not None and key.lstrip("-").isdigit():
            return out[int(key)]
        if not out:
            raise LandscapeError("the model returned an empty tuple")
        return out[0]
    if hasattr(out, name):
        return getattr(out, name)
    raise LandscapeError(f"the model returned {type(out).__name__}, which is not a tensor, tuple, dict or has "
                         f"an attribute {name!r}; name the output with `output_key`")


class _Adapter:
    """The hooks :func:`adapt_model` installs (kept on the model as ``_landscape_adapter``)."""

    def __init__(self, model: nn.Module, output_key: str | None):
        self.output_key = output_key
        #: True once an output had to be picked (a non-tensor output seen, or a key given)
        self.picked = output_key is not None
        self.handles = [model.register_forward_pre_hook(self._pre, with_kwargs=True),
                        model.register_forward_hook(self._post)]

    @staticmethod
    def _pre(_module, args, kwargs):
        if len(args) == 1 and not kwargs and isinstance(args[0], Inputs):
            return args[0].args, args[0].kwargs
        return None

    def _post(self, _module, _args, out):
        if isinstance(out, Tensor):
            if self.output_key is not None:
                raise LandscapeError(f"`output_key` {self.output_key!r}: the model returns a tensor, not a dict, "
                                     "tuple or object to pick an output from; drop `output_key`")
            return None  # (unchanged)
        self.picked = True
        return pick_output(out, self.output_key)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def adapt_model(model: nn.Module, probe=None, output_key: str | None = None) -> nn.Module:
    """Let ``model(x)`` take an :class:`Inputs` and return a tensor, for any output structure.

    Installs a forward pre-hook (unpacks an :class:`Inputs`; nothing for a tensor) and a forward hook
    (picks the output tensor; nothing for a tensor output). No forward pass runs here (``probe`` is
    unused, kept for callers). Idempotent: hooks installed earlier are replaced.
    """
    old = getattr(model, "_landscape_adapter", None)
    if old is not None:
        old.remove()
    object.__setattr__(model, "_landscape_adapter", _Adapter(model, output_key))  # (not in the state_dict)
    return model


def adapts_outputs(model: nn.Module) -> bool:
    """True when :func:`adapt_model` installed an output hook (layer-by-layer shortcuts must then step aside)."""
    adapter = getattr(model, "_landscape_adapter", None)
    return adapter is not None and adapter.picked
