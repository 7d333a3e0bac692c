r"""Training dynamics: the landscape measured checkpoint by checkpoint along a training run.

For each checkpoint θ_t of a series (``run/ckpt_*.pt``, in step order), with C the chosen curvature
operator (the Hessian H = ∇²L, the Gauss–Newton matrix or the empirical Fisher; see
:mod:`landscape.curvature.fisher`) and g_t = ∇L(θ_t):

======================  ===========================================================================
``<split>_loss/_acc``   mean loss and accuracy on the training data (and ``--test-data``)
``lambda_max``          λ₁(C), with ``eigenvalues`` (n, k) the top k (Lanczos, full reorthogonalization)
``lambda_min``          the smallest eigenvalue of C
``eos_ratio``           η·λ_max/2 (with ``lr``): GD on a quadratic is stable iff ≤ 1 (Cohen et al. 2021)
``trace``               tr C (Hutch++), with ``trace_stderr``
``negative_mass``       Σ_{τ<0} w_τ: the SLQ estimate of #{λᵢ < 0}/P (Ghorbani et al. 2019), from
                        ``slq_nodes``/``slq_weights`` (n, runs, steps); the density on a common grid
                        (``density/values`` (n, m), ``density/grid``) is made from them at the end
``grad_norm``           ‖g_t‖
``grad_overlap``        ‖P_k g_t‖²/‖g_t‖², P_k the projector on the top-k eigenvectors U_t
                        (Gur-Ari, Roberts, Dyer 2018: ≈ 1 after the first steps)
``subspace_overlap``    ‖U_tᵀ U_{t+1}‖_F²/k ∈ [0, 1]: how much the top-k eigenspace turned from one
                        checkpoint to the next (1: the same subspace); from ``eigenvectors`` (n, k, P)
``update_sharpness``    uᵀ C_t u/‖u‖² along the actual update u = θ_{t+1} − θ_t (directional sharpness,
                        Pan & Li 2023), with ``update_grad_corr`` g_tᵀu, ``update_cosine`` cos(g_t, u)
                        and ``update_norm`` ‖u‖ (one optimizer step when every step is saved)
``sharpness/<name>``    any scalar metric of :mod:`landscape.sharpness` (``sharpness=...``)
======================  ===========================================================================

Pair quantities (``subspace_overlap``, ``update_*``) belong to the earlier checkpoint of the pair; the
last checkpoint has NaN there.

**Parallel and resumable.** Every checkpoint is one unit of work: each rank computes whole checkpoints
(its own copy of the model and the data; the curvature products are not shared), rank 0 writes them,
and a unit computes the same numbers whichever rank does it, so the file is the same for any number of
ranks. The output follows :mod:`landscape.store`: the file (or the ``/track`` group added to an
existing result file of the same model and data) is built complete in memory, every dataset pre-allocated
with NaN, and put in place by :func:`~landscape.store.atomic_create` (of two runs racing on a new ``--out``
one is refused); the writer lock is held from then to the end, and every flush writes rows of those datasets,
the ``done`` mask last, through the locked descriptor; the end of the run (density grid, subspace overlaps)
writes into datasets also allocated up front.
A killed run is resumed by the same command; a different model, data, checkpoint series or setting is
refused with a message naming the difference.

Example:
    >>> import glob, os, tempfile
    >>> from landscape.train import train
    >>> from landscape.problem import make_problem
    >>> d = tempfile.mkdtemp()
    >>> _ = train("zoo:mlp", "zoo:synthetic", model_args={"width": 4, "depth": 1}, steps=4, batch_size=32,
    ...           save_every=2, out_dir=d, log=None)
    >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=64, device="cpu",
    ...                  model_args={"width": 4, "depth": 1})
    >>> r = run_track(p, os.path.join(d, "ckpt_*.pt"), TrackSpec(top_k=2, lr=0.1), os.path.join(d, "t.h5"),
    ...               progress=False)
    >>> r.steps.tolist(), r.values["eigenvalues"].shape
    ([0, 2, 4], (3, 2))
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field

import h5py
import numpy as np
import torch

from . import curvature as C
from . import params as P
from .errors import LandscapeError
from .parallel import World, run_with_progress, world
from .problem import Problem, read_state_dict
from .results import first_line, open_result
from .sharpness import GROUPS, compute_metrics, eval_mode, loss_acc_at, parse_metrics, trainable
from .store import (
    H5_KW,
    WriterLock,
    _json,
    _RunStore,
    atomic_create,
    base_attrs,
    check_output_path,
    check_provenance,
    check_readable,
    close_h5,
    compare_identity,
    provenance,
    read_attrs,
    refuse_foreign,
    write_samples,
)

GROUP = "track"
#: metric groups of ``--metrics`` (losses and accuracies are always measured)
METRIC_GROUPS = ("eigen", "trace", "density", "overlap", "update")
DENSITY_GRID_POINTS = 400


@dataclass
class TrackSpec:
    """Everything that shapes a track's numbers (recorded in the file; all but ``flush_every`` must match on resume).

    ``metrics``: ``all`` or comma-separated groups of :data:`METRIC_GROUPS` (``eigen``: λ_max, top-k,
    λ_min, EoS ratio; ``trace``; ``density``: SLQ and negative mass; ``overlap``: gradient and
    consecutive-subspace overlaps; ``update``: directional sharpness of θ_{t+1} − θ_t).
    ``sharpness``: comma-separated metrics of ``landscape sharpness`` to add per checkpoint.
    ``negative_eps``: a node counts as negative below −negative_eps·max|τ| (0: strictly negative).
    """

    metrics: str = "all"
    operator: str = "hessian"
    lr: float | None = None
    top_k: int = 5
    tol: float = 1e-4
    max_iter: int = 100
    trace_matvecs: int = 30
    trace_method: str = "hutch++"
    density_runs: int = 3
    density_steps: int = 40
    negative_eps: float = 0.0
    sharpness: str = ""
    seed: int = 0
    flush_every: float = 10.0

    def groups(self) -> list[str]:
        items = [s.strip() for s in str(self.metrics).split(",") if s.strip()]
        out: list[str] = []
        for it in items:
            names = METRIC_GROUPS if it == "all" else (it,) if it in METRIC_GROUPS else None
            if names is None:
                raise LandscapeError(f"`metrics`: unknown group {it!r}; choose all or some of "
                                     f"{', '.join(METRIC_GROUPS)} (comma separated)")
            out.extend(n for n in names if n not in out)
        if "overlap" in out and "eigen" not in out:
            out.insert(0, "eigen")  # the overlaps need the eigenvectors
        return out

    def sharpness_metrics(self) -> list[str]:
        if not self.sharpness:
            return []
        try:
            names = [n for n in parse_metrics(self.sharpness) if n not in GROUPS["layerwise"]]
        except LandscapeError as e:  # the flag here is --sharpness
            raise LandscapeError(str(e).replace("`metrics`", "`sharpness`", 1)) from None
        if self.lr is None:
            names = [n for n in names if n != "eos_ratio"]
        return names


@dataclass
class TrackResult:
    """What :func:`run_track` computed: ``values[name]`` has one row per checkpoint (NaN where not computed)."""

    path: str
    steps: np.ndarray
    checkpoints: list[str]
    values: dict[str, np.ndarray]
    computed: int
    seconds: float
    lr: float | None = None
    extra: dict = field(default_factory=dict)

    def late_phase(self, name: str = "lambda_max", fraction: float = 0.5) -> float:
        """Mean of ``name`` over the last ``fraction`` of the steps (by step, not by checkpoint count)."""
        return late_phase(self.steps, self.values[name], fraction)


def late_phase(steps: np.ndarray, values: np.ndarray, fraction: float = 0.5) -> float:
    """Mean of the finite ``values`` at steps ≥ first + (1 − fraction)·(last − first)."""
    steps = np.asarray(steps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    cut = steps[0] + (1 - fraction) * (steps[-1] - steps[0])
    sel = v[(steps >= cut) & np.isfinite(v)]
    return float(sel.mean()) if sel.size else float("nan")


# ---------------------------------------------------------------------------- the series
_NUMBER = re.compile(r"(\d+)")


def _natural_key(path: str) -> list:
    return [int(t) if t.isdigit() else t for t in _NUMBER.split(os.path.basename(path))]


def _step_of(path: str) -> int | None:
    """The checkpoint's own ``step`` entry (a dict checkpoint), else the last number in its file name."""
    if not path.endswith(".safetensors"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - read_state_dict reports unreadable files in one line later
            obj = None
        if isinstance(obj, dict) and "step" in obj:
            s = obj["step"]
            try:
                return int(s.item() if isinstance(s, torch.Tensor) else s)
            except (TypeError, ValueError):
                pass
    nums = _NUMBER.findall(os.path.basename(path))
    return int(nums[-1]) if nums else None


def checkpoint_series(checkpoints: str | list[str]) -> tuple[list[int], list[str]]:
    """Steps and paths of a checkpoint series in step order.

    ``checkpoints``: a glob pattern (``'run/ckpt_*.pt'``), a list of patterns or paths. The step of a
    file is its ``step`` entry when the checkpoint is a dict that has one, else the last number in its
    name (``ckpt_00250.pt`` → 250); ``init.pt``/``final.pt``-style names without one are refused.
    """
    items = [checkpoints] if isinstance(checkpoints, str | os.PathLike) else list(checkpoints)
    paths: list[str] = []
    for it in items:
        it = str(it)
        found = sorted(glob.glob(it), key=_natural_key) if glob.has_magic(it) else [it]
        if not found:
            raise LandscapeError(f"`checkpoints`: no file matches {it!r} (quote the pattern: 'run/ckpt_*.pt')")
        for p in found:
            if not os.path.isfile(p):
                raise LandscapeError(f"`checkpoints`: {p!r} does not exist")
            if p not in paths:
                paths.append(p)
    if len(paths) < 1:
        raise LandscapeError("`checkpoints`: give at least one checkpoint")
    steps = []
    for p in paths:
        s = _step_of(p)
        if s is None:
            raise LandscapeError(f"`checkpoints`: cannot tell the training step of {p!r}: name it with its step "
                                 "(ckpt_00250.pt) or save a 'step' entry beside its state_dict")
        steps.append(s)
    order = sorted(range(len(paths)), key=lambda i: (steps[i], _natural_key(paths[i])))
    steps = [steps[i] for i in order]
    paths = [paths[i] for i in order]
    for a, b in zip(range(len(steps)), range(1, len(steps))):
        if steps[a] == steps[b]:
            raise LandscapeError(f"`checkpoints`: {paths[a]!r} and {paths[b]!r} are both step {steps[a]}; give "
                                 "one run's checkpoints")
    return steps, paths


def load_states(model: torch.nn.Module, path: str, index: int, total: int, unsafe_load: bool = False,
                strip_prefix: str | None = None) -> P.Named:
    """The floating state of checkpoint ``path`` for ``model``; a checkpoint of another architecture is a one-line
    error naming it and its place in the series."""
    sd = read_state_dict(path, unsafe_load=unsafe_load, flag="`checkpoints`", strip_prefix=strip_prefix)
    target = P.states(model)
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target and sd[k].is_floating_point()]
    shapes = [f"{k} {tuple(sd[k].shape)} vs model {tuple(target[k].shape)}" for k in target
              if k in sd and tuple(sd[k].shape) != tuple(target[k].shape)]
    if missing or unexpected or shapes:
        why = (f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(unexpected[:3])}"
               if unexpected else f"shape {'; '.join(shapes[:2])}")
        raise LandscapeError(f"`checkpoints`: {path!r} (checkpoint {index + 1} of {total}) does not match the model "
                             f"({why}): every checkpoint of the series must come from `model` with `model_args`")
    return {k: sd[k].detach().to(device=v.device, dtype=v.dtype) for k, v in target.items()}


# ---------------------------------------------------------------------------- one checkpoint
def _scalar_names(problem: Problem, spec: TrackSpec, n_total: int) -> list[str]:
    groups = spec.groups()
    names = [f"{s}_{m}" for s in problem.splits for m in ("loss", "acc")]
    if "eigen" in groups:
        names += ["lambda_max", "lambda_min"] + (["eos_ratio"] if spec.lr is not None else [])
    if "trace" in groups:
        names += ["trace", "trace_stderr"]
    if "density" in groups:
        names += ["negative_mass"]
    if "overlap" in groups or "update" in groups:
        names += ["grad_norm"]
    if "overlap" in groups:
        names += ["grad_overlap"]
    if "update" in groups:
        names += ["update_sharpness", "update_grad_corr", "update_cosine", "update_norm"]
    names += [f"sharpness/{n}" for n in spec.sharpness_metrics()]
    return names


def negative_mass(nodes: np.ndarray, weights: np.ndarray, eps: float = 0.0) -> float:
    """(1/n_v) Σ_runs Σ_{τ < −eps·max|τ|} w_τ: the SLQ estimate of the fraction of negative eigenvalues."""
    nodes = np.atleast_2d(np.asarray(nodes, dtype=np.float64))
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    ok = np.isfinite(nodes)
    if not ok.any():
        return float("nan")
    cut = -eps * float(np.max(np.abs(nodes[ok])))
    neg = ok & (np.nan_to_num(nodes, nan=0.0) < cut)
    return float((weights * neg).sum() / nodes.shape[0])


def subspace_overlap(U: np.ndarray, V: np.ndarray) -> float:
    """‖UᵀV‖_F²/k for two (k, P) row-orthonormal bases: 1 for the same subspace, k/P on average for random ones."""
    U = np.asarray(U, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    if not (np.all(np.isfinite(U)) and np.all(np.isfinite(V))):
        return float("nan")
    return float(np.sum((U @ V.T) ** 2) / U.shape[0])


class CheckpointEvaluator:
    """``compute(indices) -> {name: rows}``: every quantity of checkpoints ``indices`` on this rank alone."""

    def __init__(self, problem: Problem, spec: TrackSpec, paths: list[str], fingerprints: list[str],
                 unsafe_load: bool = False, strip_prefix: str | None = None):
        self.problem, self.spec, self.paths, self.fingerprints = problem, spec, paths, fingerprints
        self.unsafe_load = unsafe_load
        self.strip_prefix = strip_prefix
        self.groups = spec.groups()
        self.scalars = _scalar_names(problem, spec, len(paths))
        self.sharp = spec.sharpness_metrics()
        self.names = [n for n, p in problem.model.named_parameters() if p.requires_grad]

    def _load(self, i: int) -> P.Named:
        st = load_states(self.problem.model, self.paths[i], i, len(self.paths), self.unsafe_load,
                         self.strip_prefix)
        if self.fingerprints and P.fingerprint(st) != self.fingerprints[i]:
            raise LandscapeError(f"`checkpoints`: {self.paths[i]!r} changed on disk while the run went on; "
                                 "run the command again")
        return st

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        rows = [self.one(int(i)) for i in indices]
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}

    def one(self, i: int) -> dict[str, np.ndarray]:
        spec, prob, model = self.spec, self.problem, self.problem.model
        P.assign_(P.states(model), self._load(i))
        out: dict[str, np.ndarray] = {n: np.asarray(np.nan) for n in self.scalars}
        theta = trainable(model)
        for split, batches in prob.splits.items():
            loss, acc = loss_acc_at(prob, theta, batches=batches)
            out[f"{split}_loss"], out[f"{split}_acc"] = np.asarray(loss), np.asarray(acc)
        with eval_mode(model):
            op = C.make_operator(prob, spec.operator)
            need_g = "overlap" in self.groups or "update" in self.groups
            g = op.flatten(op.gradient()).double() if need_g else None
            if g is not None:
                out["grad_norm"] = np.asarray(float(g.norm()))
            if "eigen" in self.groups:
                k = spec.top_k
                eig = C.lanczos(op, k=k, which="both", tol=spec.tol, max_iter=spec.max_iter, seed=spec.seed,
                                return_vectors="overlap" in self.groups)
                vals = np.full(k, np.nan)
                vals[: len(eig.eigenvalues)] = eig.eigenvalues
                out["eigenvalues"] = vals
                out["lambda_max"] = np.asarray(vals[0])
                out["lambda_min"] = np.asarray(eig.smallest if eig.smallest is not None else np.nan)
                out["eigen_converged"] = np.asarray(float(eig.converged))
                if spec.lr is not None:
                    out["eos_ratio"] = np.asarray(spec.lr * vals[0] / 2.0)
                if "overlap" in self.groups:
                    U = np.full((k, op.dim), np.nan, dtype=np.float64)
                    for j, v in enumerate(eig.eigenvectors or []):
                        U[j] = op.flatten(v).double().cpu().numpy()
                    out["eigenvectors"] = U.astype(np.float32)
                    gn = float(g.norm())
                    fin = np.all(np.isfinite(U), axis=1)
                    proj = U[fin] @ g.cpu().numpy()
                    out["grad_overlap"] = np.asarray(float(np.sum(proj ** 2)) / gn ** 2 if gn > 0 else np.nan)
            if "trace" in self.groups:
                tr = C.hessian_trace(op, matvecs=spec.trace_matvecs, method=spec.trace_method, seed=spec.seed)
                out["trace"], out["trace_stderr"] = np.asarray(tr.estimate), np.asarray(tr.stderr)
            if "density" in self.groups:
                nodes, weights = C.slq_nodes(op, spec.density_runs, spec.density_steps, spec.seed)
                shape = (spec.density_runs, min(spec.density_steps, op.dim))
                out["slq_nodes"] = np.full(shape, np.nan)
                out["slq_weights"] = np.zeros(shape)
                out["slq_nodes"][:, : nodes.shape[1]] = nodes
                out["slq_weights"][:, : weights.shape[1]] = weights
                out["negative_mass"] = np.asarray(negative_mass(nodes, weights, spec.negative_eps))
            if "update" in self.groups and i + 1 < len(self.paths):
                nxt = self._load(i + 1)
                u = torch.cat([(nxt[n].to(torch.float64) - theta[n].to(torch.float64)).reshape(-1)
                               for n in op.names])
                un = float(u.norm())
                out["update_norm"] = np.asarray(un)
                if un > 0:
                    cu = op.matvec_flat(u.to(op.dtype)).double()
                    out["update_sharpness"] = np.asarray(float(u @ cu) / un ** 2)
                    corr = float(g @ u)
                    out["update_grad_corr"] = np.asarray(corr)
                    gn = float(g.norm())
                    out["update_cosine"] = np.asarray(corr / (gn * un) if gn > 0 else np.nan)
        if self.sharp:
            res = compute_metrics(prob, self.sharp, lr=spec.lr, seed=spec.seed)
            for n, met in res.items():
                out[f"sharpness/{n}"] = np.asarray(float(met))
        return out


# ---------------------------------------------------------------------------- the file
def _datasets(problem: Problem, spec: TrackSpec, n: int, dim: int) -> dict[str, tuple[tuple[int, ...], type]]:
    """Every per-checkpoint dataset of ``/track``: name → (shape, dtype)."""
    groups = spec.groups()
    out: dict[str, tuple[tuple[int, ...], type]] = {s: ((n,), np.float64) for s in _scalar_names(problem, spec, n)}
    if "eigen" in groups:
        out["eigenvalues"] = ((n, spec.top_k), np.float64)
        out["eigen_converged"] = ((n,), np.float64)
    if "overlap" in groups:
        out["eigenvectors"] = ((n, spec.top_k, dim), np.float32)
    if "density" in groups:
        m = min(spec.density_steps, dim)
        out["slq_nodes"] = ((n, spec.density_runs, m), np.float64)
        out["slq_weights"] = ((n, spec.density_runs, m), np.float64)
    return out


def _finals(spec: TrackSpec, n: int) -> dict[str, tuple[tuple[int, ...], type]]:
    """Datasets written once every checkpoint is done (allocated up front, too)."""
    groups = spec.groups()
    out: dict[str, tuple[tuple[int, ...], type]] = {}
    if "overlap" in groups:
        out["subspace_overlap"] = ((n,), np.float64)
    if "density" in groups:
        out["density/grid"] = ((DENSITY_GRID_POINTS,), np.float64)
        out["density/values"] = ((n, DENSITY_GRID_POINTS), np.float64)
        out["density/sigma"] = ((), np.float64)
    return out


def _build_group(f: h5py.File, identity: dict, config: dict, steps: list[int], paths: list[str],
                 shapes: dict, finals: dict) -> None:
    g = f.create_group(GROUP, track_order=True)
    g.attrs["identity"] = _json(identity)
    g.attrs["config"] = _json(config)
    g.attrs["checkpoints"] = json.dumps(paths)
    for k in ("operator", "lr", "top_k", "seed"):
        if config.get(k) is not None:
            g.attrs[k] = config[k]
    g.create_dataset("step", data=np.asarray(steps, dtype=np.int64))
    for name, (shape, dt) in {**shapes, **finals}.items():
        g.create_dataset(name, data=np.full(shape, np.nan, dtype=dt), track_times=False)
    g.create_dataset("done", data=np.zeros(len(steps), np.uint8), track_times=False)


def _new_file(attrs: dict, info: dict, build_group):
    """``build(f)`` of a new track file (for :func:`~landscape.store.atomic_create`)."""
    def build(f: h5py.File) -> None:
        for k, v in attrs.items():
            f.attrs[k] = v
        write_samples(f, info)
        build_group(f)

    return build


def _beside(lock: WriterLock, build_group):
    """``build(f)`` of a copy of the locked file (read through its descriptor) with a new ``/track``: the file is
    replaced by :func:`~landscape.store.atomic_create` as a whole, so it never holds a half-made group (and an
    old ``/track``'s space is not kept)."""
    def build(f: h5py.File) -> None:
        src = lock.h5("r")
        try:
            for k, v in src.attrs.items():
                f.attrs[k] = v
            for name in src:
                if name != GROUP:
                    src.copy(src[name], f, name=name)
        finally:
            close_h5(src)
        build_group(f)

    return build


class _TrackStore(_RunStore):
    """Rows of ``/track`` datasets, written at most every ``flush_every`` seconds; the done mask last.

    The lock, the done mask and the flush order are :class:`~landscape.store._RunStore`'s; the rows of the
    track's nested datasets go through HDF5 (a checkpoint's row is one write per dataset)."""

    unit = "checkpoints"

    def __init__(self, path: str, names: list[str], n: int, flush_every: float, lock: WriterLock):
        self.names, self.n = names, n
        self._pending: dict[int, dict[str, np.ndarray]] = {}
        super().__init__(path, f"{GROUP}/done", flush_every, lock)

    def add(self, indices: np.ndarray, values: dict[str, np.ndarray]) -> None:
        for j, i in enumerate(indices):
            self._pending[int(i)] = {k: v[j] for k, v in values.items()}
        if self._due():
            self.flush()

    def _pending_count(self) -> int:
        return len(self._pending)

    def _write_values(self) -> np.ndarray:
        f = self._h5()
        g = f[GROUP]
        for i, row in sorted(self._pending.items()):
            for name, v in row.items():
                if name in g:
                    g[name][i] = v
        f.flush()  # the rows on disk before the mask claims them
        return np.asarray(sorted(self._pending), dtype=np.int64)

    def _clear_pending(self) -> None:
        self._pending.clear()


def read_track(path: str) -> dict[str, np.ndarray]:
    """Every dataset of ``/track`` (rows not done are NaN), plus ``config`` and ``checkpoints``."""
    r = open_result(path)
    if not r.track:
        raise LandscapeError(f"{path} holds no /track; make one with 'landscape track ... --out {path}'")
    return r.track


def _finish(store: _TrackStore, spec: TrackSpec) -> None:
    """With every checkpoint done: subspace overlaps of consecutive checkpoints and the density on one grid
    (written through the store's lock)."""
    groups = spec.groups()
    try:
        f = store.h5()
    except OSError as e:
        raise LandscapeError(f"writing {store.path} failed ({first_line(e)}); its checkpoints are saved: run the "
                             "same command again to finish it") from None
    try:
        g = f[GROUP]
        if "overlap" in groups:
            U = g["eigenvectors"]
            n = U.shape[0]
            ov = np.full(n, np.nan)
            prev = np.asarray(U[0], dtype=np.float64) if n else None
            for i in range(n - 1):
                cur = np.asarray(U[i + 1], dtype=np.float64)
                ov[i] = subspace_overlap(prev, cur)
                prev = cur
            g["subspace_overlap"][...] = ov
        if "density" in groups:
            nodes = np.asarray(g["slq_nodes"][()])
            weights = np.asarray(g["slq_weights"][()])
            fin = nodes[np.isfinite(nodes)]
            if fin.size:
                lo, hi = float(fin.min()), float(fin.max())
                spread = hi - lo
                sigma = 0.01 * (spread if spread > 0 else max(abs(hi), 1.0))
                grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, DENSITY_GRID_POINTS)
                vals = np.stack([C.gaussian_density(nodes[i], weights[i], grid, sigma) for i in range(len(nodes))])
                g["density/grid"][...] = grid
                g["density/values"][...] = vals
                g["density/sigma"][()] = sigma
    except OSError as e:
        raise LandscapeError(f"writing {store.path} failed ({first_line(e)}); its checkpoints are saved: free some "
                             "space and run the same command again to finish it") from None
    finally:
        close_h5(f)


# ---------------------------------------------------------------------------- the run
def _config(problem: Problem, spec: TrackSpec) -> dict:
    info = {k: v for k, v in problem.info.items() if not k.endswith("_indices")}
    cfg = {k: v for k, v in asdict(spec).items() if k != "flush_every"}
    cfg.update(model=info.get("model"), model_args=info.get("model_args"), data=info.get("train_data"),
               test_data=info.get("test_data"), loss=problem.loss, samples=info.get("samples"),
               batch_size=info.get("batch_size"), sample_seed=info.get("seed"), n_samples=info.get("train_samples"),
               device=str(problem.device))
    return cfg


def _identity(config: dict, steps: list[int], fingerprints: list[str], data_fp: str) -> dict:
    keys = ("model", "model_args", "loss", "samples", "data", "test_data", "batch_size", "operator", "lr", "top_k",
            "tol", "max_iter", "trace_matvecs", "trace_method", "density_runs", "density_steps", "negative_eps",
            "sharpness", "seed")
    return {
        "data (data_fingerprint)": data_fp,
        "checkpoint steps": list(steps),
        "checkpoint weights (fingerprints)": _short_hash("".join(fingerprints)),
        "--metrics": config.get("metrics_groups"),
        **{f"--{k.replace('_', '-')}": config.get(k) for k in keys},
    }


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _existing_identity(out: str) -> dict | None:
    """The ``/track`` identity of an existing result file, or None when ``out`` does not exist / has no track."""
    if not os.path.exists(out):
        return None
    check_readable(out)
    try:
        with h5py.File(out, "r", **H5_KW) as f:
            if GROUP not in f:
                return None
            g = f[GROUP]
            if "done" not in g:
                raise LandscapeError(f"{out}: /track has no done mask; it is corrupted: pass `overwrite`")
            done = np.asarray(g["done"][()])
            if not np.isin(done, (0, 1)).all():
                raise LandscapeError(f"{out}: /track/done holds values other than 0 and 1; it is corrupted: "
                                     "pass `overwrite` to recompute it")
            return json.loads(g.attrs.get("identity", "{}"))
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as e:
        raise LandscapeError(f"{out} cannot be read ({str(e).splitlines()[0]}); inspect it with 'landscape info' "
                             "or pass `overwrite`") from None


def _provenance(out: str, problem: Problem, fps: list[str], data_fp: str) -> dict:
    """What ``out`` must share with this track to take ``/track``: the data, loss and samples, and as the model
    one of the track's checkpoints (a surface is usually made at the last one, but any checkpoint of the run
    is the same training run)."""
    have = read_attrs(out).get("model_fingerprint")
    model_fp = have if have in fps else fps[-1]
    return provenance(model_fp, data_fp, problem.loss, problem.info.get("samples"), problem.info.get("seed"))


def run_track(problem: Problem, checkpoints: str | list[str], spec: TrackSpec | None = None, out: str = "track.h5",
              *, overwrite: bool = False, command: str = "", progress: bool = True, w: World | None = None,
              unsafe_load: bool = False, strip_prefix: str | None = None) -> TrackResult:
    """Measure the landscape at every checkpoint of ``checkpoints`` into ``/track`` of ``out``; every rank calls it.

    ``problem``: the model (its architecture; the weights are replaced by each checkpoint's) and the data.
    ``out`` is created, resumed (same settings, same checkpoints: only the missing checkpoints are computed),
    or, when it is another kind of landscape file (a surface), gets a ``/track`` group beside its contents.
    ``overwrite`` replaces an existing ``/track`` (the rest of the file is kept).
    """
    w = w or world()
    spec = spec or TrackSpec()
    t0 = time.perf_counter()
    if spec.operator not in C.OPERATORS:
        raise LandscapeError(f"`operator`: {spec.operator!r} is not one of {', '.join(C.OPERATORS)}")
    groups = spec.groups()
    spec.sharpness_metrics()
    model = problem.model
    dim = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if "eigen" in groups and spec.top_k > dim:
        raise LandscapeError(f"`top_k` {spec.top_k} is more than the {dim} trainable parameters of the model")
    config = _config(problem, spec)
    config["metrics_groups"] = groups
    data_fp = problem.info.get("data_fingerprint", "")

    def setup_root():
        steps, paths = checkpoint_series(checkpoints)
        # never over a checkpoint, not even with --overwrite; the default folder of the CLI is made
        check_output_path(out, "`out`", inputs={"`checkpoints`": paths}, create=out == "outputs/track.h5")
        fps = []
        for i, p in enumerate(paths):  # every checkpoint checked before any long work
            fps.append(P.fingerprint(load_states(model, p, i, len(paths), unsafe_load, strip_prefix)))
        identity = _identity(config, steps, fps, data_fp)
        n = len(paths)
        sh = _datasets(problem, spec, n, dim)
        fin = _finals(spec, n)

        def build_group(f: h5py.File) -> None:
            _build_group(f, identity, config, steps, paths, sh, fin)

        attrs = base_attrs(command, config, fps[-1], data_fp, kind="track")
        attrs["title"] = f"{config.get('model')} — training track ({n} checkpoints, {spec.operator})"
        lock = None
        try:
            if not os.path.exists(out):
                # made complete in memory and linked into place: of two runs racing on a new --out one is refused
                lock = atomic_create(out, _new_file(attrs, problem.info, build_group), keep_lock=True)
            else:
                if overwrite:
                    refuse_foreign(out)
                lock = WriterLock(out)  # refused while another process writes it; held until the run ends
                stored = None if overwrite else _existing_identity(out)
                if stored is not None:
                    compare_identity(out, stored, identity)
                else:
                    try:
                        check_readable(out)
                        own = read_attrs(out).get("kind") == "track"
                    except LandscapeError:
                        if not overwrite:
                            raise
                        own = True  # unreadable, replaced with --overwrite: nothing in it to keep
                    if own:  # a track file of its own: start afresh
                        build = _new_file(attrs, problem.info, build_group)
                    else:  # another landscape file (a surface): /track beside its contents, same model and data
                        check_provenance(out, _provenance(out, problem, fps, data_fp), adding=f"/{GROUP}")
                        build = _beside(lock, build_group)
                    new = atomic_create(out, build, replacing=lock, keep_lock=True)
                    lock.release()  # the replaced file's; the new one is locked since before it had the name
                    lock = new
            store = _TrackStore(out, list(sh), n, spec.flush_every, lock)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return steps, paths, fps, store

    got = w.collective(setup_root if w.is_root else (lambda: None))
    steps, paths, fps = w.bcast(got[:3] if w.is_root else None)
    store = got[3] if w.is_root else None
    compute = w.collective(lambda: CheckpointEvaluator(problem, spec, paths, fps, unsafe_load, strip_prefix))
    saved = P.clone(P.states(model))
    todo = store.todo() if w.is_root else None
    n_todo = w.bcast(len(todo) if w.is_root else 0)
    values: dict[str, np.ndarray] = {}
    interrupted = False
    try:
        interrupted = run_with_progress(w, todo, compute, store.add if w.is_root else None, chunk_size=1,
                                        total=len(paths), initial=len(paths) - n_todo, label=os.path.basename(out),
                                        unit="ckpt", progress=progress and n_todo > 0)
    finally:
        P.assign_(P.states(model), saved)
        if w.is_root:
            try:
                store.flush()
                if not interrupted and store.done.all():
                    _finish(store, spec)
            finally:
                store.close()
            if not interrupted and store.done.all():
                values = read_track(out)
    if interrupted:
        print(f"landscape: interrupted; {store.n_done}/{len(paths)} checkpoints are saved in {out}; "
              "run the same command again to compute the rest", file=sys.stderr, flush=True)
        if w.size > 1:
            w.abort(130)
        raise KeyboardInterrupt
    values = w.bcast(values if w.is_root else None)
    shaped = {k: v for k, v in values.items() if isinstance(v, np.ndarray)}
    return TrackResult(out, np.asarray(steps), list(paths), shaped, n_todo, time.perf_counter() - t0, spec.lr,
                       {"operator": spec.operator, "groups": groups})


def summary_lines(r: TrackResult, max_rows: int = 12) -> list[str]:
    """A few rows of the track (step, loss, λ_max, EoS ratio, overlaps) and the late-phase λ_max against 2/η."""
    v = r.values
    cols = [("step", None), ("train_loss", "loss"), ("lambda_max", "λ_max"), ("eos_ratio", "ηλ/2"),
            ("negative_mass", "neg mass"), ("grad_overlap", "‖P_k g‖²/‖g‖²"), ("subspace_overlap", "U_t·U_t+1"),
            ("update_sharpness", "uᵀCu/‖u‖²")]
    cols = [(k, lab) for k, lab in cols if k == "step" or k in v]
    n = len(r.steps)
    pick = sorted(set(np.linspace(0, n - 1, min(n, max_rows)).round().astype(int).tolist()))
    heads = [lab or k for k, lab in cols]
    rows = []
    for i in pick:
        cells = [str(int(r.steps[i]))]
        for k, _ in cols[1:]:
            x = float(np.asarray(v[k])[i])
            cells.append("" if not math.isfinite(x) else f"{x:.4g}")
        rows.append(cells)
    width = [max(len(h), *(len(c[j]) for c in rows)) for j, h in enumerate(heads)]
    lines = ["  ".join(h.rjust(wd) for h, wd in zip(heads, width))]
    lines += ["  ".join(c.rjust(wd) for c, wd in zip(cells, width)) for cells in rows]
    if "lambda_max" in v and n >= 2:
        late = r.late_phase("lambda_max")
        text = f"late-phase λ_max (mean over the second half of the steps): {late:.4g}"
        if r.lr:
            text += f"; 2/η = {2 / r.lr:.4g} (ratio {late * r.lr / 2:.3f})"
        lines.append(text)
    return lines
