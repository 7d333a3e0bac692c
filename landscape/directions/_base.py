"""Directions in weight space (docs/directions.md), as named tensor dicts like the weights: the base every
direction kind builds on.

``random_direction`` draws d ~ N(0, I) from a CPU generator (bitwise identical on every machine
and rank for a given seed); ``normalize_direction`` applies filter / layer / model / none
normalization and the ``biasbn`` rule for 1-D tensors; :class:`Directions` bundles the centre θ
with one direction per grid axis and the metadata that goes into the HDF5 file.

Filter normalization (Li et al. 2018): for a tensor with ≥ 2 dims, each slice k along dim 0 is
rescaled d[k] ← d[k]·‖θ[k]‖/(‖d[k]‖ + 1e-10). 1-D and 0-D tensors (biases, BatchNorm γ/β and
running statistics) get d = 0 with ``ignore="biasbn"`` and d = θ otherwise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

import torch

from .. import params as P
from ..errors import LandscapeError
from ..params import Named
from ..schema import AXES

NORMS = ("filter", "layer", "model", "none")
IGNORES = ("biasbn", "none")


class DirectionSpec(Protocol):
    """The fields of a request for directions that the builders read (:class:`landscape.surface.SurfaceSpec`
    has them all). ``directions`` names the kind (or a file), ``plane`` the three models of a plane."""

    directions: str
    norm: str
    ignore: str
    dir_type: str
    orthogonalize: bool
    seed: int
    from_ckpt: str | None
    to_ckpt: str | None
    plane: list[str] | None
    trajectory: str | None


def random_direction(like: Named, generator: torch.Generator) -> Named:
    """Gaussian direction shaped like ``like``; drawn in float32 on the CPU (device independent)."""
    out = {}
    for k, v in like.items():
        d = torch.randn(v.shape, generator=generator, dtype=torch.float32)
        out[k] = d.to(device=v.device, dtype=v.dtype)
    return out


def normalize_direction(d: Named, theta: Named, norm: str = "filter", ignore: str = "biasbn") -> Named:
    """Scale ``d`` to the weights ``theta`` (in place; also returned). See module docstring."""
    if norm not in NORMS:
        raise LandscapeError(f"`norm`: {norm!r} is not one of {', '.join(NORMS)}")
    if ignore not in IGNORES:
        raise LandscapeError(f"`ignore`: {ignore!r} is not one of {', '.join(IGNORES)}")
    multi = []
    with torch.no_grad():
        for k, dk in d.items():
            w = theta[k]
            if w.dim() <= 1:
                if ignore == "biasbn":
                    dk.zero_()
                else:
                    dk.copy_(w)
                continue
            multi.append(k)
            if norm == "filter":
                dn = dk.reshape(dk.shape[0], -1).norm(dim=1)
                wn = w.reshape(w.shape[0], -1).norm(dim=1)
                dk.mul_((wn / (dn + 1e-10)).reshape(-1, *([1] * (dk.dim() - 1))))
            elif norm == "layer":
                dk.mul_(w.norm() / (dk.norm() + 1e-10))
        if norm == "model" and multi:
            dn = P.norm({k: d[k] for k in multi})
            wn = P.norm({k: theta[k] for k in multi})
            torch._foreach_mul_([d[k] for k in multi], wn / (dn + 1e-10))
    return d


def orthogonalize(d: Named, against: list[Named]) -> Named:
    """Gram–Schmidt ``d`` against each direction in ``against`` (in place)."""
    for a in against:
        aa = P.dot(a, a)
        if aa > 0:
            coef = P.dot(d, a) / aa
            keys = list(d)
            torch._foreach_add_([d[k] for k in keys], [a[k] for k in keys], alpha=-coef)
    return d


@dataclass
class Directions:
    """The centre θ and one direction per grid axis, all with the same keys.

    ``center`` and ``vectors`` are detached tensors on the model's device; ``meta[i]`` holds the
    attributes stored with axis i (kind, norm, ignore, seed, ...).
    """

    center: Named
    vectors: list[Named]
    dir_type: str = "weights"
    meta: list[dict] = field(default_factory=list)
    #: extra datasets for the result file, ``{"trajectory/coords": (array, attrs)}`` (e.g. PCA paths)
    extras: dict = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return len(self.vectors)

    def fingerprint(self) -> str:
        return hashlib.sha256("".join(P.fingerprint(v) for v in self.vectors).encode()).hexdigest()

    def to(self, device) -> Directions:
        vectors = [P.clone(v, device=device) for v in self.vectors]
        return Directions(P.clone(self.center, device=device), vectors, self.dir_type, self.meta, self.extras)


def target_direction(theta0: Named, theta1: Named) -> Named:
    """d = θ₁ − θ₀ (no normalization): the interpolation direction."""
    return P.sub(theta1, theta0)


def axis_names(ndim: int) -> tuple[str, ...]:
    return AXES[:ndim]
