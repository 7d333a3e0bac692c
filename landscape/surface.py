"""Run a surface: directions (looked up in the registry of :mod:`landscape.directions`) + grid + evaluator on
the run driver (:mod:`landscape.driver`: store, scheduler, progress, interrupts).

``run_surface`` is the library entry point (one process or every MPI rank calls it with the same
arguments); ``landscape surface`` is a thin wrapper around it.

Example:
    >>> import tempfile, os
    >>> from landscape.problem import make_problem
    >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=64, device="cpu")
    >>> out = os.path.join(tempfile.mkdtemp(), "s.h5")
    >>> res = run_surface(p, SurfaceSpec(x="-1:1:3", y="-1:1:2"), out, progress=False)
    >>> res.shape, res.done
    ((3, 2), 6)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from . import params as P
from .curvature.maps import CurvatureMapEvaluator
from .directions import REBUILT_ON_RESUME, Directions, build_directions, direction_kind
from .directions.file import load_directions
from .driver import Output, open_output, run_config, sweep
from .evaluate import PointEvaluator, make_evaluator
from .grid import Grid
from .parallel import World, world
from .problem import Problem
from .schema import AXES
from .store import (
    GridStore,
    base_attrs,
    compare_identity,
    create_surface_file,
    peek_surface,
    surface_identity,
)


@dataclass
class SurfaceSpec:
    """Everything that shapes a surface's numbers (recorded as the file's ``config``)."""

    x: str = "-1:1:51"
    y: str | None = None
    z: str | None = None
    directions: str = "random"  # a registered kind (random | hessian | interp | pca | ...) or FILE.h5
    norm: str = "filter"
    ignore: str = "biasbn"
    dir_type: str = "weights"
    orthogonalize: bool = False
    seed: int = 0
    curvature_map: bool = False
    # path-based directions (issue: paths)
    from_ckpt: str | None = None
    to_ckpt: str | None = None
    plane: list[str] | None = None
    trajectory: str | None = None
    # execution (not part of the identity)
    flush_every: float = 10.0
    chunk_size: int | None = None
    points_per_batch: str = "auto"
    precision: str = "fp32"  # fp32 | fp64 (all in float64) | bf16 | fp16 (autocast)
    compile: bool = False


@dataclass
class SurfaceResult:
    path: str
    shape: tuple[int, ...]
    done: int
    computed: int
    seconds: float
    #: seconds per phase: ``setup`` (directions, file), ``probe`` (choosing the evaluator), ``points``, ``write``
    phases: dict = field(default_factory=dict)


def metric_names(problem: Problem, spec: SurfaceSpec) -> list[str]:
    names = [f"{s}_{m}" for s in problem.splits for m in ("loss", "acc")]
    if spec.curvature_map:
        names += ["train_lambda_max", "train_lambda_min", "train_convexity"]
    return names


def make_compute(problem: Problem, directions: Directions, grid: Grid, spec: SurfaceSpec, ranks: int = 1):
    """``compute(flat_indices) -> {metric: values}`` for this rank (``ranks``: how many share the grid)."""
    if spec.curvature_map:
        # (fp64: the Hessian too is taken on the evaluator's float64 copy of the model)
        base = PointEvaluator(problem, directions, precision="fp64" if spec.precision == "fp64" else "fp32")
        evaluator = CurvatureMapEvaluator(base.problem, directions, base, seed=spec.seed)
    else:
        extra = {"precision": spec.precision} if spec.precision != "fp32" else {}
        extra.update({"compile": True} if spec.compile else {})
        evaluator = make_evaluator(problem, directions, spec.points_per_batch, n_points=-(-grid.size // ranks),
                                   **extra)

    def compute(indices: np.ndarray) -> dict[str, np.ndarray]:
        return evaluator(grid.points(indices))

    compute.points_per_batch = getattr(evaluator, "k", 1)  # type: ignore[attr-defined]
    return compute


def _make_compute_agreed(w: World, problem: Problem, directions: Directions, grid: Grid, spec: SurfaceSpec):
    """``make_compute`` on every rank, with one K for all: rank 0 times the choices (``auto``), the others take
    its K, so that a point's value does not depend on which rank computed it (nor on the number of ranks)."""
    if w.size == 1 or str(spec.points_per_batch).strip().lower() != "auto" or spec.curvature_map:
        return w.collective(lambda: make_compute(problem, directions, grid, spec, w.size))
    root = w.collective(lambda: make_compute(problem, directions, grid, spec, w.size) if w.is_root else None)
    k = w.bcast(getattr(root, "points_per_batch", 1) if w.is_root else None)
    fixed = replace(spec, points_per_batch=k)
    others = w.collective(lambda: None if w.is_root else make_compute(problem, directions, grid, fixed))
    return root if w.is_root else others


def _config(problem: Problem, spec: SurfaceSpec) -> dict:
    # precision is kept (part of the resume identity: one file never mixes fp32 and bf16 values)
    return run_config(problem, {k: v for k, v in asdict(spec).items()
                                if k not in ("flush_every", "chunk_size", "points_per_batch", "compile")})


def _same_direction_request(stored: dict, spec: SurfaceSpec) -> bool:
    keys = ("directions", "norm", "ignore", "dir_type", "orthogonalize", "seed", "from_ckpt", "to_ckpt", "plane",
            "trajectory")
    return all(stored.get(k) == getattr(spec, k) for k in keys)


def run_surface(problem: Problem, spec: SurfaceSpec, out: str, *, overwrite: bool = False,
                command: str = "", progress: bool = True, w: World | None = None) -> SurfaceResult:
    """Compute (or finish) the surface of ``spec`` into ``out``; every rank calls this."""
    w = w or world()
    t0 = time.perf_counter()
    grid = Grid.from_ranges(spec.x, spec.y, spec.z)
    names = metric_names(problem, spec)
    config = _config(problem, spec)
    model_fp = P.fingerprint(P.select(problem.model, "states"))
    data_fp = problem.info.get("data_fingerprint", "")

    def setup(output: Output) -> tuple[Directions, GridStore]:
        existing = None
        if output.resuming:
            existing = peek_surface(out)
            # the grid first: a 1-D file resumed with a 2-D grid is about --y, not about the directions
            compare_identity(out, existing["identity"], _grid_identity(grid), seeds=_seeds(existing, spec))
        # Reuse the file's directions on resume (Hessian eigenvectors are costly to recompute), except for
        # the kinds centred on other weights than the model's (θ₀ / A / the final checkpoint): rebuilding
        # them is cheap and deterministic.
        reusable = direction_kind(spec) not in REBUILT_ON_RESUME
        if existing is not None and reusable and _same_direction_request(existing["config"], spec):
            dirs = load_directions(out, P.clone(P.select(problem.model, spec.dir_type)), grid.ndim)
        else:
            dirs = build_directions(problem, spec, grid.ndim)
        identity = surface_identity(config, grid.coords, model_fp, data_fp, dirs.fingerprint())
        if existing is not None:
            compare_identity(out, existing["identity"], identity, seeds=_seeds(existing, spec))
        else:
            attrs = base_attrs(command, config, model_fp, data_fp, kind="surface")
            attrs["title"] = _title(config, grid, dirs)
            output.created(create_surface_file(out, attrs=attrs, identity=identity, coords=grid.coords,
                                               directions=dirs, metrics=names, info=problem.info,
                                               replacing=output.lock))
        store = GridStore(out, [f"surfaces/{n}" for n in names], "surfaces/done", grid.shape, spec.flush_every,
                          lock=output.lock)
        return dirs, store

    dirs, store = w.collective((lambda: open_output(out, overwrite, setup)) if w.is_root else (lambda: (None, None)))
    # every rank gets rank 0's directions, bit for bit
    center = w.bcast_named(dirs.center if w.is_root else None, like=P.select(problem.model, spec.dir_type))
    vectors = [w.bcast_named(dirs.vectors[i] if w.is_root else None, like=center) for i in range(grid.ndim)]
    meta = w.bcast(dirs.meta if w.is_root else None)
    dirs = Directions(center, vectors, spec.dir_type, meta)
    P.assign_(P.select(problem.model, spec.dir_type), center)

    t_setup = time.perf_counter()
    compute = _make_compute_agreed(w, problem, dirs, grid, spec)
    t_probe = time.perf_counter()
    k = getattr(compute, "points_per_batch", 1)
    run = sweep(w, store, compute, out=out, total=grid.size, noun="points", chunk_size=spec.chunk_size,
                max_chunk=64, multiple=k, progress=progress)
    phases = {"setup": t_setup - t0, "probe": t_probe - t_setup, "points": run.points_end - t_probe,
              "write": run.end - run.points_end}
    return SurfaceResult(out, grid.shape, run.done, run.computed, run.end - t0, phases)


def _grid_identity(grid: Grid) -> dict:
    """The grid's part of :func:`surface_identity` (checked before the directions are loaded)."""
    return {"grid dimensions": grid.ndim, **{f"--{a}": [float(c[0]), float(c[-1]), len(c)]
                                            for a, c in zip(AXES, grid.coords)}}


def _seeds(existing: dict, spec: SurfaceSpec) -> tuple:
    """(the file's --seed, this run's): a mismatch in data or directions is then named as the seed's."""
    return existing["config"].get("seed"), spec.seed


def _title(config: dict, grid: Grid, dirs: Directions) -> str:
    m = dirs.meta[0] if dirs.meta else {}
    kind = m.get("kind", config.get("directions"))
    norm = f", {m.get('norm')}-normalized" if kind == "random" else ""
    shape = "×".join(str(n) for n in grid.shape)
    return f"{config.get('model')} — {kind} directions{norm} — {shape} grid"
