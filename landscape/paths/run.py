"""``interpolate``: a linear path θ_α = (1 − α)·θ₀ + α·θ₁ computed into a resumable result file
(``/paths/<name>``) with its verdict (docs/paths.md): the evaluator (:mod:`.evaluator`) on the run driver
(:mod:`landscape.driver`), the verdict from :mod:`.analysis`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

import h5py
import numpy as np
from torch import nn

from .. import params as P
from ..driver import Output, open_output, run_config, sweep
from ..errors import LandscapeError
from ..evaluate import as_float64
from ..grid import parse_range
from ..parallel import World, world
from ..params import Named
from ..problem import Problem
from ..states import endpoint_states, has_batchnorm, param_distance
from ..store import (
    H5_KW,
    GridStore,
    WriterLock,
    _json,
    atomic_create,
    base_attrs,
    close_h5,
    compare_identity,
    existing_attrs,
    set_attrs,
    write_samples,
)
from .analysis import DEFAULT_TOLERANCE, path_summary
from .evaluator import PathEvaluator


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
            raise LandscapeError(f"{out} has no path {name!r}; choose another `out` or pass `overwrite`")
    return json.loads(attrs.get("identity", "{}"))


def _alphas(alphas) -> np.ndarray:
    if isinstance(alphas, str):
        return parse_range(alphas, "alphas").values()
    a = np.asarray(alphas, dtype=np.float64).reshape(-1)
    if not len(a) or not np.all(np.isfinite(a)):
        raise LandscapeError("`alphas`: give at least one finite value")
    return a


def interpolate(problem: Problem, theta0: str | Named, theta1: str | Named, alphas, out: str, *,
                name: str = "interpolation", bn_reestimate: bool | None = None,
                tolerance: float = DEFAULT_TOLERANCE, overwrite: bool = False, command: str = "",
                progress: bool = True, w: World | None = None, flush_every: float = 10.0,
                chunk_size: int | None = None, unsafe_load: bool = False, precision: str = "fp32") -> PathResult:
    """Compute (or finish) loss/accuracy along θ_α = (1−α)θ₀ + αθ₁ into ``/paths/<name>`` of ``out``.

    Every rank calls it with the same arguments (one process is fine). ``theta0``/``theta1`` are
    checkpoint paths or state dicts; ``alphas`` a ``"min:max:num"`` range or an array. The α points go
    through the same resumable store and MPI scheduler as surfaces (:mod:`landscape.driver`); at the end
    rank 0 writes the verdict (bumps, Δ, monotonic, distances, barrier, ``bn_reestimated``) as attributes
    in one metadata write. ``bn_reestimate=None``: on exactly when the model has BatchNorm. ``precision``:
    ``fp32`` (the model's own dtype) or ``fp64`` (every α evaluated on a float64 copy of the model and data).
    """
    if precision not in ("fp32", "fp64"):
        raise LandscapeError(f"`precision`: {precision!r} is not fp32 or fp64")
    w = w or world()
    t_start = time.perf_counter()
    alphas = _alphas(alphas)
    model = problem.model
    like = P.states(model)

    def load_root():
        strip = problem.info.get("strip_prefix")  # (--strip-prefix applies to --from and --to)
        return (endpoint_states(model, theta0, "`from_ckpt`", unsafe_load, strip),
                endpoint_states(model, theta1, "`to_ckpt`", unsafe_load, strip))

    t0, t1 = w.collective(load_root if w.is_root else (lambda: (None, None)))
    t0 = w.bcast_named(t0, like=like)
    t1 = w.bcast_named(t1, like=like)
    has_bn = has_batchnorm(model)
    bn = has_bn if bn_reestimate is None else bool(bn_reestimate) and has_bn  # nothing to re-estimate without BN
    splits = list(problem.splits)
    metrics = [f"{s}_{m}" for s in splits for m in ("loss", "acc")]
    config = run_config(problem, {"from": theta0 if isinstance(theta0, str) else "<weights>",
                                  "to": theta1 if isinstance(theta1, str) else "<weights>",
                                  "alpha": [float(alphas[0]), float(alphas[-1]), len(alphas)],
                                  "bn_reestimate": bn, "tolerance": float(tolerance), "name": name,
                                  "precision": precision})
    fp0, fp1 = P.fingerprint(t0), P.fingerprint(t1)
    data_fp = problem.info.get("data_fingerprint", "")
    identity = _identity(config, alphas, fp0, fp1, data_fp, name)
    group = f"paths/{name}"

    def setup(output: Output) -> GridStore:
        stored = None if overwrite else _open_existing(out, name)
        if stored is not None:
            compare_identity(out, stored, identity)
        else:
            attrs = base_attrs(command, config, fp1, data_fp, kind="interpolation")
            attrs["from_fingerprint"], attrs["to_fingerprint"] = fp0, fp1
            attrs["title"] = f"{config.get('model')} — linear path θ₀→θ₁ ({len(alphas)} points)"
            output.created(_create_path_file(out, attrs, identity, name, alphas, metrics, problem.info,
                                             replacing=output.lock))
        return GridStore(out, [f"{group}/{m}" for m in metrics], f"{group}/done", (len(alphas),), flush_every,
                         lock=output.lock)

    store = w.collective((lambda: open_output(out, overwrite, setup)) if w.is_root else (lambda: None))
    evaluated = as_float64(problem) if precision == "fp64" else problem  # (a copy: the caller's model stays)
    compute = w.collective(lambda: PathEvaluator(evaluated, t0, t1, alphas, bn, splits))
    run = sweep(w, store, compute, out=out, total=len(alphas), noun="α values", chunk_size=chunk_size, max_chunk=8,
                unit="α", progress=progress, quiet_when_done=True,
                finish=lambda s: _finish(s, group, metrics, alphas, tolerance, model, t0, t1, bn, has_bn))
    values, summary = w.bcast(run.finished if w.is_root else None)
    return PathResult(out, name, alphas, values, summary, run.computed, time.perf_counter() - t_start)


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
