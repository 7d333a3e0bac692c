"""Paths between two sets of weights (science.md §4) and the planes through them (§1).

**Linear interpolation** (Goodfellow et al. 2015; Lucas et al., ICML 2021)::

    θ_α = (1 − α)·θ₀ + α·θ₁ = θ₀ + α·(θ₁ − θ₀),   α on a grid, usually over [0, 1] or [−0.5, 1.5].

Every floating tensor of the ``state_dict`` is interpolated (parameters and buffers). With
BatchNorm the interpolated running statistics mean nothing, so by default they are
*re-estimated* at every α (:func:`reestimate_bn`): reset, momentum ``None`` (a cumulative
average), one pass over the training batches with the BatchNorm layers in train mode under
``no_grad``, back to eval. After it, for every BatchNorm layer::

    running_mean = (1/B) Σ_b mean_b(h),   running_var = (1/B) Σ_b var_b(h) (unbiased, n_b − 1)

over the B training batches, h being the layer's input under θ_α. Only the BatchNorm layers
are switched to train mode, so dropout stays off while the statistics are measured.

**Bumps** (:func:`find_bumps`). A bump is a rise of the loss above an earlier value; the path
is *monotonic* when the largest rise ::

    Δ = max_{i<j} (L_j − L_i)        (0 when L never rises)

is at most a tolerance (1e-3, the paper's MNIST tables). Peaks are separated with hysteresis:
the loss must rise more than ``tol`` above the running valley to start a bump and fall more than
``tol`` below its peak to end it, so noise below the tolerance and plateaus make no bumps. Each
peak j is reported as ``(α_start, α_peak, height)`` with ``height = L_j − min L`` over the points
since the last point higher than L_j (the biggest rise above an earlier value that ends at this
peak), and α_start where that minimum is; the largest height equals Δ whenever Δ > tol. A bump
*returns* when the loss later falls below its starting value L(α_start); a rise that never comes
back down (the path ends high) still counts, with its height up to its peak, and is flagged
``returns = False``. The verdict uses the points with 0 ≤ α ≤ 1 (the segment between the two
models; beyond θ₁ the loss rises by construction); the whole path is stored and plotted.

**Barrier** (mode connectivity): ``max_{α∈[0,1]} L(θ_α) − max(L(θ₀), L(θ₁)) ≥ 0``.

**Distances**: ``‖θ₁ − θ₀‖`` and ``‖θ₁ − θ₀‖ / ‖θ₀‖`` over the parameters (not the BatchNorm
buffers).

**Planes for surfaces**. ``--directions interp``: centre θ₀, x direction d₁ = θ₁ − θ₀ (x = 0 is
θ₀, x = 1 is θ₁, the path is the x axis), y (and z) a seeded random direction normalized like
``--norm``/``--ignore``, Gram–Schmidt'ed against the earlier ones and rescaled to ‖d₁‖.
``--plane A B C`` (Garipov et al. 2018): centre θ_A, d₁ = θ_B − θ_A, d₂ = θ_C − θ_A Gram–Schmidt'ed
against d₁ (not rescaled), so A = (0, 0), B = (1, 0) and C = (⟨θ_C − θ_A, d₁⟩/‖d₁‖², 1); the three
points are stored in ``/plane/coords``.

Example:
    >>> import numpy as np
    >>> a = np.linspace(0, 1, 6)
    >>> [round(b.height, 2) for b in find_bumps(a, np.array([1.0, 0.8, 1.1, 0.6, 0.5, 0.4]))]
    [0.3]
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import h5py
import numpy as np
import torch
from torch import nn

from . import params as P
from .directions import Directions, normalize_direction, orthogonalize, random_direction
from .errors import LandscapeError
from .parallel import World, auto_chunk_size, run_with_progress, world
from .params import Named
from .problem import Problem, read_state_dict
from .store import (
    H5_KW,
    GridStore,
    WriterLock,
    _json,
    atomic_create,
    base_attrs,
    check_readable,
    close_h5,
    compare_identity,
    existing_attrs,
    set_attrs,
    write_samples,
)

DEFAULT_TOLERANCE = 1e-3
_BN = nn.modules.batchnorm._BatchNorm


# ---------------------------------------------------------------------------- BatchNorm
def batchnorm_layers(model: nn.Module) -> list[_BN]:
    """BatchNorm layers that keep running statistics (the ones re-estimation changes)."""
    return [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]


def has_batchnorm(model: nn.Module) -> bool:
    return bool(batchnorm_layers(model))


def reestimate_bn(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Replace every BatchNorm layer's running statistics by those of the current weights.

    Reset, ``momentum=None`` (cumulative average over the batches), forward every batch with the
    BatchNorm layers in train mode under ``no_grad``, then restore momentum and mode. Batches of a
    single example are skipped (train-mode BatchNorm cannot normalize them). Returns the number of
    layers re-estimated.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    saved = [(m, m.momentum, m.training) for m in layers]
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            used = 0
            for x, _ in batches:
                if len(x) > 1:
                    model(x)
                    used += 1
        if not used:
            raise LandscapeError("BatchNorm re-estimation needs batches of at least 2 examples "
                                 "(raise --batch-size or --samples, or pass --no-bn-reestimate)")
    finally:
        for m, momentum, training in saved:
            m.momentum = momentum
            m.train(training)
    return len(layers)


# ---------------------------------------------------------------------------- endpoints
def endpoint_states(model: nn.Module, state: str | Named, what: str = "checkpoint", unsafe_load: bool = False,
                    strip_prefix: str | None = None) -> Named:
    """The floating state (parameters and buffers) of a checkpoint, checked against ``model``.

    ``state`` is a checkpoint path or a ``state_dict``-like dict; the result has the keys, device
    and dtypes of ``params.states(model)``.
    """
    sd = (read_state_dict(state, unsafe_load=unsafe_load, flag=what if what.startswith("--") else None,
                          strip_prefix=strip_prefix)
          if isinstance(state, str | os.PathLike) else state)
    target = P.states(model)
    missing = [k for k in target if k not in sd]
    shapes = [k for k in target if k in sd and tuple(sd[k].shape) != tuple(target[k].shape)]
    if missing or shapes:
        why = f"missing {', '.join(missing[:3])}" if missing else f"shape of {', '.join(shapes[:3])} differs"
        name = state if isinstance(state, str) else "the weights"
        raise LandscapeError(f"{what} {name!r} does not match the model ({why}); check --model and --model-args")
    return {k: sd[k].detach().to(device=v.device, dtype=v.dtype) for k, v in target.items()}


def param_distance(model: nn.Module, theta0: Named, theta1: Named) -> tuple[float, float]:
    """``(‖θ₁ − θ₀‖, ‖θ₁ − θ₀‖ / ‖θ₀‖)`` over the model's parameters."""
    keys = [k for k, _ in model.named_parameters() if k in theta0]
    a = {k: theta0[k] for k in keys}
    d = P.norm(P.sub({k: theta1[k] for k in keys}, a))
    n0 = P.norm(a)
    return d, (d / n0 if n0 > 0 else float("inf"))


# ---------------------------------------------------------------------------- evaluation
class PathEvaluator:
    """``compute(indices) -> {split_loss, split_acc}`` at ``alphas[indices]`` (for ``run_points``).

    Writes θ_α = θ₀ + α·(θ₁ − θ₀) into every floating tensor of the model's state with fused
    foreach ops, re-estimates BatchNorm statistics on the training batches when asked, evaluates
    each split in eval mode, and puts θ₀ back afterwards.
    """

    def __init__(self, problem: Problem, theta0: Named, theta1: Named, alphas: np.ndarray,
                 bn_reestimate: bool = False, splits: list[str] | None = None):
        self.problem = problem
        self.alphas = np.asarray(alphas, dtype=np.float64)
        self.bn_reestimate = bool(bn_reestimate)
        self.splits = list(splits or problem.splits)
        target = P.states(problem.model)
        self._keys = list(target)
        self._out = [target[k] for k in self._keys]
        self._theta0 = [theta0[k].to(device=target[k].device, dtype=target[k].dtype) for k in self._keys]
        self._delta = torch._foreach_sub([theta1[k].to(device=target[k].device, dtype=target[k].dtype)
                                          for k in self._keys], self._theta0)

    @property
    def names(self) -> list[str]:
        return [f"{s}_{m}" for s in self.splits for m in ("loss", "acc")]

    def move_to(self, alpha: float) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self._out, self._theta0)
            if alpha != 0.0:
                torch._foreach_add_(self._out, self._delta, alpha=float(alpha))
        if self.bn_reestimate:
            reestimate_bn(self.problem.model, self.problem.batches)

    def restore(self) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self._out, self._theta0)

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        from .evaluate import evaluate_batches

        indices = np.atleast_1d(np.asarray(indices, dtype=np.int64))
        out = {n: np.empty(len(indices)) for n in self.names}
        self.problem.model.eval()
        try:
            for i, idx in enumerate(indices):
                self.move_to(float(self.alphas[idx]))
                for s in self.splits:
                    loss, acc = evaluate_batches(self.problem, self.problem.splits[s])
                    out[f"{s}_loss"][i] = loss
                    out[f"{s}_acc"][i] = acc
        finally:
            self.restore()
        return out


def evaluate_path(problem: Problem, theta0: str | Named, theta1: str | Named, alphas, *,
                  bn_reestimate: bool | None = None) -> dict[str, np.ndarray]:
    """Loss and accuracy of every split along θ_α, in memory (no file, one process).

    ``bn_reestimate=None`` re-estimates exactly when the model has BatchNorm. The model is left at θ₀.
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    t0 = endpoint_states(problem.model, theta0, "--from")
    t1 = endpoint_states(problem.model, theta1, "--to")
    bn = has_batchnorm(problem.model) if bn_reestimate is None else bool(bn_reestimate)
    ev = PathEvaluator(problem, t0, t1, alphas, bn)
    res = ev(np.arange(len(alphas)))
    return {"alpha": alphas, **res}


# ---------------------------------------------------------------------------- bumps and barrier
@dataclass
class Bump:
    """A rise of ``height`` from α = ``start`` to the peak at α = ``peak``; ``returns``: the loss later falls
    below its value at ``start``."""

    start: float
    peak: float
    height: float
    returns: bool = True

    def as_list(self) -> list[float]:
        return [float(self.start), float(self.peak), float(self.height)]


def max_rise(loss: np.ndarray) -> float:
    """Δ = max_{i<j} (L_j − L_i), 0 when the sequence never rises (non-finite values skipped)."""
    v = np.asarray(loss, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return 0.0
    running_min = np.minimum.accumulate(v)
    return float(max(0.0, np.max(v[1:] - running_min[:-1])))


def find_bumps(alpha: np.ndarray, loss: np.ndarray, tol: float = DEFAULT_TOLERANCE) -> list[Bump]:
    """The bumps of a loss sequence ordered by α (module docstring: hysteresis ``tol``, heights as rises
    above the lowest earlier value since the last higher point). Non-finite values are skipped."""
    a = np.asarray(alpha, dtype=np.float64)
    v = np.asarray(loss, dtype=np.float64)
    ok = np.isfinite(v)
    a, v = a[ok], v[ok]
    n = len(v)
    bumps: list[Bump] = []
    if n < 2:
        return bumps

    def confirm(j: int) -> None:
        higher = np.flatnonzero(v[:j] > v[j])
        lo = int(higher[-1]) + 1 if len(higher) else 0
        seg = v[lo : j + 1]
        i = lo + int(len(seg) - 1 - np.argmin(seg[::-1]))  # the last lowest point: where the rise begins
        height = float(v[j] - v[i])
        if height > tol:
            bumps.append(Bump(float(a[i]), float(a[j]), height, bool(np.any(v[j + 1 :] < v[i]))))

    valley, peak, rising = 0, -1, False
    for k in range(1, n):
        if not rising:
            if v[k] <= v[valley]:
                valley = k
            elif v[k] > v[valley] + tol:
                rising, peak = True, k
        elif v[k] > v[peak]:
            peak = k
        elif v[k] < v[peak] - tol:
            confirm(peak)
            rising, valley = False, k
    if rising:
        confirm(peak)
    return bumps


def _value_at(alpha: np.ndarray, loss: np.ndarray, a0: float) -> float:
    ok = np.isfinite(loss)
    hit = np.flatnonzero(np.isclose(alpha, a0, rtol=0, atol=1e-9) & ok)
    if len(hit):
        return float(loss[hit[0]])
    if ok.sum() < 2 or not (alpha[ok].min() <= a0 <= alpha[ok].max()):
        return float("nan")
    return float(np.interp(a0, alpha[ok], loss[ok]))


def barrier(alpha: np.ndarray, loss: np.ndarray) -> float:
    """``max_{α∈[0,1]} L(θ_α) − max(L(θ₀), L(θ₁))`` (NaN when the grid does not cover [0, 1])."""
    alpha = np.asarray(alpha, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    l0, l1 = _value_at(alpha, loss, 0.0), _value_at(alpha, loss, 1.0)
    if not (math.isfinite(l0) and math.isfinite(l1)):
        return float("nan")
    inside = (alpha >= -1e-9) & (alpha <= 1 + 1e-9) & np.isfinite(loss)
    top = max([l0, l1, *loss[inside].tolist()])
    return float(top - max(l0, l1))


def verdict_window(alpha: np.ndarray) -> np.ndarray:
    """Mask of the points the verdict uses: 0 ≤ α ≤ 1, or every point when fewer than 2 are inside."""
    alpha = np.asarray(alpha, dtype=np.float64)
    inside = (alpha >= -1e-9) & (alpha <= 1 + 1e-9)
    return inside if inside.sum() >= 2 else np.ones_like(inside)


def path_summary(alpha: np.ndarray, loss: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """Bumps, Δ, monotonicity and barrier of a loss path (the ``/paths/<name>`` attributes)."""
    alpha = np.asarray(alpha, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    order = np.argsort(alpha, kind="stable")
    alpha, loss = alpha[order], loss[order]
    win = verdict_window(alpha)
    bumps = find_bumps(alpha[win], loss[win], tolerance)
    delta = max_rise(loss[win])
    return {
        "bumps": [b.as_list() for b in bumps],
        "bump_returns": [b.returns for b in bumps],
        "n_bumps": len(bumps),
        "max_bump": delta,
        "monotonic": bool(delta <= tolerance),
        "tolerance": float(tolerance),
        "verdict_window": [float(alpha[win].min()), float(alpha[win].max())] if win.any() else [],
        "barrier": barrier(alpha, loss),
        "nonfinite": int((~np.isfinite(loss[win])).sum()),
    }


def verdict_line(summary: dict) -> str:
    """One line: monotonic or not, Δ, bumps and where, distances, barrier, BatchNorm handling."""
    tol = summary.get("tolerance", DEFAULT_TOLERANCE)
    if summary.get("monotonic"):
        head = f"monotonic (largest rise Δ={summary['max_bump']:.3g} ≤ tolerance {tol:g})"
    else:
        where = ", ".join(f"α {b[0]:.3g}→{b[1]:.3g} Δ={b[2]:.3g}" + ("" if r else " (never comes back down)")
                          for b, r in zip(summary["bumps"], summary.get("bump_returns", [True] * 99)))
        n = summary["n_bumps"]
        head = (f"NON-monotonic: largest bump Δ={summary['max_bump']:.3g} > tolerance {tol:g}; "
                f"{n} bump{'s' if n != 1 else ''} ({where})")
    parts = [head]
    if "distance" in summary:
        parts.append(f"‖θ₁−θ₀‖={summary['distance']:.4g} (relative {summary['relative_distance']:.3g})")
    if math.isfinite(summary.get("barrier", float("nan"))):
        parts.append(f"barrier {summary['barrier']:.3g}")
    if "bn_reestimated" in summary:
        if summary["bn_reestimated"]:
            parts.append("BatchNorm statistics re-estimated at every α on the training batches")
        elif summary.get("has_batchnorm"):
            parts.append("BatchNorm statistics interpolated, NOT re-estimated (--no-bn-reestimate)")
    if summary.get("nonfinite"):
        parts.append(f"{summary['nonfinite']} non-finite loss value(s) skipped")
    return "; ".join(parts)


# ---------------------------------------------------------------------------- the file
@dataclass
class PathResult:
    path: str
    name: str
    alpha: np.ndarray
    values: dict[str, np.ndarray]
    summary: dict
    computed: int
    seconds: float
    extra: dict = field(default_factory=dict)


def _config(problem: Problem, **kw) -> dict:
    info = problem.info
    cfg = dict(kw)
    cfg.update(model=info.get("model"), model_args=info.get("model_args"), data=info.get("train_data"),
               test_data=info.get("test_data"), loss=problem.loss, samples=info.get("samples"),
               batch_size=info.get("batch_size"), sample_seed=info.get("seed"), n_samples=info.get("train_samples"),
               device=str(problem.device))
    cfg.update({k: info[k] for k in ("target_key", "output_key", "shift_labels") if k in info})
    return cfg


def _identity(config: dict, alphas: np.ndarray, fp0: str, fp1: str, data_fp: str, name: str) -> dict:
    return {
        "--from (weights fingerprint)": fp0, "--to (weights fingerprint)": fp1, "data (data_fingerprint)": data_fp,
        "--alpha": [float(alphas[0]), float(alphas[-1]), len(alphas)],
        "alpha values": hashlib.sha256(np.ascontiguousarray(alphas).tobytes()).hexdigest(),
        "--bn-reestimate": config["bn_reestimate"], "--name": name,
        **{f"--{k.replace('_', '-')}": config.get(k) for k in ("model", "model_args", "loss", "samples", "data",
                                                               "test_data", "precision")},
    }


def _create_path_file(out: str, attrs: dict, identity: dict, name: str, alphas: np.ndarray, metrics: list[str],
                      info: dict, replacing: WriterLock | None = None) -> WriterLock:
    def build(f: h5py.File) -> None:
        for k, v in attrs.items():
            f.attrs[k] = v
        f.attrs["identity"] = _json(identity)
        write_samples(f, info)
        g = f.create_group(f"paths/{name}", track_order=True)
        g.create_dataset("alpha", data=alphas)
        for m in metrics:
            g.create_dataset(m, data=np.full(len(alphas), np.nan), track_times=False)
        g.create_dataset("done", data=np.zeros(len(alphas), np.uint8), track_times=False)

    return atomic_create(out, build, replacing=replacing, keep_lock=True)


def _open_existing(out: str, name: str) -> dict | None:
    attrs = existing_attrs(out, "interpolation", "an interpolation")
    if attrs is None:
        return None
    with h5py.File(out, "r", **H5_KW) as f:
        if f"paths/{name}/done" not in f:
            raise LandscapeError(f"{out} has no path {name!r}; choose another --out or pass --overwrite")
    return json.loads(attrs.get("identity", "{}"))


def _alphas(alphas) -> np.ndarray:
    if isinstance(alphas, str):
        from .grid import parse_range

        return parse_range(alphas, "--alpha").values()
    a = np.asarray(alphas, dtype=np.float64).reshape(-1)
    if not len(a) or not np.all(np.isfinite(a)):
        raise LandscapeError("--alpha: give at least one finite value")
    return a


def interpolate(problem: Problem, theta0: str | Named, theta1: str | Named, alphas, out: str, *,
                name: str = "interpolation", bn_reestimate: bool | None = None,
                tolerance: float = DEFAULT_TOLERANCE, overwrite: bool = False, command: str = "",
                progress: bool = True, w: World | None = None, flush_every: float = 10.0,
                chunk_size: int | None = None, unsafe_load: bool = False, precision: str = "fp32") -> PathResult:
    """Compute (or finish) loss/accuracy along θ_α = (1−α)θ₀ + αθ₁ into ``/paths/<name>`` of ``out``.

    Every rank calls it with the same arguments (one process is fine). ``theta0``/``theta1`` are
    checkpoint paths or state dicts; ``alphas`` a ``"min:max:num"`` range or an array. The α points go
    through the same resumable store and MPI scheduler as surfaces; at the end rank 0 writes the
    verdict (bumps, Δ, monotonic, distances, barrier, ``bn_reestimated``) as attributes in one
    metadata write. ``bn_reestimate=None``: on exactly when the model has BatchNorm. ``precision``:
    ``fp32`` (the model's own dtype) or ``fp64`` (every α evaluated on a float64 copy of the model and data).
    """
    if precision not in ("fp32", "fp64"):
        raise LandscapeError(f"--precision: {precision!r} is not fp32 or fp64")
    w = w or world()
    t_start = time.perf_counter()
    alphas = _alphas(alphas)
    model = problem.model
    like = P.states(model)

    def load_root():
        strip = problem.info.get("strip_prefix")  # (--strip-prefix applies to --from and --to)
        return (endpoint_states(model, theta0, "--from", unsafe_load, strip),
                endpoint_states(model, theta1, "--to", unsafe_load, strip))

    t0, t1 = w.collective(load_root if w.is_root else (lambda: (None, None)))
    t0 = w.bcast_named(t0, like=like)
    t1 = w.bcast_named(t1, like=like)
    has_bn = has_batchnorm(model)
    bn = has_bn if bn_reestimate is None else bool(bn_reestimate) and has_bn  # nothing to re-estimate without BN
    splits = list(problem.splits)
    metrics = [f"{s}_{m}" for s in splits for m in ("loss", "acc")]
    config = _config(problem, **{"from": theta0 if isinstance(theta0, str) else "<weights>",
                                 "to": theta1 if isinstance(theta1, str) else "<weights>",
                                 "alpha": [float(alphas[0]), float(alphas[-1]), len(alphas)],
                                 "bn_reestimate": bn, "tolerance": float(tolerance), "name": name,
                                 "precision": precision})
    fp0, fp1 = P.fingerprint(t0), P.fingerprint(t1)
    data_fp = problem.info.get("data_fingerprint", "")
    identity = _identity(config, alphas, fp0, fp1, data_fp, name)
    group = f"paths/{name}"

    def setup_root() -> GridStore:
        lock = None
        try:
            if os.path.exists(out):
                if overwrite:
                    from .surface import refuse_foreign

                    refuse_foreign(out)
                else:
                    check_readable(out)
                lock = WriterLock(out)  # refused while another process writes it; held until the run ends
            stored = None if overwrite else _open_existing(out, name)
            if stored is not None:
                compare_identity(out, stored, identity)
            else:
                attrs = base_attrs(command, config, fp1, data_fp, kind="interpolation")
                attrs["from_fingerprint"], attrs["to_fingerprint"] = fp0, fp1
                attrs["title"] = f"{config.get('model')} — linear path θ₀→θ₁ ({len(alphas)} points)"
                new = _create_path_file(out, attrs, identity, name, alphas, metrics, problem.info, replacing=lock)
                if lock is not None:
                    lock.release()
                lock = new
            return GridStore(out, [f"{group}/{m}" for m in metrics], f"{group}/done", (len(alphas),), flush_every,
                             lock=lock)
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    store = w.collective(setup_root if w.is_root else (lambda: None))
    from .evaluate import as_float64

    evaluated = as_float64(problem) if precision == "fp64" else problem  # (a copy: the caller's model stays)
    compute = w.collective(lambda: PathEvaluator(evaluated, t0, t1, alphas, bn, splits))
    todo = store.todo() if w.is_root else None
    n_todo = w.bcast(len(todo) if w.is_root else 0)
    chunk = chunk_size or auto_chunk_size(n_todo, w.size, maximum=8)
    summary: dict | None = None
    values: dict[str, np.ndarray] = {}
    interrupted = False
    try:
        interrupted = run_with_progress(w, todo, compute, store.add if w.is_root else None, chunk_size=chunk,
                                        total=len(alphas), initial=len(alphas) - n_todo,
                                        label=os.path.basename(out), unit="α", progress=progress and n_todo > 0)
    finally:
        if w.is_root:
            try:
                store.flush()
                if not interrupted:
                    values, summary = _finish(store, group, metrics, alphas, tolerance, model, t0, t1, bn, has_bn)
            finally:
                store.close()
    if interrupted:  # the CLI prints this one line on rank 0 and takes the other ranks down (exit 130)
        raise KeyboardInterrupt(f"interrupted; {store.n_done if w.is_root else '?'}/{len(alphas)} α values are saved "
                                f"in {out}; run the same command again to compute the rest")
    values, summary = w.bcast((values, summary) if w.is_root else None)
    return PathResult(out, name, alphas, values, summary, n_todo, time.perf_counter() - t_start)


def _finish(store: GridStore, group: str, metrics: list[str], alphas: np.ndarray, tolerance: float, model: nn.Module,
            t0: Named, t1: Named, bn: bool, has_bn: bool) -> tuple[dict, dict]:
    """Read the finished path, compute the verdict and write it as attributes (one open/close)."""
    dist, rel = param_distance(model, t0, t1)
    f = store.h5()  # the file this run locked, not whatever the path names now
    try:
        g = f[group]
        done = np.asarray(g["done"][()], dtype=bool)
        values = {m: np.where(done, np.asarray(g[m][()], dtype=np.float64), np.nan) for m in metrics}
        loss_key = "train_loss" if "train_loss" in values else metrics[0]
        summary = path_summary(alphas, values[loss_key], tolerance)
        summary.update(distance=dist, relative_distance=rel, bn_reestimated=bool(bn), has_batchnorm=bool(has_bn),
                       complete=bool(done.all()), verdict_metric=loss_key)
        if "test_loss" in values:
            ts = path_summary(alphas, values["test_loss"], tolerance)
            summary.update(test_max_bump=ts["max_bump"], test_monotonic=ts["monotonic"], test_barrier=ts["barrier"])
        set_attrs(g, summary)
    finally:
        close_h5(f)
    return values, summary


# ---------------------------------------------------------------------------- plane directions
def _random_like(theta: Named, seed: int, norm: str, ignore: str, against: list[Named], scale: float) -> Named:
    d = random_direction(theta, torch.Generator().manual_seed(int(seed)))
    d = normalize_direction(d, theta, norm, ignore)
    orthogonalize(d, against)
    orthogonalize(d, against)  # twice: Gram–Schmidt in float32 loses orthogonality once
    n = P.norm(d)
    if n == 0:
        raise LandscapeError("the random direction vanished after orthogonalization; try --ignore none or --norm none")
    return P.scale(d, scale / n)


def interp_directions(problem: Problem, spec, ndim: int) -> Directions:
    """Centre θ₀ (``--from``), x: d₁ = θ₁ − θ₀ (``--to``), y/z: seeded random directions (``--norm``,
    ``--ignore``) orthogonal to the earlier ones and rescaled to ‖d₁‖ (module docstring)."""
    if not (spec.from_ckpt and spec.to_ckpt):
        raise LandscapeError("--directions interp needs --from INIT.pt and --to FINAL.pt")
    model = problem.model
    keys = list(P.select(model, spec.dir_type))
    s0 = endpoint_states(model, spec.from_ckpt, "--from")
    s1 = endpoint_states(model, spec.to_ckpt, "--to")
    theta0 = {k: s0[k] for k in keys}
    theta1 = {k: s1[k] for k in keys}
    d1 = P.sub(theta1, theta0)
    length = P.norm(d1)
    if length == 0:
        raise LandscapeError(f"--from {spec.from_ckpt} and --to {spec.to_ckpt} hold the same weights")
    vectors = [d1]
    meta = [dict(kind="interp", norm="none", dir_type=spec.dir_type, scale=length, source_from=spec.from_ckpt,
                 source_to=spec.to_ckpt, note="x=0 is --from, x=1 is --to")]
    for i in range(1, ndim):
        d = _random_like(theta1, spec.seed + i - 1, spec.norm, spec.ignore, vectors, length)
        vectors.append(d)
        meta.append(dict(kind="random", norm=spec.norm, ignore=spec.ignore, dir_type=spec.dir_type,
                         seed=int(spec.seed + i - 1), orthogonalized=True, scale=length,
                         note="orthogonal to the path, rescaled to ‖θ₁−θ₀‖"))
    _warn_bn(model, spec.dir_type)
    return Directions(theta0, vectors, spec.dir_type, meta)


def plane_directions(problem: Problem, spec, ndim: int) -> Directions:
    """The plane through three models A, B, C: centre θ_A, d₁ = θ_B − θ_A, d₂ = θ_C − θ_A Gram–Schmidt'ed
    against d₁ (not rescaled). ``/plane/coords`` holds A, B, C's coordinates."""
    paths = list(spec.plane or [])
    if len(paths) != 3:
        raise LandscapeError(f"--plane needs three checkpoints A B C, got {len(paths)}")
    if ndim > 2:
        raise LandscapeError("--plane spans a 2D plane; drop --z")
    model = problem.model
    keys = list(P.select(model, spec.dir_type))
    thetas = []
    for p in paths:
        s = endpoint_states(model, p, "--plane")
        thetas.append({k: s[k] for k in keys})
    a, b, c = thetas
    d1 = P.sub(b, a)
    dc = P.sub(c, a)
    n1 = P.dot(d1, d1)
    if n1 == 0:
        raise LandscapeError(f"--plane: {paths[0]} and {paths[1]} hold the same weights")
    proj = P.dot(dc, d1) / n1
    d2 = P.add(dc, d1, alpha=-proj)
    if P.norm(d2) <= 1e-5 * P.norm(dc):  # float32 round-off of an exactly collinear C
        raise LandscapeError("--plane: the three models lie on one line; they span no plane")
    vectors = [d1, d2][:ndim]
    meta = [dict(kind="plane", norm="none", dir_type=spec.dir_type, scale=math.sqrt(n1), models=paths,
                 note="x=1 is B; y: C−A orthogonalized against B−A"),
            dict(kind="plane", norm="none", dir_type=spec.dir_type, scale=P.norm(d2), models=paths,
                 orthogonalized=True, note="C is at (c_x, 1)")][:ndim]
    coords = np.array([[0.0, 0.0], [1.0, 0.0], [proj, 1.0]])[:, :ndim]
    extras = {"plane/coords": (coords, {"models": json.dumps(paths), "labels": json.dumps(["A", "B", "C"])})}
    _warn_bn(model, spec.dir_type)
    return Directions(a, vectors, spec.dir_type, meta, extras)


def _warn_bn(model: nn.Module, dir_type: str) -> None:
    if dir_type == "weights" and has_batchnorm(model):
        print("landscape: note: with --dir-type weights the BatchNorm running statistics stay those of the centre "
              "model at every point; --dir-type states moves them along with the weights", file=sys.stderr)
