"""``landscape sharpness``: sharpness metrics (docs/sharpness.md) and layer-wise conditioning
(docs/layerwise.md), printed as a table and stored under /metrics and /layerwise (added to an existing
landscape file, or a new one).

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
import warnings

from .. import parallel
from .. import sharpness as S
from ..errors import LandscapeError
from ..layerwise import layerwise
from ..parallel import all_or_abort, configure_threads, world
from ..params import fingerprint, select
from ..plot.layerwise import plot_layerwise
from ..states import endpoint_states
from ..store import provenance
from .common import add_problem_args, check_output_path, command_line, positive_float, positive_int, problem_from_args


def _add_option(g, o: S.Option) -> None:
    """One registry option as a flag (dest = the option's name, so library errors naming it read as the flag)."""
    kw: dict = {"dest": o.name}
    if o.kind == "float+":
        kw["type"] = positive_float(o.flag)
    elif o.kind == "int+":
        kw["type"] = positive_int(o.flag)
    if o.choices is not None:
        kw["choices"] = o.choices
    default = o.cli_default if o.cli_default is not None else o.default
    if default is not None:
        kw["default"] = default
    if o.metavar is not None:
        kw["metavar"] = o.metavar
    if o.help is not None:
        kw["help"] = o.help
    g.add_argument(o.flag, **kw)


def add_parser(sub) -> None:
    p = sub.add_parser("sharpness", help="sharpness metrics and layer-wise conditioning of the weights",
                       description="Sharpness metrics and layer-wise conditioning of the weights. Under "
                       "mpiexec/mpirun/srun every rank computes its share of the batches (batch i on rank i % ranks; "
                       "partial sums are added up across ranks) and gets the single-process values; rank 0 alone "
                       "computes the layer-wise part, prints and writes --out.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_problem_args(p)
    g = p.add_argument_group("metrics")
    g.add_argument("--metrics", default="all", metavar="all|NAME,...",
                   help=f"groups ({', '.join(S.GROUPS)}) or names ({', '.join(S.all_metrics())})")
    for o in S.options():  # every family's options, generated from the registry
        if o.cli:
            _add_option(g, o)
    o = p.add_argument_group("output")
    o.add_argument("--out", default="outputs/sharpness.h5", metavar="FILE.h5",
                   help="new file, or an existing landscape file (e.g. a surface) to add /metrics and /layerwise to")
    o.add_argument("--plot-layers", metavar="FILE.png", help="also save the per-layer plot across depth")
    o.add_argument("--quiet", action="store_true",
                   help="no progress lines on stderr and no tables on stdout (only the line naming --out)")
    p.set_defaults(func=run)


def _options(args) -> dict:
    """The registry options' library values from the command line (texts parsed: --etas, --percentiles)."""
    out = {}
    for o in S.options():
        if o.cli and o.library:
            v = getattr(args, o.name)
            out[o.name] = o.parse(v) if o.parse is not None and isinstance(v, str) else v
    return out


def _direction(args, problem):
    if bool(args.direction_from) != bool(args.direction_to):
        raise LandscapeError("--direction-from and --direction-to go together (u = θ_B − θ_A)")
    if not args.direction_from:
        return None, ""
    theta = S.trainable(problem.model)
    a, b = (endpoint_states(problem.model, path, flag, unsafe_load=args.unsafe_load)
            for flag, path in (("--direction-from", args.direction_from), ("--direction-to", args.direction_to)))
    u = {k: b[k] - a[k] for k in theta}
    return u, f"{os.path.basename(args.direction_to)} - {os.path.basename(args.direction_from)}"


def run(args) -> int:
    w = world()

    def setup():
        if w.is_root:  # only rank 0 writes
            inputs = {"--checkpoint": args.checkpoint, "--direction-from": args.direction_from,
                      "--direction-to": args.direction_to}
            check_output_path(args.out, inputs=inputs, create=args.out == "outputs/sharpness.h5")
            if args.plot_layers:
                check_output_path(args.plot_layers, "--plot-layers", "layers.png")
        names = S.parse_metrics(args.metrics)
        options = _options(args)
        # named alone it needs the step size; in a group (all, curvature) it is left out without one
        if args.lr is None and "eos_ratio" in {m.strip() for m in args.metrics.split(",")}:
            raise LandscapeError("--metrics eos_ratio needs --lr (the training step size η)")
        problem = problem_from_args(args, w, shard_batches=True)  # device as for surface; at least a batch per rank
        # input errors the metrics would find mid-run are found here, on every rank alike, before any collective
        if any(n.startswith("flatness") for n in names):
            S.flatness_target(problem, args.flat_target)
        options["direction"], options["direction_label"] = _direction(args, problem)
        if options["direction"] is not None and any(n in S.GROUPS["directional"] for n in names):
            S.direction_norm(options["direction"])
        return names, options, problem

    # a setup error on any rank ends every rank (no rank waits in an allreduce)
    names, options, problem = w.collective(setup)
    threads = configure_threads(w, problem.device)
    if w.is_root:
        where = f" ({w.size} ranks, {threads} threads per rank)" if w.size > 1 else ""
        print(f"landscape sharpness: {problem.n_samples} samples on {problem.device}{where}, metrics: "
              f"{', '.join(names)}", file=sys.stderr, flush=True)
    # Every loss, gradient and product is collective from here on: a failure on one rank aborts the whole job.
    return all_or_abort(w, _compute_and_write, args, w, names, options, problem)


def _compute_and_write(args, w, names, options, problem) -> int:
    t0 = time.perf_counter()

    def say(what: str) -> None:
        if not args.quiet and w.is_root:
            print(f"  [{time.perf_counter() - t0:6.1f} s] {what}", file=sys.stderr, flush=True)

    with warnings.catch_warnings(record=True) as caught:  # (printed as one line each, after the progress lines)
        warnings.simplefilter("always", RuntimeWarning)
        metrics = S.compute_metrics(problem, names, seed=args.seed, progress=say, world=w, **options)
    for c in caught:
        if w.is_root:
            print(f"landscape: warning: {parallel.render_message(str(c.message))}", file=sys.stderr, flush=True)
    if not w.is_root:  # every rank computed the same metrics; rank 0 computes the layer-wise part, writes, prints
        return 0
    return _layerwise_and_write(args, names, options, problem, metrics, say, t0)


def _layerwise_and_write(args, names, options, problem, metrics, say, t0) -> int:
    layer = None
    if "layerwise" in names:
        # K-FAC conditioning stays on rank 0 alone: it uses no collectives, so the other ranks need not wait for it
        say("layer-wise")
        layer = layerwise(problem, fisher=options["fisher"], percentiles=options["percentiles"], seed=args.seed)
        if args.plot_layers:
            plot_layerwise(layer, args.plot_layers, title=f"{args.model} on {args.data}")
    config = {k: v for k, v in vars(args).items() if k != "func" and isinstance(v, str | int | float | bool | None)}
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
