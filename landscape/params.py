"""Weights as ordered, named tensor dicts (``{name: tensor}``), and their arithmetic.

Everything that moves through the tool -- the centre θ, the directions d₁..d_k, Hessian
eigenvectors -- is a :data:`Named` dict whose keys are ``model.named_parameters()`` (dir-type
``weights``) or floating ``state_dict()`` entries (dir-type ``states``). Arithmetic uses fused
``torch._foreach_*`` kernels so that writing θ + x·d₁ + y·d₂ into a model costs a few kernel
launches, not one Python loop step per tensor.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(3, 2)
    >>> theta = clone(parameters(net))
    >>> d = {k: torch.ones_like(v) for k, v in theta.items()}
    >>> moved = combine(theta, [d], [0.5])
    >>> round(norm(sub(moved, theta)) ** 2, 4)  # 8 entries moved by 0.5
    2.0
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

Named = dict[str, Tensor]

DIR_TYPES = ("weights", "states")


def parameters(model: nn.Module) -> Named:
    """The model's parameters (live references, not copies), in registration order."""
    return dict(model.named_parameters())


def states(model: nn.Module) -> Named:
    """All floating-point state (parameters and buffers such as BatchNorm running stats).

    Integer buffers (``num_batches_tracked``) are left out: they are never perturbed.
    Tensors are live references to the model's storage.
    """
    return {k: v for k, v in model.state_dict(keep_vars=True).items() if v.is_floating_point()}


def select(model: nn.Module, dir_type: str = "weights") -> Named:
    """``parameters`` for dir-type ``weights``, ``states`` for ``states``."""
    if dir_type == "weights":
        return parameters(model)
    if dir_type == "states":
        return states(model)
    raise ValueError(f"dir_type must be one of {DIR_TYPES}, got {dir_type!r}")


def clone(w: Named, dtype: torch.dtype | None = None, device=None) -> Named:
    """Detached copies (optionally cast / moved)."""
    return {k: v.detach().to(device=device, dtype=dtype, copy=True) for k, v in w.items()}


def zeros_like(w: Named) -> Named:
    return {k: torch.zeros_like(v) for k, v in w.items()}


def combine(center: Named, dirs: Sequence[Named], coeffs: Sequence[float], out: Named | None = None):
    """``out = center + Σ coeffs[i] · dirs[i]`` with fused foreach kernels.

    ``out`` may be the model's own tensors (written in place under ``no_grad``); if omitted a
    new dict is returned. Only keys of ``center`` are touched.
    """
    keys = list(center)
    c = [center[k] for k in keys]
    with torch.no_grad():
        if out is None:
            o = [t.clone() for t in c]
        else:
            o = [out[k] for k in keys]
            torch._foreach_copy_(o, c)
        for d, a in zip(dirs, coeffs):
            if a != 0.0:
                torch._foreach_add_(o, [d[k] for k in keys], alpha=float(a))
    return dict(zip(keys, o)) if out is None else out


def assign_(target: Named, values: Named) -> None:
    """Copy ``values`` into the tensors of ``target`` (e.g. a model's parameters) in place."""
    keys = list(values)
    with torch.no_grad():
        torch._foreach_copy_([target[k] for k in keys], [values[k] for k in keys])


def add(a: Named, b: Named, alpha: float = 1.0) -> Named:
    """``a + alpha·b`` as a new dict."""
    keys = list(a)
    return dict(zip(keys, torch._foreach_add([a[k] for k in keys], [b[k] for k in keys], alpha=alpha)))


def sub(a: Named, b: Named) -> Named:
    return add(a, b, alpha=-1.0)


def scale(a: Named, s: float) -> Named:
    keys = list(a)
    return dict(zip(keys, torch._foreach_mul([a[k] for k in keys], float(s))))


def dot(a: Named, b: Named) -> float:
    """Euclidean inner product of two named tensor dicts, accumulated in float64."""
    return float(sum((a[k].double() * b[k].double()).sum() for k in a))


def norm(a: Named) -> float:
    return float(np.sqrt(max(dot(a, a), 0.0)))


def flatten(a: Named, dtype: torch.dtype | None = None) -> Tensor:
    """One 1-D vector (the order of ``a``'s keys)."""
    return torch.cat([v.reshape(-1).to(dtype or v.dtype) for v in a.values()])


def unflatten(vec: Tensor, like: Named) -> Named:
    """Split a flat vector back into tensors shaped like ``like``."""
    out, i = {}, 0
    for k, v in like.items():
        n = v.numel()
        out[k] = vec[i : i + n].view_as(v).to(v.dtype)
        i += n
    if i != vec.numel():
        raise ValueError(f"vector has {vec.numel()} entries, expected {i}")
    return out


def numel(a: Named) -> int:
    return sum(v.numel() for v in a.values())


def fingerprint(w: Named) -> str:
    """sha256 of the names, shapes and float32 bytes of the tensors (device independent)."""
    h = hashlib.sha256()
    for k in sorted(w):
        v = w[k].detach().to("cpu", torch.float32).contiguous()
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()
