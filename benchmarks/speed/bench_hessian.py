"""Hessian benchmark: HVPs that Lanczos and power iteration spend, and the cost of one HVP.

For trained nets on ``zoo:digits`` (the demo MLP; ResNet-20 when the zoo has it), with N = 512 and
1024 evaluation samples:

(a) Hessian-vector products needed for the top eigenvalue and the top 5 to 1e-3 relative accuracy:
    Lanczos with full reorthogonalization (``landscape.curvature.lanczos``) against PyHessian's power
    iteration with deflation (relative-change tolerance 1e-3). The reference eigenvalues come from a
    long Lanczos run whose Ritz residuals are printed (they bound the reference's own error).
    "Lanczos HVPs" is the first step at which the Ritz values are within 1e-3 of the reference;
    "stop rule" is the step at which ``lanczos(tol=1e-3)`` stops by itself (residual ≤ 1e-3·|λ|).
    For power iteration we report what PyHessian's stopping rule spends and the error it leaves.
(b) Time of one HVP ÷ time of one forward+backward over the same N samples, with the data in one
    batch and in batches of 128: the cached product (the graph of ∇L kept, one backward pass per
    HVP; what Lanczos uses after its first product), the first product (builds that graph), and
    the product recomputed from scratch (``cache=False``: forward + double backward per batch), and
    forward-over-reverse (``method="forward"``: ``jvp`` of ``grad`` per batch, nothing cached).
    The summary says which method was faster and whether ``DEFAULT_HVP_METHOD`` (``auto``) matches.
    Timings are the fastest of interleaved rounds (robust to a busy machine).

Usage::

    python benchmarks/speed/bench_hessian.py            # MLP and ResNet-20, N = 512 and 1024 (~5 min)
    python benchmarks/speed/bench_hessian.py --quick    # MLP only, N = 256 (~20 s)
    python benchmarks/speed/bench_hessian.py --smoke    # smallest run: does it work
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: _common
from _common import parse_args  # (it also puts this repository first on sys.path)

from landscape import zoo  # noqa: E402
from landscape.curvature import HessianOperator, lanczos, power_iteration  # noqa: E402
from landscape.curvature.hvp import DEFAULT_HVP_METHOD  # noqa: E402
from landscape.problem import load_data, make_problem  # noqa: E402

RTOL = 1e-3


def train(name: str, steps: int, lr: float, seed: int = 0) -> torch.nn.Module:
    """A few hundred SGD steps (batch 64, momentum 0.9) on the digits, so the Hessian is a trained net's."""
    from landscape.problem import load_model

    model = load_model(f"zoo:{name}", seed=seed)
    X, y = load_data("zoo:digits")
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        idx = torch.randint(0, len(X), (64,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def best_time(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Fastest of ``rounds`` interleaved runs of each function (after one warm-up each)."""
    for f in fns.values():
        f()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def eigen_counts(problem, ref_steps: int, power_cap: int, do_power5: bool) -> dict:
    """HVP counts of Lanczos and power iteration for the top-1 and top-5 eigenvalues."""
    op = HessianOperator(problem)
    history: list[np.ndarray] = []
    residual_ok: list[int] = []

    def record(m: int, theta: np.ndarray, res: np.ndarray) -> None:
        top = np.argsort(theta)[::-1][:5]
        history.append(theta[top])
        if len(top) == 5 and not residual_ok and np.all(res[top] <= RTOL * np.abs(theta[top])):
            residual_ok.append(m)

    t0 = time.perf_counter()
    ref = lanczos(op, k=5, tol=1e-10, max_iter=ref_steps, seed=0, return_vectors=False, callback=record)
    t_ref = time.perf_counter() - t0
    lam = ref.eigenvalues

    def first_within(n: int) -> int | None:
        for m, th in enumerate(history, start=1):
            if len(th) >= n and np.all(np.abs(th[:n] - lam[:n]) <= RTOL * np.abs(lam[:n])):
                return m
        return None

    out = dict(P=op.dim, lam=lam, ref_res=float(np.max(ref.residuals / np.abs(lam))), ref_steps=ref.iterations,
               lz1=first_within(1), lz5=first_within(5), stop5=residual_ok[0] if residual_ok else None,
               t_hvp=t_ref / max(ref.matvecs, 1))
    p1 = power_iteration(op, k=1, tol=RTOL, max_iter=power_cap, seed=0, return_vectors=False, rule="change")
    out.update(pw1=p1.matvecs, pw1_err=abs(p1.eigenvalues[0] - lam[0]) / abs(lam[0]), pw1_conv=p1.converged)
    if do_power5:
        p5 = power_iteration(op, k=5, tol=RTOL, max_iter=power_cap, seed=0, return_vectors=False, rule="change")
        errs = np.abs(np.sort(p5.eigenvalues)[::-1] - lam) / np.abs(lam)
        out.update(pw5=p5.matvecs, pw5_err=float(errs.max()), pw5_conv=p5.converged)
    return out


def hvp_ratios(model: torch.nn.Module, n: int, batch_size: int, rounds: int) -> dict:
    problem = make_problem(model, data="zoo:digits", samples=n, batch_size=batch_size, device="cpu")
    params = [p for p in problem.model.parameters() if p.requires_grad]

    def fb() -> None:
        for x, y in problem.batches:
            loss = problem.loss_sum(problem.model(x), y) / n
            torch.autograd.grad(loss, params)

    cached = HessianOperator(problem, cache=True, method="reverse")
    fresh = HessianOperator(problem, cache=False, method="reverse")
    forward = HessianOperator(problem, method="forward")  # jvp of grad: nothing to cache
    v = torch.randn(cached.dim, generator=torch.Generator().manual_seed(0))
    t = time.perf_counter()
    cached.matvec_flat(v)
    first = time.perf_counter() - t
    best = best_time({"fb": fb, "hvp": lambda: cached.matvec_flat(v), "fresh": lambda: fresh.matvec_flat(v),
                      "fwd": lambda: forward.matvec_flat(v)}, rounds)
    if forward.method != "forward":  # the probe fell back to double backward
        best["fwd"] = float("nan")
    return dict(fb=best["fb"], hvp=best["hvp"], fresh=best["fresh"], fwd=best["fwd"], first=first,
                cache_mb=(cached.cache_bytes or 0) / 2**20)


def fmt(x, spec: str = "d") -> str:
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="MLP only, N=256, short runs")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is steadiest on a shared machine; ratios barely depend on it)")
    ap.add_argument("--models", default="mlp,resnet20")
    ap.add_argument("--samples", default="512,1024")
    ap.add_argument("--timings-only", action="store_true", help="only (b), the HVP timings (skip the eigenvalues)")
    args = parse_args(ap, argv, "--quick with N=64 and the shortest runs")
    args.quick = args.quick or args.smoke
    torch.set_num_threads(args.threads)
    models = args.models.split(",")
    samples = [int(s) for s in args.samples.split(",")]
    if args.quick:
        models, samples = ["mlp"], [64 if args.smoke else 256]
    notes = []
    if "resnet20" in models and "resnet20" not in zoo.MODELS:
        models.remove("resnet20")
        notes.append("zoo:resnet20 is not registered: MLP only")
    cfg = {"mlp": dict(train_steps=100 if args.quick else 400, lr=0.1, ref_steps=60 if args.quick else 120,
                       power_cap=100, power5=True, rounds=5 if args.quick else 15),
           "smoke": dict(train_steps=10, lr=0.1, ref_steps=30, power_cap=20, power5=False, rounds=1),
           "resnet20": dict(train_steps=150, lr=0.05, ref_steps=45, power_cap=60, power5=True, rounds=5)}
    t_start = time.perf_counter()
    print(f"torch {torch.__version__}, {args.threads} thread(s), float32, CPU; target: top-5 to {RTOL:g} in ≤ 30 "
          "HVPs, HVP ≤ 2× forward+backward")
    eig_rows, time_rows = [], []
    for name in models:
        c = cfg["smoke"] if args.smoke else cfg.get(name, cfg["mlp"])
        t = time.perf_counter()
        model = train(name, c["train_steps"], c["lr"])
        print(f"[{name}] trained {c['train_steps']} SGD steps in {time.perf_counter() - t:.1f}s", flush=True)
        for n in samples:
            t = time.perf_counter()
            problem = make_problem(model, data="zoo:digits", samples=n, batch_size=n, device="cpu")
            do5 = c["power5"] if c["power5"] is not None else n == samples[0]
            if not args.timings_only:
                r = eigen_counts(problem, c["ref_steps"], c["power_cap"], do5)
                eig_rows.append((name, n, r))
                print(f"[{name} N={n}] eigenvalues in {time.perf_counter() - t:.1f}s "
                      f"(one HVP ≈ {r['t_hvp'] * 1e3:.0f} ms)", flush=True)
            for bs in (n, 128):
                t = time.perf_counter()
                time_rows.append((name, n, bs, hvp_ratios(model, n, bs, c["rounds"])))
                print(f"[{name} N={n} batch {bs}] timings in {time.perf_counter() - t:.1f}s", flush=True)

    print("\n(a) HVPs to reach 1e-3 relative accuracy (reference: long Lanczos run, max Ritz residual/|λ| shown)")
    hdr = (f"{'model':<9} {'N':>5} {'P':>7}  {'λ1':>8} {'λ5':>8} {'ref res':>8} | {'Lanczos top-1':>13} "
           f"{'top-5':>6} {'stop rule':>9} | {'power top-1':>11} {'err':>8} | {'power top-5':>11} {'max err':>8}")
    print(hdr)
    print("-" * len(hdr))
    for name, n, r in eig_rows:
        pw5 = f"{r['pw5']:>11d}" if "pw5" in r else f"{'(skipped)':>11}"
        pw5e = f"{r['pw5_err']:>8.1e}" if "pw5" in r else f"{'':>8}"
        cap1 = "" if r["pw1_conv"] else "*"
        cap5 = "" if r.get("pw5_conv", True) else "*"
        print(f"{name:<9} {n:>5} {r['P']:>7}  {r['lam'][0]:>8.4g} {r['lam'][4]:>8.4g} {r['ref_res']:>8.1e} | "
              f"{fmt(r['lz1']):>13} {fmt(r['lz5']):>6} {fmt(r['stop5']):>9} | {r['pw1']:>10d}{cap1:1} "
              f"{r['pw1_err']:>8.1e} | {pw5}{cap5:1} {pw5e}")
    print("  * = power iteration hit its cap before PyHessian's rule stopped it")

    print("\n(b) time of one HVP ÷ time of one forward+backward over the same samples")
    hdr = (f"{'model':<9} {'N':>5} {'batch':>5} | {'fwd+bwd ms':>10} | {'HVP ms':>8} {'ratio':>6} | "
           f"{'1st HVP ms':>10} {'ratio':>6} | {'no-cache ms':>11} {'ratio':>6} | {'fwd-rev ms':>10} {'ratio':>6} | "
           f"{'graph MB':>8}")
    print(hdr)
    print("-" * len(hdr))
    for name, n, bs, r in time_rows:
        print(f"{name:<9} {n:>5} {bs:>5} | {r['fb'] * 1e3:>10.2f} | {r['hvp'] * 1e3:>8.2f} "
              f"{r['hvp'] / r['fb']:>6.2f} | {r['first'] * 1e3:>10.2f} {r['first'] / r['fb']:>6.2f} | "
              f"{r['fresh'] * 1e3:>11.2f} "
              f"{r['fresh'] / r['fb']:>6.2f} | {r['fwd'] * 1e3:>10.2f} {r['fwd'] / r['fb']:>6.2f} | "
              f"{r['cache_mb']:>8.1f}")

    print("\nsummary")
    for name, n, r in eig_rows:
        ok = r["lz5"] is not None and r["lz5"] <= 30
        print(f"  {name} N={n}: top-5 to 1e-3 after {fmt(r['lz5'])} Lanczos HVPs (stop rule: {fmt(r['stop5'])}), "
              f"power iteration {r['pw1']} HVPs for the top-1"
              + (f", {r['pw5']} for the top-5" if "pw5" in r else "") + f" -> target ≤30: {'met' if ok else 'NOT met'}")
    for name, n, bs, r in time_rows:
        ratio = r["hvp"] / r["fb"]
        print(f"  {name} N={n} batch {bs}: HVP/(fwd+bwd) = {ratio:.2f} (double backward, cached), "
              f"{r['fresh'] / r['fb']:.2f} (double backward, recomputed), {r['fwd'] / r['fb']:.2f} "
              f"(forward-over-reverse) -> target ≤2: {'met' if ratio <= 2 else 'NOT met'}")
    if time_rows:
        wins = sum(min(r["hvp"], r["fresh"]) <= r["fwd"] for *_, r in time_rows)
        faster = "reverse" if 2 * wins >= len(time_rows) else "forward"
        print(f"  faster method: {faster} in {max(wins, len(time_rows) - wins)} of {len(time_rows)} rows; "
              f"HessianOperator's default (method='auto'): {DEFAULT_HVP_METHOD}"
              + ("" if faster == DEFAULT_HVP_METHOD else " -> update DEFAULT_HVP_METHOD"))
    for note in notes:
        print("  note:", note)
    print(f"total {time.perf_counter() - t_start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
