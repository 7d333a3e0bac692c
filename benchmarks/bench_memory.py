#!/usr/bin/env python
"""Peak resident memory of the per-point path: a 61×61 surface against a 5×5 one, over repeats.

Each run is a fresh ``landscape surface --points-per-batch 1`` process (the demo MLP on all 1,797 digits,
torch's default threads); its peak RSS is read from ``wait4``'s resource usage. The sizes alternate
(5×5, 61×61, 5×5, ...) so that the machine's state hits both alike. The issue's target: the 61×61 peak
within 10 % of the 5×5 one, in every repeat.

    python benchmarks/bench_memory.py --repeats 5 [--readme benchmarks/README.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def peak_rss(n: int, out: str) -> float:
    """Peak RSS (MiB) of one per-point surface of n×n points."""
    cmd = [sys.executable, "-m", "landscape.cli", "surface", "--model", "zoo:mlp", "--data", "zoo:digits",
           f"--x=-1:1:{n}", f"--y=-1:1:{n}", "--points-per-batch", "1", "--device", "cpu", "--out", out,
           "--overwrite", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise RuntimeError(f"{' '.join(cmd)} failed ({status})")
    return usage.ru_maxrss / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--readme")
    args = ap.parse_args(argv)
    out = os.path.join(tempfile.mkdtemp(), "s.h5")
    rows = []
    for r in range(args.repeats):
        small, large = peak_rss(5, out), peak_rss(61, out)
        rows.append((r + 1, small, large))
        print(r + 1, small, large, flush=True)
    worst = max(large / small for _, small, large in rows)
    lines = [f"## Per-point peak memory\n\n`python benchmarks/bench_memory.py --repeats {args.repeats}` "
             f"({datetime.date.today()}, load average {os.getloadavg()[0]:.1f}): peak RSS of "
             "`landscape surface --points-per-batch 1` on the demo MLP and all 1,797 digits, fresh processes, "
             "sizes alternating.\n", "| repeat | 5×5 (MiB) | 61×61 (MiB) | ratio |", "|---|---|---|---|"]
    lines += [f"| {r} | {s:.0f} | {g:.0f} | {g / s:.3f} |" for r, s, g in rows]
    lines.append(f"\nWorst ratio {worst:.3f} (target ≤ 1.10: {'met' if worst <= 1.10 else 'not met'}).")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import write_section

    write_section(lines, args.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
