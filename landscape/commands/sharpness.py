"""``landscape sharpness``: sharpness metrics (science.md §3) and layer-wise conditioning (§5), printed as a
table and stored under /metrics and /layerwise (added to an existing landscape file, or a new one).

Under ``mpiexec``/``mpirun``/``srun`` every rank computes: losses, gradients and Hessian-vector products over
the data set are sums over batches, so batch i is computed by rank i % size and the partial sums are added up
in float64 (one allreduce each); worst-/average-case m-sharpness give whole example batches to ranks (batch j
on rank j % size, each with its own seeded generator). All ranks then take the same steps and get the
single-process values; rank 0 alone computes the layer-wise part, prints and writes --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from ..errors import LandscapeError
from .common import add_problem_args, check_output_path, command_line, positive_float, positive_int, problem_from_args


def add_parser(sub) -> None:
    from ..sharpness import ALL_METRICS, GROUPS

    p = sub.add_parser("sharpness", help="sharpness metrics and layer-wise conditioning of the weights",
                       description="Sharpness metrics and layer-wise conditioning of the weights. Under "
                       "mpiexec/mpirun/srun every rank computes its share of the batches (batch i on rank i % ranks; "
                       "partial sums are added up across ranks) and gets the single-process values; rank 0 alone "
                       "computes the layer-wise part, prints and writes --out.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_problem_args(p)
    g = p.add_argument_group("metrics")
    g.add_argument("--metrics", default="all", metavar="all|NAME,...",
                   help=f"groups ({', '.join(GROUPS)}) or names ({', '.join(ALL_METRICS)})")
    g.add_argument("--lr", type=positive_float("--lr"), metavar="ETA",
                   help="training step size η: adds the edge-of-stability ratio η·λmax/2")
    g.add_argument("--lanczos-steps", type=positive_int("--lanczos-steps"), default=100,
                   help="most Lanczos steps for λmax/λmin (a cap: Lanczos stops earlier at --tol; at the cap it "
                        "warns and stores converged=False)")
    g.add_argument("--tol", type=positive_float("--tol"), default=1e-4,
                   help="relative residual tolerance of λmax/λmin: stop when both have ‖Hv − λv‖ ≤ tol·|λ| "
                        "(stored with each: residual, matvecs, converged)")
    g.add_argument("--trace-matvecs", type=positive_int("--trace-matvecs"), default=30)
    g.add_argument("--eps", type=positive_float("--eps"), default=1e-3, help="ε-sharpness box size (Keskar et al.)")
    g.add_argument("--eps-steps", type=positive_int("--eps-steps"), default=10,
                   help="projected sign-gradient ascent steps per start")
    g.add_argument("--eps-starts", type=positive_int("--eps-starts"), default=3,
                   help="ε-sharpness starts (the gradient corner, then random); the best is kept: a lower bound of "
                        "the maximum over the box, which more starts or steps can only raise")
    g.add_argument("--rho", type=positive_float("--rho"),
                   help="radius of worst-/average-case sharpness (default per kind: adaptive ℓ2 0.5, ℓ∞ 1e-3; "
                        "standard ℓ2 0.05, ℓ∞ 5e-4; average adaptive 0.1, standard 0.01)")
    g.add_argument("--m", type=positive_int("--m"), default=128, help="examples per batch (m-sharpness)")
    g.add_argument("--max-examples", type=positive_int("--max-examples"), default=1024,
                   help="examples used by worst-/average-case sharpness (seeded subset)")
    g.add_argument("--apgd-steps", type=positive_int("--apgd-steps"), default=20, help="Auto-PGD steps per batch")
    g.add_argument("--avg-samples", type=positive_int("--avg-samples"), default=10,
                   help="Gaussian draws per batch for average-case sharpness")
    g.add_argument("--flat-target", choices=("acc", "loss"),
                   help="flatness σ criterion (default acc for classification, else loss)")
    g.add_argument("--flat-threshold", type=positive_float("--flat-threshold"), default=0.1)
    g.add_argument("--flat-samples", type=positive_int("--flat-samples"), default=10)
    g.add_argument("--flat-iters", type=positive_int("--flat-iters"), default=20, help="bisection steps")
    g.add_argument("--etas", default="0.05:0.4:8", metavar="MIN:MAX:NUM",
                   help="step sizes for loss variation / gradient predictiveness / β-smoothness")
    g.add_argument("--direction-from", metavar="A.pt", help="directional sharpness along u = θ_B − θ_A")
    g.add_argument("--direction-to", metavar="B.pt", help="(default direction: the negative gradient)")
    g.add_argument("--fisher", default="empirical", choices=("empirical", "true"),
                   help="layer-wise K-FAC factors with data labels or labels sampled from the model")
    g.add_argument("--percentiles", default="50,90", metavar="P,...", help="percentile condition numbers κ_p")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="outputs/sharpness.h5", metavar="FILE.h5",
                   help="new file, or an existing landscape file (e.g. a surface) to add /metrics and /layerwise to")
    o.add_argument("--plot-layers", metavar="FILE.png", help="also save the per-layer plot across depth")
    o.add_argument("--quiet", action="store_true",
                   help="no progress lines on stderr and no tables on stdout (only the line naming --out)")
    p.set_defaults(func=run)


def _etas(text: str) -> list[float]:
    import numpy as np

    parts = text.split(":")
    try:
        if len(parts) == 3:
            lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
            if n < 1 or lo <= 0 or hi < lo:
                raise ValueError
            return [float(v) for v in np.linspace(lo, hi, n)]
        vals = [float(v) for v in text.split(",")]
        if not vals or min(vals) <= 0:
            raise ValueError
        return vals
    except ValueError:
        raise LandscapeError(f"--etas {text!r}: use MIN:MAX:NUM with 0 < MIN <= MAX (e.g. 0.05:0.4:8) "
                             "or a comma list of positive numbers") from None


def _percentiles(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
        if not vals or any(not 0 < v <= 100 for v in vals):
            raise ValueError
        return vals
    except ValueError:
        raise LandscapeError(f"--percentiles {text!r}: give numbers in (0, 100], e.g. 50,90") from None


def _direction(args, problem):
    if bool(args.direction_from) != bool(args.direction_to):
        raise LandscapeError("--direction-from and --direction-to go together (u = θ_B − θ_A)")
    if not args.direction_from:
        return None, ""
    from ..problem import read_state_dict
    from ..sharpness import trainable

    a = read_state_dict(args.direction_from, unsafe_load=args.unsafe_load, flag="--direction-from")
    b = read_state_dict(args.direction_to, unsafe_load=args.unsafe_load, flag="--direction-to")
    theta = trainable(problem.model)
    for flag, path, sd in (("--direction-from", args.direction_from, a), ("--direction-to", args.direction_to, b)):
        bad = [k for k in theta if k not in sd or tuple(sd[k].shape) != tuple(theta[k].shape)]
        if bad:
            raise LandscapeError(f"{flag}: checkpoint {path!r} does not match the model ({bad[0]} missing or of "
                                 "another shape); use checkpoints of the same --model and --model-args")
    u = {k: (b[k].double() - a[k].double()).to(device=v.device, dtype=v.dtype) for k, v in theta.items()}
    return u, f"{os.path.basename(args.direction_to)} - {os.path.basename(args.direction_from)}"


def run(args) -> int:
    from .. import sharpness as S
    from ..parallel import all_or_abort, configure_threads, world

    w = world()

    def setup():
        if w.is_root:  # only rank 0 writes
            inputs = {"--checkpoint": args.checkpoint, "--direction-from": args.direction_from,
                      "--direction-to": args.direction_to}
            check_output_path(args.out, inputs=inputs, create=args.out == "outputs/sharpness.h5")
            if args.plot_layers:
                check_output_path(args.plot_layers, "--plot-layers", "layers.png")
        names = S.parse_metrics(args.metrics)
        etas = _etas(args.etas)
        percentiles = _percentiles(args.percentiles)
        # named alone it needs the step size; in a group (all, curvature) it is left out without one
        if args.lr is None and "eos_ratio" in {m.strip() for m in args.metrics.split(",")}:
            raise LandscapeError("--metrics eos_ratio needs --lr (the training step size η)")
        problem = problem_from_args(args, w, shard_batches=True)  # device as for surface; at least a batch per rank
        # input errors the metrics would find mid-run are found here, on every rank alike, before any collective
        if any(n.startswith("flatness") for n in names):
            S.flatness_target(problem, args.flat_target)
        direction, label = _direction(args, problem)
        if direction is not None and any(n in S.GROUPS["directional"] for n in names):
            S.direction_norm(direction)
        return names, etas, percentiles, problem, direction, label

    # a setup error on any rank ends every rank (no rank waits in an allreduce)
    names, etas, percentiles, problem, direction, label = w.collective(setup)
    threads = configure_threads(w, problem.device)
    if w.is_root:
        where = f" ({w.size} ranks, {threads} threads per rank)" if w.size > 1 else ""
        print(f"landscape sharpness: {problem.n_samples} samples on {problem.device}{where}, metrics: "
              f"{', '.join(names)}", file=sys.stderr, flush=True)
    # Every loss, gradient and product is collective from here on: a failure on one rank aborts the whole job.
    return all_or_abort(w, _compute_and_write, args, w, names, etas, percentiles, problem, direction, label)


def _compute_and_write(args, w, names, etas, percentiles, problem, direction, label) -> int:
    from .. import sharpness as S

    t0 = time.perf_counter()

    def say(what: str) -> None:
        if not args.quiet and w.is_root:
            print(f"  [{time.perf_counter() - t0:6.1f} s] {what}", file=sys.stderr, flush=True)

    import warnings

    with warnings.catch_warnings(record=True) as caught:  # (printed as one line each, after the progress lines)
        warnings.simplefilter("always", RuntimeWarning)
        metrics = _compute(S, args, names, etas, direction, label, problem, say, w)
    for c in caught:
        if w.is_root:
            print(f"landscape: warning: {c.message}", file=sys.stderr, flush=True)
    if not w.is_root:  # every rank computed the same metrics; rank 0 computes the layer-wise part, writes, prints
        return 0
    return _layerwise_and_write(args, w, names, percentiles, problem, metrics, say, t0)


def _compute(S, args, names, etas, direction, label, problem, say, w):
    return S.compute_metrics(
        problem, names, lr=args.lr, seed=args.seed, eps=args.eps, eps_steps=args.eps_steps,
        eps_starts=args.eps_starts, rho=args.rho, m=args.m,
        max_examples=args.max_examples, apgd_steps=args.apgd_steps, avg_samples=args.avg_samples,
        flat_target=args.flat_target, flat_threshold=args.flat_threshold, flat_samples=args.flat_samples,
        flat_iters=args.flat_iters, etas=etas, direction=direction, direction_label=label,
        lanczos_steps=args.lanczos_steps, trace_matvecs=args.trace_matvecs, tol=args.tol, progress=say, world=w)


def _layerwise_and_write(args, w, names, percentiles, problem, metrics, say, t0) -> int:
    from .. import sharpness as S
    from ..params import fingerprint, select

    layer = None
    if "layerwise" in names:
        # K-FAC conditioning stays on rank 0 alone: it uses no collectives, so the other ranks need not wait for it
        from ..layerwise import layerwise, plot_layerwise

        say("layer-wise")
        layer = layerwise(problem, fisher=args.fisher, percentiles=percentiles, seed=args.seed)
        if args.plot_layers:
            plot_layerwise(layer, args.plot_layers, title=f"{args.model} on {args.data}")
    config = {k: v for k, v in vars(args).items() if k != "func" and isinstance(v, str | int | float | bool | None)}
    from ..store import provenance

    model_fp, data_fp = fingerprint(select(problem.model, "states")), problem.info.get("data_fingerprint", "")
    how = S.save_results(args.out, metrics, layer, command=command_line(), config=config,
                         model_fingerprint=model_fp, data_fingerprint=data_fp,
                         provenance=provenance(model_fp, data_fp, args.loss, args.samples, args.seed))
    if metrics and not args.quiet:
        print(S.format_table(metrics))
    if layer is not None and not args.quiet:
        print()
        print(layer.table())
    parts = (["/metrics"] if metrics else []) + (["/layerwise"] if layer is not None else [])
    print(f"→ {args.out} ({' and '.join(parts)} {how}, {time.perf_counter() - t0:.1f} s)")
    if args.plot_layers and layer is not None:
        print(f"→ {args.plot_layers}")
    return 0
