#!/usr/bin/env python
"""Surface evaluation speed: time per grid point ÷ one bare forward pass (the limit), and memory.

For each setting (the demo MLP on all 1,797 digits, at its random initial weights and trained by full-batch
Adam to a train loss ≤ 1e-4, the checkpoint a landscape is centred on; ResNet-20 on 512 digits) this measures, in one
run, many short interleaved rounds; a round times every path once, right after an untimed call of
the same path (its data back in the cache, as in a running surface), over a window of about the
length of one per-point call (a shorter call is repeated; a batched group of K points can take
longer), and each path reports its fastest round. On a shared VM the same matrix product varies up
to 2× from call to call, so the minimum of many short rounds is the stable estimate of each path's
speed:

* ``bare``: one forward pass of the model over the evaluation batches, nothing else (the limit);
* ``bare one batch``: the same forward with every sample in one batch (for reference: the batch
  size is the user's ``--batch-size``, 512 here);
* ``per-point``: :class:`landscape.evaluate.PointEvaluator` (K = 1) on 16 points (1 for ResNet-20),
  with and without the input-layer fold (:class:`landscape.evaluate.InputFold`, for sequential models);
* ``batched``: what ``--points-per-batch auto`` picks (:func:`landscape.evaluate.make_evaluator`),
  plus a sweep of fixed K, each on one group of K points; for the MLP these run as a
  :class:`landscape.evaluate.chain.LinearChain`, and a K = 16 row shows the generic ``vmap`` path; two
  rows time the chain's matrix products alone and with its activations (no loss), its floor;
* ``reference``: a per-point loop in the style of the reference tool (Li et al.'s loss-landscape):
  a DataLoader iterated per point, the weights rebuilt from Python lists per point
  (``p.data = w + d``), ``.item()`` per batch, and two full-grid reduces per point.

and prints time per point ÷ bare forward, the batched speed-up over per-point and our speed-up over
the reference loop, then each of the issue's targets with the ratio measured for it. Then peak RSS of a
41×41 surface vs a 5×5 one (fresh processes), and with ``--volume`` of a 41³ volume.

    python benchmarks/speed/bench_surface.py            # about 3 minutes on 2 cores (--volume: 30 s more)
    python benchmarks/speed/bench_surface.py --quick    # about 40 s
    python benchmarks/speed/bench_surface.py --smoke    # smallest run: does it work
    python benchmarks/speed/bench_surface.py --threads 1,2   # every setting with 1, then 2 torch threads
    python benchmarks/speed/bench_surface.py --readme benchmarks/README.md   # append the table there
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: _common
import numpy as np
import torch
from _common import parse_args, subprocess_env

from landscape import evaluate as E
from landscape.directions import make_random_directions
from landscape.problem import make_problem


# --------------------------------------------------------------------------- the reference-style loop
def reference_loop(problem, directions, coords: np.ndarray, grid_size: int) -> float:
    """Per-point evaluation as the reference tool does it; returns seconds per point."""
    from torch.utils.data import DataLoader, TensorDataset

    net = problem.model
    X = torch.cat([x for x, _ in problem.batches]).cpu()
    Y = torch.cat([y for _, y in problem.batches]).cpu()
    batch_size = len(problem.batches[0][0])
    keys = list(directions.center)
    weights = [directions.center[k].clone() for k in keys]  # lists, as in get_weights()
    dx = [directions.vectors[0][k] for k in keys]
    dy = [directions.vectors[1][k] for k in keys]
    params = dict(net.named_parameters())
    losses = -np.ones(grid_size)
    accuracies = -np.ones(grid_size)
    criterion = torch.nn.CrossEntropyLoss()
    t = time.perf_counter()
    for i, (a, b) in enumerate(coords):
        changes = [d0 * float(a) + d1 * float(b) for (d0, d1) in zip(dx, dy)]  # set_weights()
        for k, w, d in zip(keys, weights, changes):
            params[k].data = w + d.type(w.dtype)
        loader = DataLoader(TensorDataset(X, Y), batch_size=batch_size, shuffle=False)  # per point
        correct, total_loss, total = 0, 0.0, 0
        with torch.no_grad():
            for inputs, targets in loader:
                inputs, targets = inputs.to(problem.device), targets.to(problem.device)
                outputs = net(inputs)
                loss = criterion(outputs, targets)
                total_loss += loss.item() * len(inputs)
                _, predicted = torch.max(outputs.data, 1)
                correct += predicted.eq(targets).sum().item()
                total += len(inputs)
        losses[i % grid_size] = total_loss / total
        accuracies[i % grid_size] = correct / total
        losses = np.maximum.reduce([losses, losses.copy()])  # mpi.reduce_max on the whole grid
        accuracies = np.maximum.reduce([accuracies, accuracies.copy()])
    dt = (time.perf_counter() - t) / len(coords)
    for k, w in zip(keys, weights):
        params[k].data = w.clone()
    return dt


# --------------------------------------------------------------------------- timing
def bare_forward(problem, batches=None) -> float:
    t = time.perf_counter()
    with torch.inference_mode():
        for x, _ in batches or problem.batches:
            problem.model(x)
    return time.perf_counter() - t


def _steady(run, points: int, calls: int = 1) -> float:
    """Seconds per point of ``calls`` back-to-back ``run()`` right after an untimed ``run()`` (its data back
    in the cache, as in a running surface, where one evaluator runs call after call)."""
    run()
    t = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - t) / (points * calls)


def chain_products(ev: E.BatchedEvaluator, coeffs: torch.Tensor, activations: bool):
    """A call of ``ev``'s linear chain reduced to its matrix products (the first-layer combination and one
    ``bmm`` per ``Linear``, into two reused buffers as the chain does; with ``activations`` its ReLUs too),
    without the loss: work that no exact batched evaluation skips. Timed beside the full call, it shows
    where the chain's floor is."""
    from landscape.evaluate.chain import _Elementwise, _Linear

    chain = ev.chain
    chunks = chain.layout(ev.groups[ev.splits[0]], ev.rows)
    k = len(coeffs)
    cf = torch.cat([torch.ones((k, 1), dtype=torch.float64), coeffs], 1).to(torch.float32)
    rows = max(z.shape[-1] for z, *_ in chunks)
    width = max([chunks[0][0].shape[1]] + [s.stack.shape[1] for s in chain.steps if isinstance(s, _Linear)])
    buffers = [torch.empty(k * width * rows) for _ in range(2)]

    def run():
        with torch.inference_mode():
            weights = chain._weights(cf)
            for z, *_ in chunks:
                r = z.shape[-1]
                a = torch.mm(cf, z.reshape(len(z), -1), out=buffers[0][:k * z.shape[1] * r].view(k, -1))
                a, held = a.view(k, -1, r), 0
                for s, w in zip(chain.steps, weights):
                    if isinstance(s, _Linear):
                        held = 1 - held
                        a = torch.bmm(w, a, out=buffers[held][:k * w.shape[1] * r].view(k, -1, r))
                    elif activations and isinstance(s, _Elementwise):
                        a = torch.relu_(a) if s.in_place_relu else s.fn(a)
    return run


def train_to(problem, target: float, max_steps: int = 5000) -> float:
    """Full-batch Adam on the problem's data until the float64 train loss is ≤ ``target`` (a trained checkpoint:
    where a landscape is centred, and where the loss is small); returns the loss reached."""
    import copy

    X = torch.cat([x for x, _ in problem.batches])
    y = torch.cat([t for _, t in problem.batches])
    net = problem.model.train()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(max_steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(X), y)
        loss.backward()
        opt.step()
        if loss.item() < 0.5 * target:
            break
    net.eval()
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(copy.deepcopy(net).double()(X.double()), y))


def bench_setting(name: str, model: str, samples: int | None, rounds: int, sweep: tuple[int, ...],
                  per_point_points: int, ref_points: int, vmap_sweep: tuple[int, ...] = (),
                  trained: float | None = None) -> dict:
    """Time per point of every path, as the fastest of ``rounds`` interleaved rounds.

    A round times each path once on its own short call: the bare forward once, the per-point paths on
    ``per_point_points`` points, a batched path on one group of K points, the reference loop on
    ``ref_points`` points. On a shared VM the same GEMM varies 2× from call to call, so many short
    rounds and the minimum give each path's quiet-machine speed; the ratios compare those.
    """
    problem = make_problem(model, data="zoo:digits", samples=samples, device="cpu")
    reached = train_to(problem, trained) if trained is not None else None
    dirs = make_random_directions(problem.model, 2, seed=0)
    n_grid = 51 * 51  # (the reference loop writes into a grid of this size)
    coords = np.random.default_rng(0).uniform(-1, 1, (max(64, per_point_points, *sweep, *vmap_sweep), 2))
    t0 = time.perf_counter()
    auto = E.make_evaluator(problem, dirs, "auto")
    setup_s = time.perf_counter() - t0
    auto_k = auto.k if isinstance(auto, E.BatchedEvaluator) else 1
    per_point = E.PointEvaluator(problem, dirs)
    plain = E.PointEvaluator(problem, dirs, fold=False)
    folds = per_point.fold is not None
    one_batch = [(torch.cat([x for x, _ in problem.batches]), None)]
    pp = per_point_points
    paths = {
        "bare": (lambda: bare_forward(problem), 1),
        "bare one batch": (lambda: bare_forward(problem, one_batch), 1),
        "per-point": (lambda: per_point(coords[:pp]), pp),
        "auto": (lambda: auto(coords[:max(pp, auto_k)]), max(pp, auto_k)),
        "reference": (lambda: reference_loop(problem, dirs, coords[:ref_points], n_grid), ref_points),
    }
    if folds:
        paths["per-point, no fold"] = (lambda: plain(coords[:pp]), pp)
    for k in sweep:
        ev = E.BatchedEvaluator(problem, dirs, k)
        paths[f"K={k}"] = (lambda ev=ev, k=k: ev(coords[:k]), k)
    # the generic vmap path, for models the linear chain (landscape.evaluate.chain) does not cover
    for k in vmap_sweep:
        ev = E.BatchedEvaluator(problem, dirs, k, chain=False)
        paths[f"vmap K={k}"] = (lambda ev=ev, k=k: ev(coords[:k]), k)
    if auto_k > 1 and auto.chain is not None:  # the chain's floor: its matrix products alone, then with the ReLUs
        c = torch.as_tensor(coords[:auto_k])
        paths["auto: products only"] = (chain_products(auto, c, activations=False), auto_k)
        paths["auto: products and activations"] = (chain_products(auto, c, activations=True), auto_k)
    # Every path is timed over windows about as long as one per-point call (a shorter call is repeated):
    # with bursts of load from other machines, the fastest of many short windows is lower than that of
    # few long ones, so unequal windows would bias the ratios.
    once = {label: _steady(run, points) * points for label, (run, points) in paths.items() if label != "reference"}
    window = once["per-point"]
    calls = {label: max(1, round(window / max(t, 1e-9))) for label, t in once.items()}
    rec: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for label, (run, points) in paths.items():
            if label == "reference":  # (it times itself, without its set-up)
                run()
                rec[label].append(run())
            else:
                rec[label].append(_steady(run, points, calls[label]))
    best = {k: float(np.min(v)) for k, v in rec.items()}  # other processes only ever add time
    return {"name": name if reached is None else f"{name}, trained to loss {reached:.1e}",
            "samples": problem.n_samples, "params": sum(p.numel() for p in problem.model.parameters()),
            "auto_k": auto_k, "setup_s": setup_s, "times": best}


# --------------------------------------------------------------------------- memory
_CHILD = r"""
import json, resource, sys, tempfile, os
from landscape.problem import make_problem
from landscape.surface import SurfaceSpec, run_surface
import torch
x, y, z = sys.argv[1], sys.argv[2], (sys.argv[3] or None)
torch.set_num_threads(int(sys.argv[4]))
p = make_problem("zoo:mlp", data="zoo:digits", device="cpu")
d = tempfile.mkdtemp()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
res = run_surface(p, SurfaceSpec(x=x, y=y, z=z), os.path.join(d, "s.h5"), progress=False)
print(json.dumps({"before_kib": before, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "points": res.done, "seconds": res.seconds}))
"""


def peak_rss(x: str, y: str, z: str | None = None) -> dict:
    args = [sys.executable, "-c", _CHILD, x, y, z or "", str(torch.get_num_threads())]
    out = subprocess.run(args, capture_output=True, text=True, check=True, env=subprocess_env())
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- report
def table(results: list[dict], mem: list[tuple[str, dict]]) -> str:
    lines = ["| setting | path | ms / point | ÷ bare forward | speed-up |", "|---|---|---|---|---|"]
    for r in results:
        t = r["times"]
        bare = t["bare"]
        best = min(t["per-point"], t["auto"])
        lines.append(f"| {r['name']} | bare forward (the limit) | {bare * 1e3:.3f} | 1.00 | |")
        lines.append(f"| | bare forward, all samples in one batch | {t['bare one batch'] * 1e3:.3f} | "
                     f"{t['bare one batch'] / bare:.2f} | |")
        if "per-point, no fold" in t:
            v = t["per-point, no fold"]
            lines.append(f"| | per-point without the input-layer fold | {v * 1e3:.3f} | {v / bare:.2f} | |")
        what = "per-point (input-layer fold)" if "per-point, no fold" in t else "per-point"
        lines.append(f"| | {what} | {t['per-point'] * 1e3:.3f} | {t['per-point'] / bare:.2f} | |")
        what = f"batched auto (K={r['auto_k']})" if r["auto_k"] > 1 else "auto (picked per-point, K=1)"
        lines.append(f"| | {what} | {t['auto'] * 1e3:.3f} | {t['auto'] / bare:.2f} | "
                     f"{t['per-point'] / t['auto']:.2f}× over per-point |")
        labels = {"products only": "its matrix products alone (the floor)",
                  "products and activations": "its matrix products and activations (no loss)"}
        for part in labels:
            if f"auto: {part}" in t:
                v = t[f"auto: {part}"]
                lines.append(f"| | batched auto, {labels[part]} | {v * 1e3:.3f} | {v / bare:.2f} | |")
        for k in sorted(int(s[2:]) for s in t if s.startswith("K=")):
            v = t[f"K={k}"]
            lines.append(f"| | batched K={k} | {v * 1e3:.3f} | {v / bare:.2f} | "
                         f"{t['per-point'] / v:.2f}× over per-point |")
        for k in sorted(int(s[7:]) for s in t if s.startswith("vmap K=")):
            v = t[f"vmap K={k}"]
            lines.append(f"| | batched K={k} through vmap (without the linear chain) | {v * 1e3:.3f} | "
                         f"{v / bare:.2f} | {t['per-point'] / v:.2f}× over per-point |")
        lines.append(f"| | reference-style loop | {t['reference'] * 1e3:.3f} | {t['reference'] / bare:.2f} | "
                     f"ours (best) {t['reference'] / best:.1f}× faster |")
    if mem:
        lines += ["", "| surface (zoo:mlp, 1,797 digits) | points | peak RSS (MiB) | ratio to 5×5 | s |",
                  "|---|---|---|---|---|"]
        base = mem[0][1]["peak_kib"]
        for label, m in mem:
            lines.append(f"| {label} | {m['points']} | {m['peak_kib'] / 1024:.0f} | {m['peak_kib'] / base:.3f} | "
                         f"{m['seconds']:.1f} |")
    return "\n".join(lines)


def targets(results: list[dict], mem: list[tuple[str, dict]]) -> str:
    """The issue's targets, each with the ratio measured in this run."""
    mlp = results[0]["times"]
    by_name = {("resnet" if r["name"].startswith("ResNet") else "trained" if "trained" in r["name"] else "mlp"): r
               for r in results}
    resnet = by_name["resnet"]["times"] if "resnet" in by_name else None
    trained = by_name.get("trained")

    def row(what: str, value: float, ok: bool, shown: str) -> str:
        return f"| {what} | {shown.format(value)} | {'met' if ok else 'not met'} |"

    lines = ["| target | measured | |", "|---|---|---|",
             row("MLP: per-point ≤ 1.05 of the limit", mlp["per-point"] / mlp["bare"],
                 mlp["per-point"] <= 1.05 * mlp["bare"], "{:.2f}"),
             row("MLP: batched ≤ 0.5 of the limit", mlp["auto"] / mlp["bare"], mlp["auto"] <= 0.5 * mlp["bare"],
                 "{:.2f}"),
             row("MLP: batched ≥ 3× over per-point", mlp["per-point"] / mlp["auto"],
                 mlp["per-point"] >= 3 * mlp["auto"], "{:.2f}×")]
    if resnet is not None:
        lines += [row("ResNet-20: per-point ≤ 1.05 of the limit", resnet["per-point"] / resnet["bare"],
                      resnet["per-point"] <= 1.05 * resnet["bare"], "{:.2f}"),
                  row("ResNet-20: auto no slower than per-point", resnet["auto"] / resnet["per-point"],
                      by_name["resnet"]["auto_k"] == 1 or resnet["auto"] <= resnet["per-point"],
                      "auto ÷ per-point {:.2f}" + (" (auto picks K = 1: the same path, timed twice)"
                                                   if by_name["resnet"]["auto_k"] == 1 else ""))]
    if trained is not None:
        t = trained["times"]
        lines.append(row("trained MLP: batched (K > 1), ≤ 0.5 of the limit", t["auto"] / t["bare"],
                         trained["auto_k"] > 1 and t["auto"] <= 0.5 * t["bare"],
                         f"K={trained['auto_k']}, " + "{:.2f}"))
    if len(mem) > 1:
        worst = max(m["peak_kib"] for _, m in mem[1:]) / mem[0][1]["peak_kib"]
        lines.append(row("peak RSS of the larger surfaces within 10 % of 5×5", worst, worst <= 1.1, "{:.3f}"))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer points and rounds (about 40 s)")
    ap.add_argument("--volume", action="store_true", help="also the peak RSS of a 41³ volume (slow)")
    ap.add_argument("--readme", metavar="MD", help="append a '## Surface performance' section to this file")
    ap.add_argument("--threads", default="1",
                    help="torch thread counts, comma-separated (e.g. 1,2: every setting is measured with each, in "
                         "this one run); 1 by default: on a shared 2-core machine the second core comes and goes, "
                         "which moves 2-thread ratios between runs")
    args = parse_args(ap, argv, "the MLP on 256 digits, one round")
    try:
        threads = [int(v) for v in args.threads.split(",")]
        if any(n < 1 for n in threads):
            raise ValueError
    except ValueError:
        ap.error(f"--threads {args.threads!r}: give positive integers separated by commas, e.g. 1,2")
    q = args.quick
    started = time.perf_counter()
    print(f"torch {torch.__version__}, thread counts {threads}, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    sections = []
    for i, n in enumerate(threads):
        torch.set_num_threads(n)
        if args.smoke:
            results = [bench_setting("demo MLP (zoo:mlp), 256 digits", "zoo:mlp", 256, rounds=1, sweep=(4,),
                                     per_point_points=2, ref_points=1, vmap_sweep=(4,))]
            mem = [("3×3", peak_rss("-1:1:3", "-1:1:3")), ("5×5", peak_rss("-1:1:5", "-1:1:5"))]
            sections.append((n, table(results, mem) + "\n\n" + targets(results, mem)))
            continue
        results = [
            bench_setting("demo MLP (zoo:mlp), 1,797 digits", "zoo:mlp", None, rounds=15 if q else 60,
                          sweep=(8, 32) if q else (4, 8, 16, 32, 64), per_point_points=16, ref_points=2,
                          vmap_sweep=(16,)),
        ]
        print(f"\n{n} torch threads\n" + table(results, []), flush=True)
        # the main use case: a trained checkpoint (batched only if the like-with-like check accepts it)
        results.append(bench_setting("demo MLP (zoo:mlp), 1,797 digits", "zoo:mlp", None, rounds=15 if q else 60,
                                     sweep=(16,), per_point_points=16, ref_points=1, trained=1e-4))
        print(table(results[-1:], []), flush=True)
        results.append(bench_setting("ResNet-20 (zoo:resnet20), 512 digits", "zoo:resnet20", 512,
                                     rounds=4 if q else 40, sweep=(4,), per_point_points=1, ref_points=1))
        mem = []
        if i == 0:  # (peak memory does not depend on the thread count)
            mem = [("5×5", peak_rss("-1:1:5", "-1:1:5")), ("41×41", peak_rss("-1:1:41", "-1:1:41"))]
            if args.volume:
                mem.append(("41³", peak_rss("-1:1:41", "-1:1:41", "-1:1:41")))
        sections.append((n, table(results, mem) + "\n\n" + targets(results, mem)))
    text = "\n\n".join(f"**{n} torch thread{'s' if n > 1 else ''}**\n\n{body}" for n, body in sections)
    print()
    print(text)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    if args.readme:
        cpu = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        flags = (" --quick" if q else "") + (" --volume" if args.volume else "") + \
            (f" --threads {args.threads}" if args.threads != "1" else "")
        head = (f"\n## Surface performance\n\n`python benchmarks/speed/bench_surface.py{flags}`, "
                f"{datetime.date.today().isoformat()}, {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
                "CPU, float32. Time per grid point (train loss and accuracy) ÷ one bare forward pass over the same "
                "batches (batch 512); fastest of many short interleaved rounds of one run, each path timed right "
                "after an untimed call of itself.\n\n")
        with open(args.readme, "a") as f:
            f.write(head + text + "\n")
        print(f"appended to {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
