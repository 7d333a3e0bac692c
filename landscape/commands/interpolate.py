"""``landscape interpolate``: loss and accuracy along θ_α = (1−α)θ₀ + αθ₁, and the monotonicity verdict.

The α values go through the same resumable store and MPI scheduler as surfaces
(``mpiexec -n 4 python scripts/interpolate.py ...``); the result is ``/paths/<name>`` of ``--out``.
"""

from __future__ import annotations

import argparse
import sys

from ..grid import parse_range
from ..parallel import configure_threads, world
from ..paths.analysis import verdict_line
from ..paths.run import interpolate
from ..states import has_batchnorm
from .common import add_problem_args, check_output_path, command_line, positive_float, positive_int, problem_from_args
from .surface import add_progress_and_plot, plot_when_done


def _group_name(text: str) -> str:
    """``--name``: one HDF5 group name under /paths (not empty, no '/', not '.')."""
    if not text.strip() or "/" in text or text in (".", ".."):
        raise argparse.ArgumentTypeError(f"--name {text!r}: give a non-empty group name without '/' "
                                         "(the path is stored as /paths/NAME), e.g. init_to_final")
    return text


def add_parser(sub) -> None:
    p = sub.add_parser("interpolate", help="loss/accuracy on the straight line between two checkpoints (MLI)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_problem_args(p, checkpoint=False)
    g = p.add_argument_group("path")
    g.add_argument("--from", dest="from_ckpt", required=True, metavar="PT", help="θ₀ (α = 0), e.g. init.pt")
    g.add_argument("--to", dest="to_ckpt", required=True, metavar="PT", help="θ₁ (α = 1), e.g. final.pt")
    g.add_argument("--alpha", default="-0.5:1.5:41", metavar="MIN:MAX:NUM", help="α values (write --alpha=-0.5:...)")
    g.add_argument("--bn-reestimate", action=argparse.BooleanOptionalAction, default=None,
                   help="re-estimate BatchNorm running statistics at every α on the training batches "
                        "(default: on when the model has BatchNorm)")
    g.add_argument("--tolerance", type=positive_float("--tolerance"), default=1e-3,
                   help="a rise of the loss larger than this is a bump (non-monotonic path)")
    g.add_argument("--name", type=_group_name, default="interpolation", help="the path's group name under /paths")
    o = p.add_argument_group("output and execution")
    o.add_argument("--out", default="outputs/interpolation.h5", metavar="FILE.h5")
    o.add_argument("--overwrite", action="store_true", help="replace --out instead of resuming it")
    o.add_argument("--flush-every", type=positive_float("--flush-every"), default=10.0, metavar="SECONDS")
    o.add_argument("--chunk-size", type=positive_int("--chunk-size"), metavar="N", help="α values per chunk")
    o.add_argument("--precision", default="fp32", choices=("fp32", "fp64"),
                   help="fp32: the model's own dtype; fp64: every α on a float64 copy of the model and data (losses "
                        "exact to ~1e-12 near a minimum). Losses are always computed stably and summed in float64")
    add_progress_and_plot(o, "draw the path when done")
    p.set_defaults(func=run)


def run(args) -> int:
    w = world()

    def setup():
        alphas = parse_range(args.alpha, "alpha").values()
        if w.is_root:
            check_output_path(args.out, inputs={"--from": args.from_ckpt, "--to": args.to_ckpt},
                              create=args.out == "outputs/interpolation.h5")
        return alphas, problem_from_args(args, w)

    alphas, problem = w.collective(setup)
    threads = configure_threads(w, problem.device)
    if w.is_root:
        bn = has_batchnorm(problem.model) if args.bn_reestimate is None else args.bn_reestimate
        where = f"{w.size} ranks" if w.size > 1 else "1 process"
        note = ("BatchNorm statistics re-estimated at every α on the training batches" if bn else
                "BatchNorm statistics interpolated, not re-estimated" if has_batchnorm(problem.model) else
                "no BatchNorm")
        print(f"landscape interpolate: {len(alphas)} α values, {problem.n_samples} samples on {problem.device} "
              f"({where}, {threads} threads per rank); {note} → {args.out}", file=sys.stderr, flush=True)
    res = interpolate(problem, args.from_ckpt, args.to_ckpt, alphas, args.out, name=args.name,
                      bn_reestimate=args.bn_reestimate, tolerance=args.tolerance, overwrite=args.overwrite,
                      command=command_line(), progress=not args.no_progress, w=w, flush_every=args.flush_every,
                      chunk_size=args.chunk_size, unsafe_load=args.unsafe_load, precision=args.precision)
    if w.is_root:
        print(f"{res.path}: {len(res.alpha)} α values ({res.computed} computed now, {res.seconds:.1f} s)")
        print(f"verdict: {verdict_line(res.summary)}")
        if args.plot:
            plot_when_done(res.path, "path")
    return 0
