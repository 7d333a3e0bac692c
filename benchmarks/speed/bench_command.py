#!/usr/bin/env python
"""Whole-command speed of ``landscape surface``: start-up, probe, points and write, against one bare forward
pass and against a loss-landscape-style script.

For each setting (the demo MLP on all 1,797 digits at random weights and trained; ResNet-20 on 512 digits)
and grid, three whole commands run as fresh processes, interleaved round after round (so that the load of a
shared machine hits all alike), and each reports its fastest round:

* ``auto``: ``landscape surface ... --points-per-batch auto`` (the default);
* ``K=1``: the same with ``--points-per-batch 1`` (the per-point path, no probe);
* ``reference``: a script in the style of Li et al.'s loss-landscape (``crunch``): the same model, data and
  directions, a DataLoader of batch 128 iterated per point, the weights rebuilt per point (``p.data = w + d``),
  ``.item()`` per batch, and the HDF5 file rewritten after every point.

Our commands print their phases (``LANDSCAPE_TIMINGS=1``): start-up is the wall time less the phases of
``run_surface`` (imports, model, data, directions and file set-up are in it), then the probe (choosing the
evaluator), the points and the final write. "÷ bare" divides the points phase per point by one bare forward
pass over the same samples in the batches the command used (measured in this process, fastest of many);
"÷ ideal" divides the whole command by (points × bare forward). The last column is auto ÷ K=1 end to end
(the issue's target: ≤ 1.05 on every row).

    python benchmarks/speed/bench_command.py                    # about 10 minutes on 2 idle cores
    python benchmarks/speed/bench_command.py --rounds 2 --quick # 5×5 grids only
    python benchmarks/speed/bench_command.py --smoke            # smallest run: does it work
    python benchmarks/speed/bench_command.py --readme benchmarks/README.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: _common
import numpy as np
import torch
from _common import ROOT, parse_args, subprocess_env, write_section

_REFERENCE = r"""
import sys, time, json
t0 = time.perf_counter()
import h5py, numpy as np, torch
from torch.utils.data import DataLoader, TensorDataset
from landscape.problem import make_problem
from landscape.directions import make_random_directions
model, ckpt, samples, n = sys.argv[1], sys.argv[2] or None, sys.argv[3], int(sys.argv[4])
p = make_problem(model, data="zoo:digits", checkpoint=ckpt, samples=int(samples) if samples else None,
                 batch_size=128, device="cpu")
d = make_random_directions(p.model, 2, seed=0)
X = torch.cat([x for x, _ in p.batches]); Y = torch.cat([y for _, y in p.batches])
net = p.model
keys = list(d.center); weights = [d.center[k].clone() for k in keys]
dx = [d.vectors[0][k] for k in keys]; dy = [d.vectors[1][k] for k in keys]
params = dict(net.named_parameters())
xs = np.linspace(-1, 1, n)
coords = [(a, b) for a in xs for b in xs]
losses = -np.ones((n, n)); accs = -np.ones((n, n))
crit = torch.nn.CrossEntropyLoss()
f = h5py.File(sys.argv[5], "w")
f["xcoordinates"] = xs; f["ycoordinates"] = xs
f.create_dataset("train_loss", data=losses); f.create_dataset("train_acc", data=accs)
t1 = time.perf_counter()
for i, (a, b) in enumerate(coords):
    changes = [d0 * float(a) + d1 * float(b) for d0, d1 in zip(dx, dy)]
    for k, w, c in zip(keys, weights, changes):
        params[k].data = w + c.type(w.dtype)
    loader = DataLoader(TensorDataset(X, Y), batch_size=128, shuffle=False)
    correct, total_loss, total = 0, 0.0, 0
    with torch.no_grad():
        for inputs, targets in loader:
            out = net(inputs)
            total_loss += crit(out, targets).item() * len(inputs)
            correct += out.max(1)[1].eq(targets).sum().item()
            total += len(inputs)
    losses.flat[i] = total_loss / total; accs.flat[i] = correct / total
    f["train_loss"][:] = losses; f["train_acc"][:] = accs; f.flush()  # as crunch: rewritten after every point
t2 = time.perf_counter()
f.close()
print(json.dumps({"startup": t1 - t0, "points": t2 - t1, "write": time.perf_counter() - t2}))
"""


def run_ours(model: str, ckpt: str | None, samples: int | None, n: int, k: str, out: str) -> dict:
    cmd = [sys.executable, "-m", "landscape.cli", "surface", "--model", model, "--data", "zoo:digits",
           f"--x=-1:1:{n}", f"--y=-1:1:{n}", "--points-per-batch", k, "--device", "cpu", "--out", out,
           "--overwrite", "--no-progress"]
    cmd += ["--checkpoint", ckpt] if ckpt else []
    cmd += ["--samples", str(samples)] if samples else []
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(LANDSCAPE_TIMINGS=1), cwd=ROOT)
    wall = time.perf_counter() - t
    if res.returncode:
        raise RuntimeError(res.stderr[-2000:])
    line = next(s for s in res.stderr.splitlines() if "timings" in s)
    ph = json.loads(line.split("timings ", 1)[1])
    in_run = sum(ph.values())
    return {"total": wall, "startup": wall - in_run + ph["setup"], "probe": ph["probe"], "points": ph["points"],
            "write": ph["write"]}


def run_reference(model: str, ckpt: str | None, samples: int | None, n: int, out: str) -> dict:
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _REFERENCE, model, ckpt or "", str(samples or ""), str(n), out],
                         capture_output=True, text=True, env=subprocess_env(), cwd=ROOT)
    wall = time.perf_counter() - t
    if res.returncode:
        raise RuntimeError(res.stderr[-2000:])
    ph = json.loads(res.stdout.strip().splitlines()[-1])
    return {"total": wall, "startup": wall - ph["points"] - ph["write"], "probe": 0.0, "points": ph["points"],
            "write": ph["write"]}


def bare_forward(model: str, ckpt: str | None, samples: int | None, reps: int = 20) -> float:
    """Fastest of ``reps`` forward passes over the samples, in the batches the command uses (its default)."""
    from landscape.problem import make_problem

    p = make_problem(model, data="zoo:digits", checkpoint=ckpt, samples=samples, device="cpu")
    best = float("inf")
    with torch.inference_mode():
        for _ in range(reps):
            t = time.perf_counter()
            for x, _ in p.batches:
                p.model(x)
            best = min(best, time.perf_counter() - t)
    return best


def trained_mlp(folder: str, epochs: int = 30) -> str:
    from landscape.train import train

    res = train("zoo:mlp", "zoo:digits", epochs=epochs, batch_size=64, out_dir=folder, log=None)
    return res.final


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (each command's fastest is kept)")
    ap.add_argument("--quick", action="store_true", help="5×5 grids only")
    ap.add_argument("--readme", help="append the table to this markdown file")
    args = parse_args(ap, argv, "the MLP after 1 epoch, 256 samples, 3×3, once")
    tmp = tempfile.mkdtemp()
    ckpt = trained_mlp(tmp, epochs=1 if args.smoke else 30)
    settings = [("demo MLP, random", "zoo:mlp", None, None), ("demo MLP, trained", "zoo:mlp", ckpt, None),
                ("ResNet-20, 512 digits", "zoo:resnet20", None, 512)]
    grids = {"zoo:mlp": (5,) if args.quick else (5, 41), "zoo:resnet20": (5,)}
    if args.smoke:
        settings, grids, args.rounds = [("demo MLP, trained", "zoo:mlp", ckpt, 256)], {"zoo:mlp": (3,)}, 1
    rows = []
    for name, model, ck, samples in settings:
        bare = bare_forward(model, ck, samples)
        for n in grids[model]:
            rec: dict[str, list[dict]] = {"auto": [], "K=1": [], "reference": []}
            for _ in range(args.rounds):  # interleaved: a burst of load hits every command of the round
                out = os.path.join(tmp, "s.h5")
                rec["auto"].append(run_ours(model, ck, samples, n, "auto", out))
                rec["K=1"].append(run_ours(model, ck, samples, n, "1", out))
                rec["reference"].append(run_reference(model, ck, samples, n, os.path.join(tmp, "r.h5")))
            best = {k: min(v, key=lambda r: r["total"]) for k, v in rec.items()}
            rows.append((name, n, bare, best))
            print(name, n, json.dumps(best), flush=True)
    lines = [f"## Whole command\n\n`python benchmarks/speed/bench_command.py` ({datetime.date.today()}, "
             f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"{args.rounds} interleaved rounds, fastest of each; load average at the end "
             f"{os.getloadavg()[0]:.1f}). Seconds per phase; ÷ bare: points phase per point ÷ one bare forward "
             "pass; ÷ ideal: whole command ÷ (points × bare forward); ÷ ref: whole command ÷ the "
             "loss-landscape-style script's.\n",
             "| setting | grid | command | start-up | probe | points | write | total | ÷ bare | ÷ ideal | ÷ ref | "
             "auto ÷ K=1 |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, n, bare, best in rows:
        pts = n * n
        for cmd in ("auto", "K=1", "reference"):
            r = best[cmd]
            ratio = f"{best['auto']['total'] / best['K=1']['total']:.3f}" if cmd == "auto" else ""
            lines.append(f"| {name} | {n}×{n} | {cmd} | {r['startup']:.2f} | {r['probe']:.2f} | {r['points']:.2f} | "
                         f"{r['write']:.3f} | {r['total']:.2f} | {r['points'] / pts / bare:.2f} | "
                         f"{r['total'] / (pts * bare):.1f} | {r['total'] / best['reference']['total']:.2f} | {ratio} |")
        lines.append(f"| | | bare forward | | | {bare * 1e3:.2f} ms | | | 1.00 | | | |")
    worst = max(best["auto"]["total"] / best["K=1"]["total"] for *_, best in rows)
    verdict = 'met' if worst <= 1.05 else 'not met'
    lines.append(f"\nauto ÷ K=1 end to end, worst row: {worst:.3f} (target ≤ 1.05: {verdict})")
    write_section(lines, args.readme)
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
