"""``landscape surface``: loss and accuracy on a 1D line, 2D plane or 3D volume of directions."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..errors import LandscapeError
from ..grid import Grid
from ..parallel import configure_threads, world
from ..plot import plot_all, plot_kind
from ..results import open_result
from ..surface import SurfaceSpec, run_surface
from .common import add_problem_args, check_output_path, command_line, positive_float, positive_int, problem_from_args
from .report import print_warnings

DEFAULT_OUT = "outputs/surface.h5"


def add_parser(sub) -> None:
    p = sub.add_parser("surface", help="loss/accuracy on a 1D, 2D or 3D grid of directions around the weights",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_problem_args(p)
    g = p.add_argument_group("grid and directions")
    g.add_argument("--x", required=True, metavar="MIN:MAX:NUM", help="coordinates along the first direction")
    g.add_argument("--y", metavar="MIN:MAX:NUM", help="second direction (2D surface)")
    g.add_argument("--z", metavar="MIN:MAX:NUM", help="third direction (3D volume; needs --y)")
    g.add_argument("--directions", default="random", metavar="random|hessian|interp|pca|FILE.h5",
                   help="random Gaussian, top Hessian eigenvectors, init→final, trajectory PCA, or reuse a file's")
    g.add_argument("--norm", default="filter", choices=("filter", "layer", "model", "none"),
                   help="normalization of random directions")
    g.add_argument("--ignore", default="biasbn", choices=("biasbn", "none"),
                   help="biasbn: zero the direction on 1-D tensors (biases, BatchNorm); none: d = θ there")
    g.add_argument("--dir-type", default="weights", choices=("weights", "states"),
                   help="perturb parameters only, or all floating state (BatchNorm running stats too)")
    g.add_argument("--orthogonalize", action="store_true", help="Gram–Schmidt each direction against the previous")
    g.add_argument("--curvature-map", action="store_true",
                   help="also λmax, λmin and |λmin/λmax| of the Hessian at every grid point")
    g.add_argument("--from", dest="from_ckpt", metavar="PT", help="--directions interp: the initial weights θ₀")
    g.add_argument("--to", dest="to_ckpt", metavar="PT", help="--directions interp: the final weights θ₁")
    g.add_argument("--plane", nargs=3, metavar="PT", help="the plane through three models A, B, C (centre A)")
    g.add_argument("--trajectory", metavar="GLOB", help="--directions pca: checkpoints of the training run")
    o = p.add_argument_group("output and execution")
    o.add_argument("--out", default=DEFAULT_OUT, metavar="FILE.h5",
                   help="result file (the folder of the default is created)")
    o.add_argument("--overwrite", action="store_true", help="replace --out instead of resuming it")
    o.add_argument("--flush-every", type=positive_float("--flush-every"), default=10.0, metavar="SECONDS",
                   help="rank 0 writes finished points to disk at least this often")
    o.add_argument("--chunk-size", type=positive_int("--chunk-size"), metavar="N",
                   help="points per scheduling chunk (default: about 8 chunks per rank; rounded up to a multiple "
                        "of the points per batch)")
    o.add_argument("--points-per-batch", default="auto", metavar="auto|K",
                   help="grid points evaluated together: batched matrix products for sequential MLPs, vmap for "
                        "other models (1 = per-point path; auto: rank 0 times a few K and every rank uses its "
                        "choice; with a given K the surface is bitwise the same for any number of ranks)")
    o.add_argument("--precision", default="fp32", choices=("fp32", "fp64", "bf16", "fp16"),
                   help="fp32: the model's own dtype; fp64: the whole evaluation in float64 (a float64 copy of "
                        "the model and data: losses exact to ~1e-12 near a minimum, about 2-4x slower on a CPU); "
                        "bf16/fp16: autocast the forward pass (on a CPU usually slower than fp32). Losses are "
                        "always computed stably per example and summed in float64")
    o.add_argument("--compile", action="store_true",
                   help="torch.compile the forward pass, per point or under vmap (eager if it fails; batched "
                        "sequential MLPs then take the vmap path instead of their batched matrix products)")
    add_progress_and_plot(o, "render the default plots when done")
    p.set_defaults(func=run)


def add_progress_and_plot(group, plot_help: str) -> None:
    """``--no-progress`` and ``--plot`` (:func:`plot_when_done`) of a command that computes a result file."""
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    group.add_argument("--plot", action="store_true", help=plot_help)


def spec_from_args(args) -> SurfaceSpec:
    if args.points_per_batch != "auto":
        try:
            if int(args.points_per_batch) < 1:
                raise ValueError
        except ValueError:
            raise LandscapeError(f"--points-per-batch={args.points_per_batch!r}: use auto or a positive integer") \
                from None
    if args.directions == "interp" and not (args.from_ckpt and args.to_ckpt):
        raise LandscapeError("--directions interp needs --from INIT.pt and --to FINAL.pt")
    if args.directions == "pca" and not args.trajectory:
        raise LandscapeError("--directions pca needs --trajectory 'DIR/ckpt_*.pt'")
    return SurfaceSpec(x=args.x, y=args.y, z=args.z, directions=args.directions, norm=args.norm, ignore=args.ignore,
                       dir_type=args.dir_type, orthogonalize=args.orthogonalize, seed=args.seed,
                       curvature_map=args.curvature_map, from_ckpt=args.from_ckpt, to_ckpt=args.to_ckpt,
                       plane=args.plane, trajectory=args.trajectory, flush_every=args.flush_every,
                       chunk_size=args.chunk_size, points_per_batch=args.points_per_batch,
                       precision=args.precision, compile=args.compile)


def run(args) -> int:
    w = world()

    def setup():
        spec = spec_from_args(args)
        Grid.from_ranges(spec.x, spec.y, spec.z)  # validate before loading anything
        if w.is_root:
            inputs = {"--checkpoint": args.checkpoint, "--from": args.from_ckpt, "--to": args.to_ckpt,
                      "--plane": args.plane, "--directions": args.directions}
            check_output_path(args.out, inputs=inputs, create=args.out == DEFAULT_OUT)
        return spec, problem_from_args(args, w)

    spec, problem = w.collective(setup)
    threads = configure_threads(w, problem.device)
    if w.is_root:
        where = f"{w.size} ranks" if w.size > 1 else "1 process"
        print(f"landscape surface: {problem.n_samples} samples on {problem.device} ({where}, {threads} threads "
              f"per rank) → {args.out}", file=sys.stderr, flush=True)
    res = run_surface(problem, spec, args.out, overwrite=args.overwrite, command=command_line(),
                      progress=not args.no_progress, w=w)
    if w.is_root:
        print(f"{res.path}: {res.done}/{_size(res.shape)} points done ({res.computed} computed now, "
              f"{res.seconds:.1f} s)")
        if os.environ.get("LANDSCAPE_TIMINGS"):  # benchmarks/speed/bench_command.py reads this line
            print("landscape surface: timings " + json.dumps({k: round(v, 4) for k, v in res.phases.items()}),
                  file=sys.stderr, flush=True)
        if args.plot:
            plot_when_done(res.path)
    return 0


def plot_when_done(path: str, kind: str = "all") -> list[str]:
    """``--plot``: what ``landscape plot FILE [--kind KIND]`` draws, next to the file, one path per line on
    stdout (rank 0 only). The result is saved whatever happens here: a picture that cannot be drawn is one
    ``landscape plot: error:`` line, and the command still succeeds."""
    try:
        result = open_result(path)
        with print_warnings("plot"):
            if kind == "all":
                paths = plot_all(result, os.path.dirname(path))
            else:
                paths = plot_kind(result, kind, os.path.dirname(path))
    except LandscapeError as e:
        print(f"landscape plot: error: {e}", file=sys.stderr, flush=True)
        return []
    for p in paths:
        print(p, flush=True)
    return paths


def _size(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
