"""``landscape track``: loss, curvature, spectrum and overlaps at every checkpoint of a training run.

Under ``mpiexec``/``mpirun``/``srun`` the checkpoints are shared out: each rank computes whole checkpoints
and rank 0 writes them; the file is the same for any number of ranks, and a killed run resumes.
"""

from __future__ import annotations

import argparse

from ..curvature import OPERATORS
from ..parallel import configure_threads, world
from ..track import METRIC_GROUPS, TrackSpec, run_track, summary_lines
from .common import add_problem_args, command_line, number, positive_float, positive_int, problem_from_args


def add_parser(sub) -> None:

    p = sub.add_parser(
        "track", help="the landscape along training: λ_max vs 2/η, spectra, gradient/eigenspace overlaps",
        description="Measure every checkpoint of a training run (landscape train --save-every N writes ckpt_*.pt), "
        "in step order (the checkpoint's 'step' entry, else the last number of its file name): loss and accuracy, "
        "λ_max, top-k eigenvalues and λ_min of the chosen curvature operator, the edge-of-stability ratio η·λ_max/2 "
        "(--lr), tr, the spectral density (SLQ) and its negative mass, the gradient's overlap with the top-k "
        "eigenspace ‖P_k g‖²/‖g‖² and the overlap of consecutive top-k eigenspaces, and the directional sharpness "
        "uᵀCu/‖u‖² and gradient correlation gᵀu along the update u = θ_{t+1} − θ_t. Under mpiexec each rank "
        "computes whole checkpoints (every rank reads the checkpoint files) and rank 0 writes --out; a killed run "
        "resumes with the same command. Plot it with 'landscape plot FILE --kind track'.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_problem_args(p, checkpoint=False)
    g = p.add_argument_group("what to measure")
    g.add_argument("--checkpoints", nargs="+", required=True, metavar="PATTERN",
                   help="quoted glob pattern ('run/ckpt_*.pt') or checkpoint files of one run")
    g.add_argument("--lr", type=positive_float("--lr"), help="the run's learning rate η: adds η·λ_max/2 and 2/η")
    g.add_argument("--metrics", default="all", metavar="GROUPS",
                   help=f"all, or comma-separated groups of: {', '.join(METRIC_GROUPS)} (losses are always measured)")
    g.add_argument("--operator", default="hessian", choices=OPERATORS,
                   help="curvature: the Hessian, the generalized Gauss–Newton matrix (= the true Fisher for "
                        "cross-entropy and MSE) or the empirical Fisher (1/N)Σ∇ℓᵢ∇ℓᵢᵀ")
    g.add_argument("--top-k", type=positive_int("--top-k"), default=5, help="size of the top eigenspace")
    g.add_argument("--tol", type=positive_float("--tol"), default=1e-4, help="Lanczos relative residual tolerance")
    g.add_argument("--max-iter", type=positive_int("--max-iter"), default=100, help="most Lanczos steps")
    g.add_argument("--trace-matvecs", type=positive_int("--trace-matvecs"), default=30, help="Hutch++ budget")
    g.add_argument("--density-runs", type=positive_int("--density-runs"), default=3, help="SLQ start vectors")
    g.add_argument("--density-steps", type=positive_int("--density-steps"), default=40, help="SLQ Lanczos steps")
    g.add_argument("--negative-eps", type=number("--negative-eps", float, strict=False), default=0.0,
                   help="SLQ nodes below -EPS·max|λ| count as negative mass")
    g.add_argument("--sharpness", default="", metavar="METRICS",
                   help="also these 'landscape sharpness' metrics per checkpoint (e.g. eps,avg_adaptive)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="outputs/track.h5", metavar="FILE.h5",
                   help="new file, one to resume, or a landscape file of the same model and data to add /track to "
                        "(never one of the checkpoints)")
    o.add_argument("--overwrite", action="store_true", help="replace an existing /track")
    o.add_argument("--flush-every", type=positive_float("--flush-every"), default=10.0, metavar="SECONDS",
                   help="write finished checkpoints at least this often")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:

    w = world()
    spec = TrackSpec(metrics=args.metrics, operator=args.operator, lr=args.lr, top_k=args.top_k, tol=args.tol,
                     max_iter=args.max_iter, trace_matvecs=args.trace_matvecs, density_runs=args.density_runs,
                     density_steps=args.density_steps, negative_eps=args.negative_eps, sharpness=args.sharpness,
                     seed=args.seed, flush_every=args.flush_every)
    spec.groups()  # a bad --metrics fails before the data are loaded
    spec.sharpness_metrics()
    problem = w.collective(lambda: problem_from_args(args, w))
    configure_threads(w, problem.device)
    res = run_track(problem, args.checkpoints, spec, args.out, overwrite=args.overwrite, command=command_line(),
                    progress=not args.no_progress, w=w, unsafe_load=args.unsafe_load,
                    strip_prefix=getattr(args, "strip_prefix", None))
    if w.is_root:
        for line in summary_lines(res):
            print(line)
        print(f"{len(res.steps)}/{len(res.steps)} checkpoints done ({res.computed} computed now, "
              f"{res.seconds:.1f} s) → {args.out} (/track)")
    return 0
