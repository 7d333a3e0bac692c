"""``landscape hessian``: top/bottom eigenvalues, trace and spectral density of the loss Hessian."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ..errors import LandscapeError
from .common import add_problem_args, check_output_path, command_line, positive_float, positive_int, problem_from_args


def add_parser(sub) -> None:
    p = sub.add_parser("hessian", help="Hessian eigenvalues (Lanczos), trace (Hutch++) and spectral density (SLQ)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_problem_args(p)
    g = p.add_argument_group("what to compute")
    g.add_argument("--top-k", type=positive_int("--top-k"), default=5, help="number of largest eigenvalues")
    g.add_argument("--smallest", action="store_true", help="also the smallest (most negative) eigenvalue")
    g.add_argument("--method", default="lanczos", choices=("lanczos", "power"),
                   help="lanczos (full reorthogonalization) or power iteration with deflation (PyHessian's)")
    g.add_argument("--tol", type=positive_float("--tol"), default=1e-4, help="relative residual tolerance")
    g.add_argument("--max-iter", type=positive_int("--max-iter"), default=100, help="most Lanczos steps / power steps")
    g.add_argument("--save-vectors", action="store_true", help="store the eigenvectors (parameter-shaped)")
    g.add_argument("--trace", action="store_true", help="estimate tr(H)")
    g.add_argument("--trace-method", default="hutch++", choices=("hutch++", "hutchinson"))
    g.add_argument("--trace-matvecs", type=positive_int("--trace-matvecs"), default=99, help="HVP budget of the trace")
    g.add_argument("--density", action="store_true", help="spectral density by stochastic Lanczos quadrature")
    g.add_argument("--density-runs", type=positive_int("--density-runs"), default=5)
    g.add_argument("--density-steps", type=positive_int("--density-steps"), default=60)
    g.add_argument("--out", default="outputs/hessian.h5", metavar="FILE.h5",
                   help="new file, or an existing landscape file to add /curvature to")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import curvature
    from ..parallel import world
    from ..store import base_attrs, replace_group, set_attrs, update_file, write_named

    w = world()
    if not w.is_root:  # curvature runs on one rank; the others have nothing to do
        return 0
    check_output_path(args.out)
    problem = problem_from_args(args, w)
    op = curvature.HessianOperator(problem)
    if args.top_k > op.dim:
        raise LandscapeError(f"--top-k {args.top_k} is more than the {op.dim} trainable parameters of the model "
                             f"(a Hessian has one eigenvalue per parameter): the maximum is {op.dim}")
    curvature.check_deterministic(op)
    print(f"landscape hessian: {problem.n_samples} samples on {problem.device}", file=sys.stderr, flush=True)
    which = "both" if args.smallest else "LA"
    eig = curvature.hessian_eigenpairs(problem, k=args.top_k, which=which, tol=args.tol, max_iter=args.max_iter,
                                       seed=args.seed, method=args.method, return_vectors=args.save_vectors)
    rows = [(f"eigenvalues (top {args.top_k})", ", ".join(f"{v:.6g}" for v in eig.eigenvalues))]
    smallest = getattr(eig, "smallest", None)
    if smallest is not None:
        rows.append(("smallest eigenvalue", f"{smallest:.6g}"))
    tr = dens = None
    if args.trace:
        tr = curvature.hessian_trace(problem, matvecs=args.trace_matvecs, method=args.trace_method, seed=args.seed)
        rows.append(("trace", f"{tr.estimate:.6g} ± {tr.stderr:.2g} ({args.trace_method}, {args.trace_matvecs} HVPs)"))
    if args.density:
        dens = curvature.spectral_density(problem, runs=args.density_runs, steps=args.density_steps, seed=args.seed)
    from ..params import fingerprint, select

    attrs = base_attrs(command_line(), {"model": args.model, "data": args.data, "samples": args.samples},
                       fingerprint(select(problem.model, "states")), problem.info["data_fingerprint"], kind="hessian")
    with update_file(args.out, "hessian", attrs) as f:
        root = f.require_group("curvature")
        for name in ("eigenvalues", "smallest", "eigenvectors", "trace"):
            if name in root:
                del root[name]
        ds = root.create_dataset("eigenvalues", data=np.asarray(eig.eigenvalues, dtype=np.float64))
        set_attrs(ds, eig.to_attrs())
        if smallest is not None:
            root.create_dataset("smallest", data=np.float64(smallest))
        if args.save_vectors and getattr(eig, "eigenvectors", None):
            vecs = replace_group(root, "eigenvectors")
            for i, v in enumerate(eig.eigenvectors):
                write_named(vecs.create_group(str(i)), v)
        if tr is not None:
            ds = root.create_dataset("trace", data=np.float64(tr.estimate))
            set_attrs(ds, {**tr.to_attrs(), "stderr": float(tr.stderr)})
        if dens is not None:
            g = replace_group(root, "density")
            g.create_dataset("grid", data=np.asarray(dens.grid, dtype=np.float64))
            g.create_dataset("values", data=np.asarray(dens.density, dtype=np.float64))
            set_attrs(g, dens.to_attrs())
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(f"→ {args.out} (/curvature)")
    return 0
