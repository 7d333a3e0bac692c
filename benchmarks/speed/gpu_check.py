#!/usr/bin/env python
"""The GPU paths end to end, in one command and one table.

    python benchmarks/speed/gpu_check.py                 # on a CUDA machine: ~2-5 minutes
    python benchmarks/speed/gpu_check.py --cpu --quick   # the same checks on the CPU (to test this script)

On a machine without CUDA it prints one line saying so and exits 0 (nothing to check). With CUDA
it runs the ``landscape surface`` command as a user would (``python -m landscape.cli``, this tree
first on ``PYTHONPATH``) on an MLP and a conv net (``--conv``, default ``zoo:resnet20``) and prints
one row per check:

* **fp32 on the GPU vs the CPU**: the same surface (same seed, same directions) computed on
  ``cuda`` and on ``cpu``; max |Δ| / max |loss|. Conv layers run in TF32 by default on Ampere and
  later (``torch.backends.cudnn.allow_tf32``), hence the looser bound for the conv net.
* **bf16 / fp16 vs fp32** (``--precision``): autocast forward passes, losses summed in float64;
  the relative difference should be at the level of the format's rounding (~1e-2 for bf16).
* **--compile vs eager**, on the device: the same surface, and the time of each run.
* **channels_last**: the conv net's evaluator on CUDA converts model and inputs to channels_last
  (read back from the evaluator, in this process) and its surface matched the CPU above.
* **mpiexec -n 2 sharing one GPU** (``CUDA_VISIBLE_DEVICES`` = the first GPU): the surface with a
  fixed ``--points-per-batch`` equals the one-rank surface bit for bit.
* **one GPU per rank** (only with 2+ GPUs): ``mpiexec -n min(GPUs, 4)``; each rank reports the device
  it chose (``cuda:(local_rank % GPUs)``), which must all differ, and the surface equals one rank's.
* **HVP ÷ forward+backward** on the device, for both HVP methods (double backward with its cached
  graph, forward-over-reverse), and their agreement;
* **per-point time ÷ bare forward** on the device, for both models: the evaluator ``--points-per-batch
  auto`` chose, timed over a few calls after a warm-up (``torch.cuda.synchronize`` around each),
  divided by one bare forward pass over the same batches.

Every row says PASS/FAIL (or "info" where there is nothing to pass); the exit status is 1 if a row
failed. Record the table in benchmarks/README.md (section "GPU check").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: _common
from _common import ROOT, launcher, parse_args, subprocess_env

MARK = "GPU_CHECK_PROBE "


# ---------------------------------------------------------------------------- helpers
def run(cmd: list[str], timeout: float, ranks: int = 0, **extra_env) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run([*launcher(ranks), *cmd], env=subprocess_env(**extra_env), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    return time.perf_counter() - t, proc


def surface_cmd(model: str, args, out: str, device: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "landscape.cli", "surface", "--model", model, "--data", args.data,
            "--samples", str(args.samples), f"--x=-1:1:{args.grid}", f"--y=-1:1:{args.grid}",
            "--device", device, "--no-progress", "--overwrite", "--out", out, *extra]


def read_loss(path: str):
    import h5py
    import numpy as np

    with h5py.File(path, "r", locking=False) as f:
        return np.asarray(f["surfaces/train_loss"][()], dtype=np.float64)


def rel_diff(a, b) -> float:
    import numpy as np

    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []
        self.failed = False

    def add(self, check: str, config: str, value: str, ok: bool | None) -> None:
        verdict = "info" if ok is None else ("PASS" if ok else "FAIL")
        self.failed |= ok is False
        self.rows.append((check, config, value, verdict))
        print(f"  {check} [{config}]: {value} -> {verdict}", flush=True)

    def render(self) -> str:
        lines = ["| check | configuration | result | verdict |", "|---|---|---|---|"]
        lines += [f"| {c} | {k} | {v} | {p} |" for c, k, v, p in self.rows]
        return "\n".join(lines)


# ---------------------------------------------------------------------------- in-process parts
def probe_devices(args) -> None:
    """Under mpiexec: every rank builds its problem with --device auto and rank 0 prints who got what."""
    import torch

    from landscape.parallel import world
    from landscape.problem import make_problem

    w = world()
    p = make_problem(args.mlp, data=args.data, samples=64, device=args.device, local_rank=w.local_rank)
    x = p.batches[0][0]
    got = {"rank": w.rank, "local_rank": w.local_rank, "device": str(p.device), "data_on": str(x.device),
           "visible": torch.cuda.device_count() if torch.cuda.is_available() else 0}
    allr = w.comm.gather(got, root=0) if w.comm is not None else [got]
    if w.is_root:
        print(MARK + json.dumps(allr), flush=True)


def per_point_ratio(model: str, args, device: str) -> tuple[float, dict]:
    """Seconds per point of the evaluator ``auto`` picks ÷ one bare forward pass, on ``device``."""
    import numpy as np
    import torch

    from landscape.directions import make_random_directions
    from landscape.evaluate import make_evaluator
    from landscape.problem import make_problem

    p = make_problem(model, data=args.data, samples=args.samples, device=device)
    dirs = make_random_directions(p.model, 2, seed=0)
    ev = make_evaluator(p, dirs, "auto", verbose=False)
    sync = torch.cuda.synchronize if p.device.type == "cuda" else (lambda: None)
    k = max(1, int(getattr(ev, "k", 1) or 1))  # BatchedEvaluator: K points per call; PointEvaluator: one
    coords = np.random.default_rng(0).uniform(-1, 1, size=(k, 2))

    def bare() -> None:
        with torch.inference_mode():
            for x, _ in p.batches:
                p.model(x)

    def best(fn, reps: int) -> float:
        fn()
        sync()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
        return min(times)

    per_point = best(lambda: ev(coords), args.reps) / k
    fwd = best(bare, args.reps)
    info = {"K": k, "evaluator": type(ev).__name__, "channels_last": bool(getattr(ev, "channels_last", False)),
            "params_channels_last": any(t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
                                        and not t.is_contiguous() for t in p.model.parameters()),
            "per_point_ms": 1e3 * per_point, "forward_ms": 1e3 * fwd}
    return per_point / fwd, info


def hvp_ratios(model: str, args, device: str) -> dict:
    """HVP time ÷ forward+backward time on ``device`` for both HVP methods (double backward, cached; and
    forward-over-reverse), and whether they agree (relative difference of one product)."""
    import torch

    from landscape.curvature import HessianOperator
    from landscape.problem import make_problem

    p = make_problem(model, data=args.data, samples=min(args.samples, 512), device=device)
    sync = torch.cuda.synchronize if p.device.type == "cuda" else (lambda: None)
    params = [t for t in p.model.parameters() if t.requires_grad]
    n = sum(len(x) for x, _ in p.batches)

    def fb() -> None:
        for x, y in p.batches:
            torch.autograd.grad(p.loss_sum(p.model(x), y) / n, params)

    rev, fwd = HessianOperator(p, method="reverse"), HessianOperator(p, method="forward")
    v = torch.randn(rev.dim, generator=torch.Generator().manual_seed(0))
    a, b = rev.matvec_flat(v), fwd.matvec_flat(v)
    diff = float((a - b).norm() / a.norm().clamp_min(1e-30))

    def best(fn) -> float:
        fn()
        sync()
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
        return min(times)

    t_fb = best(fb)
    return {"reverse": best(lambda: rev.matvec_flat(v)) / t_fb, "forward": best(lambda: fwd.matvec_flat(v)) / t_fb,
            "fell_back": fwd.method != "forward", "rel_diff": diff}


# ---------------------------------------------------------------------------- the checks
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="run every check on the CPU (tests this script)")
    ap.add_argument("--quick", action="store_true", help="small grid and sample count")
    ap.add_argument("--mlp", default="zoo:mlp")
    ap.add_argument("--conv", default="zoo:resnet20")
    ap.add_argument("--data", default="zoo:digits")
    ap.add_argument("--samples", type=int, default=None, help="evaluation samples (default 1797, --quick 128)")
    ap.add_argument("--grid", type=int, default=None, help="GRID×GRID surfaces (default 11, --quick 3)")
    ap.add_argument("--reps", type=int, default=5, help="timed calls per per-point measurement (best kept)")
    ap.add_argument("--skip-mpi", action="store_true", help="leave out the mpiexec rows")
    ap.add_argument("--skip-compile", action="store_true", help="leave out --compile (minutes on a CPU)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per command")
    ap.add_argument("--probe-devices", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="auto", help=argparse.SUPPRESS)
    args = parse_args(ap, argv, cpu=True, quick=True, skip_compile=True, conv="zoo:cnn", reps=2)
    args.samples = args.samples or (128 if args.quick else 1797)
    args.grid = args.grid or (3 if args.quick else 11)
    if args.probe_devices:
        probe_devices(args)
        return 0

    import torch

    have_cuda = torch.cuda.is_available()
    if not have_cuda and not args.cpu:
        print("gpu_check: no CUDA device on this machine (torch.cuda.is_available() is False): nothing to check; "
              "run it on a GPU node (or --cpu to exercise this script on the CPU)")
        return 0
    dev = "cpu" if args.cpu else "cuda"
    n_gpus = torch.cuda.device_count() if have_cuda and not args.cpu else 0
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(n_gpus)) if n_gpus else "CPU"
    print(f"gpu_check: {dev} ({names}), torch {torch.__version__}, grid {args.grid}², {args.samples} samples of "
          f"{args.data}", flush=True)
    mpi = not args.skip_mpi and shutil.which("mpiexec") is not None
    t = Table()
    with tempfile.TemporaryDirectory() as tmp:
        def surface(tag: str, model: str, device: str, *extra: str, ranks: int = 0, **extra_env):
            out = os.path.join(tmp, f"{tag}.h5")
            secs, proc = run(surface_cmd(model, args, out, device, *extra), args.timeout, ranks, **extra_env)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:160]
                t.add(tag, " ".join(extra) or "defaults", f"exit {proc.returncode}: {tail}", False)
                return None, secs
            return read_loss(out), secs

        for label, model, tol in (("mlp", args.mlp, 1e-4), ("conv", args.conv, 5e-3)):
            ref, _ = surface(f"{label}-cpu", model, "cpu")
            base, base_s = surface(f"{label}-fp32", model, dev)
            if ref is None or base is None:
                continue
            t.add("fp32 device vs CPU", f"{label} ({model})", f"rel max |Δ| {rel_diff(base, ref):.1e}",
                  rel_diff(base, ref) <= tol)
            for prec, ptol in (("bf16", 5e-2), ("fp16", 1e-2)):
                low, _ = surface(f"{label}-{prec}", model, dev, "--precision", prec)
                if low is not None:
                    d = rel_diff(low, base)
                    t.add(f"{prec} vs fp32", f"{label}, --precision {prec}", f"rel max |Δ| {d:.1e}", d <= ptol)
            comp, comp_s = (None, 0.0) if args.skip_compile else surface(f"{label}-compile", model, dev, "--compile")
            if comp is not None:
                d = rel_diff(comp, base)
                t.add("--compile vs eager", label, f"rel max |Δ| {d:.1e}; run {comp_s:.0f} s vs {base_s:.0f} s "
                      "(compile time included)", d <= 1e-3)
            try:
                ratio, info = per_point_ratio(model, args, dev)
                t.add("per-point ÷ bare forward", f"{label}, {info['evaluator']} K={info['K']}",
                      f"{ratio:.2f} ({info['per_point_ms']:.2f} ms / {info['forward_ms']:.2f} ms)", None)
                if label == "conv":
                    want = dev == "cuda"
                    got = info["channels_last"] and info["params_channels_last"]
                    t.add("channels_last", f"conv on {dev}", f"evaluator {info['channels_last']}, weights "
                          f"{info['params_channels_last']} (expected {want})", got == want)
            except Exception as e:  # noqa: BLE001 - one row fails, the others still run
                t.add("per-point ÷ bare forward", label, f"{type(e).__name__}: {str(e)[:120]}", False)
            try:
                h = hvp_ratios(model, args, dev)
                t.add("HVP ÷ forward+backward", f"{label}: double backward (cached) / forward-over-reverse",
                      f"{h['reverse']:.2f} / " + ("fell back" if h["fell_back"] else f"{h['forward']:.2f}")
                      + f"; products differ by {h['rel_diff']:.1e}", h["rel_diff"] <= 1e-3)
            except Exception as e:  # noqa: BLE001
                t.add("HVP ÷ forward+backward", label, f"{type(e).__name__}: {str(e)[:120]}", False)

        if mpi:
            fixed = ("--points-per-batch", "4")
            one, _ = surface("share-1rank", args.mlp, dev, *fixed)
            vis = {"CUDA_VISIBLE_DEVICES": "0"} if n_gpus else {}
            two, _ = surface("share-2ranks", args.mlp, dev, *fixed, ranks=2, **vis)
            if one is not None and two is not None:
                same = bool((one == two).all())
                t.add("mpiexec -n 2, one GPU", "mlp, --points-per-batch 4",
                      "bitwise equal to 1 rank" if same else f"rel max |Δ| {rel_diff(two, one):.1e}", same)
            if n_gpus >= 2:
                r = min(n_gpus, 4)
                _, proc = run([sys.executable, os.path.abspath(__file__), "--probe-devices", "--mlp", args.mlp,
                               "--data", args.data], args.timeout, ranks=r)
                line = next((x for x in proc.stdout.splitlines() if x.startswith(MARK)), None)
                if line is None:
                    t.add("one GPU per rank", f"mpiexec -n {r}", f"probe failed: {proc.stderr[-160:]}", False)
                else:
                    got = json.loads(line[len(MARK):])
                    devs = [g["device"] for g in got]
                    t.add("one GPU per rank", f"mpiexec -n {r}", ", ".join(devs), len(set(devs)) == r)
                many, _ = surface("pergpu", args.mlp, dev, *fixed, ranks=r)
                if one is not None and many is not None:
                    same = bool((one == many).all())
                    t.add("one GPU per rank: surface", f"mpiexec -n {r}",
                          "bitwise equal to 1 rank" if same else f"rel max |Δ| {rel_diff(many, one):.1e}", same)
            else:
                t.add("one GPU per rank", "-", f"{n_gpus} GPU(s): needs 2 or more", None)
    print()
    print(t.render())
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
