"""Directions from a training trajectory (``directions="pca"``): PCA of the saved checkpoints (Li et al. 2018, Sec. 7).

With checkpoints θ_1..θ_n (in training order) and the final weights θ_f, stack the differences
as the rows of ``M ∈ R^{n×p}``, ``M[t] = θ_t − θ_f``, and take its thin SVD ``M = U S Vᵀ``. The
directions are the leading right singular vectors ``d_i = V[:, i]`` (unit norm, NOT
filter-normalized); each checkpoint's coordinates are its projections ``c_t = M[t] · V[:, :k]``,
i.e. Euclidean distances in weight space, and θ_f sits at the origin. The explained variance
ratio of component i is ``S_i² / Σ_j S_j²``.

The differences are not mean-centred before the SVD (Li et al.'s code calls scikit-learn's PCA,
which centres them): the uncentred components describe the displacement from θ_f, which is
what the plot draws, and the origin of the plane is θ_f itself. Recorded as ``centered=False``.

θ_f is the ``--checkpoint`` of the problem when one was given (so the surface is centred on the
model being studied), else the last checkpoint of the trajectory. Checkpoints are ordered by
their names with numbers compared as numbers (``ckpt_9`` before ``ckpt_10``).

Example:
    >>> natural_sorted(["ckpt_10.pt", "ckpt_9.pt", "ckpt_100.pt"])
    ['ckpt_9.pt', 'ckpt_10.pt', 'ckpt_100.pt']
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys

import numpy as np
import torch

from .. import parallel
from .. import params as P
from ..errors import LandscapeError
from ..params import Named
from ..problem import Problem, read_state_dict
from ._base import Directions, DirectionSpec


def natural_sorted(paths: list[str]) -> list[str]:
    def key(p: str):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", os.path.basename(p))] + [p]

    return sorted(paths, key=key)


def trajectory_files(pattern: str | list[str]) -> list[str]:
    """Checkpoint files of a glob pattern (or a list of files), in training order."""
    if isinstance(pattern, list | tuple):
        files = [str(p) for p in pattern]
    else:
        files = natural_sorted(glob.glob(os.path.expanduser(pattern)))
    if not files:
        raise LandscapeError(f"`trajectory` {pattern!r} matches no file "
                             "(quote the pattern: `trajectory` 'DIR/ckpt_*.pt')")
    return files


def _row(model_like: Named, sd: dict, path: str) -> torch.Tensor:
    missing = [k for k in model_like if k not in sd]
    if missing:
        raise LandscapeError(f"`trajectory`: {path} does not match the model (missing {', '.join(missing[:3])}); "
                             "check `model` and `model_args`")
    bad = [k for k in model_like if tuple(sd[k].shape) != tuple(model_like[k].shape)]
    if bad:
        raise LandscapeError(f"`trajectory`: {path} does not match the model (shape of {', '.join(bad[:3])} differs)")
    return torch.cat([sd[k].detach().reshape(-1).to("cpu", torch.float64) for k in model_like])


def pca(rows: torch.Tensor, final: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(V[:, :k] (p×k), coords (n×k), explained_variance_ratio (all components), rank)`` of ``M = rows − final``.

    Signs are fixed so that the first checkpoint has a negative (else the largest-magnitude entry of
    the component a positive) coordinate: the path arrives at the origin from the lower left.
    """
    M = rows - final[None, :]
    _, S, Vh = torch.linalg.svd(M, full_matrices=False)
    rank = int((S > S.max() * max(M.shape) * torch.finfo(S.dtype).eps).sum()) if S.numel() else 0
    V = Vh[:k].T.clone()
    coords = M @ V
    for i in range(V.shape[1]):
        c0 = float(coords[0, i])
        flip = c0 > 0 if abs(c0) > 1e-12 * float(S[0]) else float(V[V[:, i].abs().argmax(), i]) < 0
        if flip:
            V[:, i] *= -1
            coords[:, i] *= -1
    s2 = S.double() ** 2
    ratio = (s2 / s2.sum()).numpy() if float(s2.sum()) > 0 else np.zeros(len(S))
    return V.numpy(), coords.numpy(), ratio, rank


def pca_directions(problem: Problem, spec: DirectionSpec, ndim: int) -> Directions:
    """Directions ``d_1..d_ndim`` = leading PCs of the checkpoints of ``spec.trajectory`` (module docstring).

    ``Directions.extras`` carries ``trajectory/coords`` (n × max(ndim, 2): every checkpoint on
    (PC1, PC2), even for a 1D surface) with attributes explained_variance, checkpoints, centered,
    center and unit, and ``trajectory/explained_variance``.
    """
    if not spec.trajectory:
        raise LandscapeError("`directions` pca needs `trajectory` 'DIR/ckpt_*.pt'")
    files = trajectory_files(spec.trajectory)
    model = problem.model
    like = P.clone(P.select(model, spec.dir_type))
    if problem.info.get("checkpoint"):
        final_named, center_from = like, str(problem.info["checkpoint"])
    else:
        final_named = {k: v for k, v in read_state_dict(files[-1], flag="`trajectory`").items() if k in like}
        center_from = files[-1]
    final = _row(like, final_named, center_from)
    rows = torch.empty((len(files), final.numel()), dtype=torch.float64)
    for i, f in enumerate(files):
        rows[i] = _row(like, read_state_dict(f, flag="`trajectory`"), f)
    k = max(ndim, 2)
    V, coords, ratio, rank = pca(rows, final, min(k, len(files)))
    if rank < ndim:
        raise LandscapeError(f"`trajectory`: the {len(files)} checkpoint(s) of {spec.trajectory!r} span only {rank} "
                             f"dimension(s) around {center_from}; a {ndim}D surface needs {ndim} (save more "
                             "checkpoints, e.g. landscape train --save-every)")
    if coords.shape[1] < k:  # one checkpoint besides the centre: pad the plane's second axis
        coords = np.concatenate([coords, np.zeros((len(files), k - coords.shape[1]))], axis=1)
    ev = np.zeros(k)
    ev[: min(k, len(ratio))] = ratio[:k]
    vectors = []
    for i in range(ndim):
        v = P.unflatten(torch.from_numpy(np.ascontiguousarray(V[:, i])), like)
        vectors.append({n: t.to(device=like[n].device, dtype=like[n].dtype) for n, t in v.items()})
    unit = "Euclidean distance in weight space along unit-norm principal directions (not filter-normalized)"
    meta = [dict(kind="pca", norm="none", ignore="none", dir_type=spec.dir_type, scale=1.0, component=i + 1,
                 explained_variance=float(ev[i]), centered=False, unit=unit, center=center_from,
                 checkpoints=len(files)) for i in range(ndim)]
    attrs = {"explained_variance": ev, "explained_variance_total": float(ratio.sum() if len(ratio) else 0.0),
             "checkpoints": json.dumps(files), "centered": False, "center": center_from, "unit": unit}
    extras = {"trajectory/coords": (coords, attrs), "trajectory/explained_variance": (ev, {})}
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    span = ", ".join(f"{a} ∈ [{lo[i]:.3g}, {hi[i]:.3g}]" for i, a in enumerate("xy"))
    print(parallel.render_message(f"landscape: PCA of {len(files)} checkpoints: explained variance "
          f"{', '.join(f'{100 * e:.1f}%' for e in ev[:k])}; the trajectory spans {span} "
          "(unit-norm directions: choose `x`/`y` to cover it)"), file=sys.stderr, flush=True)
    center = {n: final_named[n].detach().to(device=t.device, dtype=t.dtype).clone() for n, t in like.items()}
    return Directions(center, vectors, spec.dir_type, meta, extras)


build = pca_directions
