#!/usr/bin/env python
"""Surface evaluation speed: time per grid point ÷ one bare forward pass (the limit), and memory.

For each setting (the demo MLP on all 1,797 digits; ResNet-20 on 512 digits) this measures, in one
run and interleaved round by round (the fastest round of each, so that load from other processes
hits every path alike and spikes drop out):

* ``bare``: one forward pass of the model over the evaluation batches, nothing else (the limit);
* ``bare one batch``: the same forward with every sample in one batch (for reference: the batch
  size is the user's ``--batch-size``, 512 here);
* ``per-point``: :class:`landscape.evaluate.PointEvaluator` (K = 1), with and without the
  input-layer fold (:class:`landscape.evaluate.InputFold`, for sequential models);
* ``batched``: what ``--points-per-batch auto`` picks (:func:`landscape.evaluate.make_evaluator`),
  plus a sweep of fixed K for the MLP;
* ``reference``: a per-point loop in the style of the reference tool (Li et al.'s loss-landscape):
  a DataLoader iterated per point, the weights rebuilt from Python lists per point
  (``p.data = w + d``), ``.item()`` per batch, and two full-grid reduces per point.

and prints time per point ÷ bare forward, the batched speed-up over per-point and our speed-up over
the reference loop. Then peak RSS of a 41×41 surface vs a 5×5 one (fresh processes), and with
``--volume`` of a 41³ volume.

    python benchmarks/bench_surface.py            # about 2-3 minutes on 2 cores
    python benchmarks/bench_surface.py --quick    # about 40 s
    python benchmarks/bench_surface.py --readme benchmarks/README.md   # append the table there
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

import numpy as np
import torch

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


def per_point_time(ev, coords: np.ndarray) -> float:
    t = time.perf_counter()
    ev(coords)
    return (time.perf_counter() - t) / len(coords)


def bench_setting(name: str, model: str, samples: int | None, n_points: int, rounds: int, sweep: tuple[int, ...],
                  ref_points: int, vmap_sweep: tuple[int, ...] = ()) -> dict:
    problem = make_problem(model, data="zoo:digits", samples=samples, device="cpu")
    dirs = make_random_directions(problem.model, 2, seed=0)
    coords = np.random.default_rng(0).uniform(-1, 1, (n_points, 2))
    t0 = time.perf_counter()
    auto = E.make_evaluator(problem, dirs, "auto")
    setup_s = time.perf_counter() - t0
    auto_k = auto.k if isinstance(auto, E.BatchedEvaluator) else 1
    per_point = E.PointEvaluator(problem, dirs)
    plain = E.PointEvaluator(problem, dirs, fold=False)
    folds = per_point.fold is not None
    fixed = {f"K={k}": E.BatchedEvaluator(problem, dirs, k) for k in sweep}
    # the generic vmap path, for models the linear chain (landscape.linear_chain) does not cover
    fixed.update({f"vmap K={k}": E.BatchedEvaluator(problem, dirs, k, chain=False) for k in vmap_sweep})
    # warm-up (first-call allocations and vmap set-up are not what a long surface pays)
    for ev in (per_point, plain, auto, *fixed.values()):
        ev(coords[: max(2, auto_k)])
    one_batch = [(torch.cat([x for x, _ in problem.batches]), None)]
    bare_forward(problem)
    reference_loop(problem, dirs, coords[:1], n_points)
    n_bare = max(3, min(50, int(0.2 / max(1e-5, bare_forward(problem)))))
    rec: dict[str, list[float]] = {"bare": [], "bare one batch": [], "per-point": [], "auto": [], "reference": []}
    if folds:
        rec["per-point, no fold"] = []
    rec.update({k: [] for k in fixed})
    for _ in range(rounds):
        rec["bare"].append(float(np.median([bare_forward(problem) for _ in range(n_bare)])))
        rec["bare one batch"].append(float(np.median([bare_forward(problem, one_batch) for _ in range(n_bare)])))
        rec["per-point"].append(per_point_time(per_point, coords))
        if folds:
            rec["per-point, no fold"].append(per_point_time(plain, coords))
        rec["auto"].append(per_point_time(auto, coords))
        for k, ev in fixed.items():
            rec[k].append(per_point_time(ev, coords))
        rec["reference"].append(reference_loop(problem, dirs, coords[:ref_points], n_points))
    med = {k: float(np.min(v)) for k, v in rec.items()}  # other processes only ever add time
    return {"name": name, "samples": problem.n_samples, "params": sum(p.numel() for p in problem.model.parameters()),
            "auto_k": auto_k, "setup_s": setup_s, "times": med}


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
    out = subprocess.run(args, capture_output=True, text=True, check=True)
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer points and rounds (about 40 s)")
    ap.add_argument("--volume", action="store_true", help="also the peak RSS of a 41³ volume (slow)")
    ap.add_argument("--readme", metavar="MD", help="append a '## Surface performance' section to this file")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 by default: on a shared 2-core machine, 2 OpenMP threads are dominated "
                         "by waits as soon as anything else runs, which makes ratios meaningless")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    q = args.quick
    started = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    results = [
        bench_setting("demo MLP (zoo:mlp), 1,797 digits", "zoo:mlp", None, n_points=64 if q else 128,
                      rounds=3 if q else 7, sweep=(8, 32) if q else (4, 8, 16, 32, 64), ref_points=16 if q else 32,
                      vmap_sweep=(16,)),
    ]
    print(table(results, []), flush=True)
    results.append(bench_setting("ResNet-20 (zoo:resnet20), 512 digits", "zoo:resnet20", 512,
                                 n_points=4 if q else 8, rounds=3 if q else 5, sweep=(4,), ref_points=2 if q else 4))
    mem = [("5×5", peak_rss("-1:1:5", "-1:1:5")), ("41×41", peak_rss("-1:1:41", "-1:1:41"))]
    if args.volume:
        mem.append(("41³", peak_rss("-1:1:41", "-1:1:41", "-1:1:41")))
    text = table(results, mem)
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
        head = (f"\n## Surface performance\n\n`python benchmarks/bench_surface.py{' --quick' if q else ''}`, "
                f"{datetime.date.today().isoformat()}, {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} "
                f"torch threads, torch {torch.__version__}, CPU, float32. Time per grid point (train loss and "
                "accuracy) ÷ one bare forward pass over the same batches (batch 512); fastest of interleaved "
                "rounds of one run (other engineers' jobs shared the machine).\n\n")
        with open(args.readme, "a") as f:
            f.write(head + text + "\n")
        print(f"appended to {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
