"""``landscape hessian``: top/bottom eigenvalues, trace and spectral density of the loss Hessian.

Under ``mpiexec``/``mpirun``/``srun`` every rank computes: the Hessian-vector product over the data
set is a sum over batches, so batch i is computed by rank i % size and the ranks' partial sums are
added up in float64 (one allreduce per product). Lanczos, Hutch++/Hutchinson and SLQ then run the same
on every rank (same seeds, same vectors), so all ranks agree; rank 0 alone prints and writes --out.
Each rank takes ``cuda:(local_rank % GPUs per node)`` (``--device auto``) or its share of the CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import time

from .. import curvature
from ..errors import LandscapeError
from ..parallel import all_or_abort, configure_threads, world
from ..params import fingerprint, select
from ..problem import check_finite_inputs
from ..store import provenance
from .common import add_problem_args, check_output_path, command_line, positive_float, positive_int, problem_from_args


def add_parser(sub) -> None:
    p = sub.add_parser("hessian", help="Hessian eigenvalues (Lanczos), trace (Hutch++) and spectral density (SLQ)",
                       description="Hessian eigenvalues (Lanczos), trace (Hutch++) and spectral density (SLQ) of "
                       "the mean loss over the evaluation set. Under mpiexec/mpirun/srun every rank computes "
                       "Hessian-vector products on its share of the batches (batch i on rank i % ranks; the "
                       "partial sums are added up across ranks) and all ranks run the same iterations; rank 0 "
                       "alone prints and writes --out. Each rank takes cuda:(local_rank % GPUs) or its share "
                       "of the CPU cores.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_problem_args(p)
    g = p.add_argument_group("what to compute")
    g.add_argument("--operator", default="hessian", choices=("hessian", "ggn", "fisher"),
                   help="the Hessian (stored in /curvature), the generalized Gauss-Newton matrix (= the true Fisher "
                        "for cross-entropy and MSE; /curvature/ggn) or the empirical Fisher (1/N)Σ∇ℓᵢ∇ℓᵢᵀ "
                        "(/curvature/fisher); a file can hold all three, and the density plot overlays them")
    g.add_argument("--top-k", type=positive_int("--top-k"), default=5, help="number of largest eigenvalues")
    g.add_argument("--smallest", action="store_true", help="also the smallest (most negative) eigenvalue")
    g.add_argument("--method", default="lanczos", choices=("lanczos", "power"),
                   help="lanczos (full reorthogonalization) or power iteration with deflation (PyHessian's)")
    g.add_argument("--tol", type=positive_float("--tol"), default=1e-4,
                   help="relative residual tolerance, both methods: stop when every wanted pair has ‖Hv − λv‖ ≤ "
                        "tol·|λ| (stored: residuals, matvecs, converged)")
    g.add_argument("--max-iter", type=positive_int("--max-iter"), default=100, help="most Lanczos steps / power steps")
    g.add_argument("--save-vectors", action="store_true", help="store the eigenvectors (parameter-shaped)")
    g.add_argument("--trace", action="store_true", help="estimate tr(H)")
    g.add_argument("--trace-method", default="auto", choices=("auto", "hutch++", "hutchinson"),
                   help="auto: Hutch++, switching to Hutchinson when its sketch does not reduce the variance")
    g.add_argument("--trace-matvecs", type=positive_int("--trace-matvecs"), default=99,
                   help="most HVPs the trace may spend (the cap of --trace-rtol)")
    g.add_argument("--trace-rtol", type=positive_float("--trace-rtol"), default=1e-2,
                   help="stop the trace once its standard error is at most this share of |estimate| (at least 10 "
                        "samples; the budget --trace-matvecs is the cap)")
    g.add_argument("--density", action="store_true", help="spectral density by stochastic Lanczos quadrature")
    g.add_argument("--density-runs", type=positive_int("--density-runs"), default=5)
    g.add_argument("--density-steps", type=positive_int("--density-steps"), default=60)
    g.add_argument("--out", default="outputs/hessian.h5", metavar="FILE.h5",
                   help="new file, or an existing landscape file of the same model, data, loss and samples to add "
                        "/curvature to")
    g.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    w = world()

    def setup():
        if w.is_root:
            check_output_path(args.out, inputs={"--checkpoint": args.checkpoint},
                              create=args.out == "outputs/hessian.h5")
        problem = problem_from_args(args, w, shard_batches=True)  # device as for surface; at least a batch per rank
        # batch i on rank i % size, products summed over ranks
        op = curvature.make_operator(problem, getattr(args, "operator", "hessian"), world=w)
        if args.top_k > op.dim:
            raise LandscapeError(f"--top-k {args.top_k} is more than the {op.dim} trainable parameters of the "
                                 f"model (a Hessian has one eigenvalue per parameter): the maximum is {op.dim}")
        check_budget(args, op.dim)
        check_finite_inputs(problem)  # NaN inputs would be blamed on a non-deterministic loss below
        return problem, op

    problem, op = w.collective(setup)  # a setup error on any rank ends every rank (no one waits in an allreduce)
    threads = configure_threads(w, problem.device)
    if w.is_root:
        where = f"{w.size} ranks, {threads} threads per rank" if w.size > 1 else f"{threads} threads"
        print(f"landscape hessian: {problem.n_samples} samples in {len(problem.batches)} batches on "
              f"{problem.device} ({where})", file=sys.stderr, flush=True)
    # Every product is collective from here on. The determinism check gives the same verdict on every rank (it
    # compares losses summed over the ranks, and is raised as agreed); any other failure on one rank aborts the job.
    return all_or_abort(w, _compute_and_write, args, w, problem, op)


def check_budget(args, dim: int) -> None:
    """Lanczos finds at most one eigenvalue per step: a --top-k that --max-iter steps cannot reach is refused,
    not answered with fewer (or unconverged) values."""
    need = args.top_k + (1 if args.smallest else 0)
    steps = min(args.max_iter, dim)
    if args.method == "lanczos" and need > steps:
        suggest = min(dim, max(2 * need, need + 20))
        raise LandscapeError(f"--top-k {args.top_k}{' with --smallest' if args.smallest else ''} needs at least "
                             f"{need} Lanczos steps, more than --max-iter {args.max_iter} allows (one eigenvalue per "
                             f"step at most, and more steps to converge): pass --max-iter {suggest} or a smaller "
                             "--top-k")


class _Progress:
    """Progress lines on stderr (rank 0): the phase, and every few seconds the products spent so far."""

    def __init__(self, enabled: bool, op, every: float = 5.0):
        self.enabled, self.op, self.every, self._time = enabled, op, every, time.perf_counter
        self.t0 = self._last = self._time()
        self.phase = ""
        if enabled:
            inner = op.matvec_flat

            def matvec_flat(x):
                out = inner(x)
                now = self._time()
                if now - self._last >= self.every:
                    self._last = now
                    self.say(f"{self.phase}: {op.matvecs} Hessian-vector products so far")
                return out

            op.matvec_flat = matvec_flat  # Lanczos, Hutch++ and SLQ all go through it

    def say(self, text: str) -> None:
        if self.enabled:
            print(f"  [{self._time() - self.t0:6.1f} s] {text}", file=sys.stderr, flush=True)

    def start(self, phase: str, text: str) -> None:
        self.phase = phase
        self._last = self._time()
        self.say(text)


def _compute_and_write(args, w, problem, op) -> int:
    # a line every 5 s at a terminal, every 30 s into a log (a long density run would fill it otherwise)
    progress = _Progress(w.is_root and not args.quiet, op, every=5.0 if sys.stderr.isatty() else 30.0)
    progress.start("check", "checking that the loss is deterministic (two forward passes)")
    try:  # two forward passes, not two extra products (check_deterministic_loss says why that suffices)
        curvature.check_deterministic_loss(op)
    except LandscapeError as e:  # decided from losses summed over all ranks: the same on every rank
        e.agreed = True
        raise
    which = "both" if args.smallest else "LA"
    also = " and the smallest" if args.smallest else ""
    progress.start(args.method, f"{args.method}: top {args.top_k} eigenvalues{also} (at most {args.max_iter} steps)")
    eig = curvature.hessian_eigenpairs(op, k=args.top_k, which=which, tol=args.tol, max_iter=args.max_iter,
                                       seed=args.seed, method=args.method, return_vectors=args.save_vectors)
    label = f"eigenvalues (top {args.top_k})"
    if not eig.converged:  # never shown as if they were converged
        label = f"eigenvalues (top {args.top_k}, NOT converged)"
        worst = max((float(r) for r in eig.residuals), default=float("nan"))
        if w.is_root:
            print(f"landscape hessian: warning: the eigenvalues did not converge in {eig.iterations} steps (largest "
                  f"residual {worst:.3g}, --tol {args.tol:g}); they are estimates only: raise --max-iter",
                  file=sys.stderr, flush=True)
    rows = [(label, ", ".join(f"{v:.6g}" for v in eig.eigenvalues) + f" ({eig.matvecs} HVPs)")]
    smallest = getattr(eig, "smallest", None)
    if smallest is not None:
        rows.append(("smallest eigenvalue", f"{smallest:.6g}"))
    if not eig.converged:  # (the residuals, products and flag are stored with the eigenvalues)
        worst = max(eig.to_attrs()["residuals"])
        rows.append(("converged", f"NO: --max-iter {args.max_iter} reached before every relative residual was "
                                  f"≤ --tol {args.tol:g} (largest residual {worst:.2g}); raise --max-iter"))
    tr = dens = None
    if args.trace:
        progress.start("trace", f"trace: {args.trace_method}, at most {args.trace_matvecs} products "
                                f"(--trace-rtol {args.trace_rtol:g})")
        tr = curvature.hessian_trace(op, matvecs=args.trace_matvecs, method=args.trace_method, seed=args.seed,
                                     rtol=args.trace_rtol)
        lo, hi = tr.interval
        note = "" if tr.converged else f"; stderr above --trace-rtol {args.trace_rtol:g} at the cap"
        rows.append(("trace", f"{tr.estimate:.6g} ± {tr.stderr:.2g}, 95 % interval [{lo:.6g}, {hi:.6g}] "
                              f"({tr.method}, {tr.matvecs} HVPs{note})"))
    if args.density:
        progress.start("density", f"density: {args.density_runs} runs of {args.density_steps} steps")
        before = op.matvecs
        dens = curvature.spectral_density(op, runs=args.density_runs, steps=args.density_steps, seed=args.seed)
        rows.append(("density", f"{args.density_runs} SLQ runs × {args.density_steps} steps ({op.matvecs - before} "
                                "HVPs)"))
    rows.append(("HVPs in all", str(op.matvecs)))
    if not w.is_root:  # every rank computed the same results; rank 0 writes and prints them
        return 0
    model_fp, data_fp = fingerprint(select(problem.model, "states")), problem.info["data_fingerprint"]
    where = curvature.save_curvature(
        args.out, eig, tr, dens, operator=getattr(args, "operator", "hessian"), save_vectors=args.save_vectors,
        command=command_line(), config={"model": args.model, "data": args.data, "samples": args.samples,
                                        "loss": args.loss, "seed": args.seed, "checkpoint": args.checkpoint},
        model_fingerprint=model_fp, data_fingerprint=data_fp,
        provenance=provenance(model_fp, data_fp, args.loss, args.samples, args.seed))
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(f"→ {args.out} ({where})")
    return 0

