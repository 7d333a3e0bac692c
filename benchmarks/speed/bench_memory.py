#!/usr/bin/env python
"""Peak resident memory of the per-point path: a 61×61 surface against a 5×5 one, over repeats.

Each run is a fresh ``landscape surface --points-per-batch 1`` process (the demo MLP on all 1,797 digits,
torch's default threads); its peak RSS is read from ``wait4``'s resource usage. The sizes alternate
(5×5, 61×61, 5×5, ...) so that the machine's state hits both alike. The issue's target: the 61×61 peak
within 10 % of the 5×5 one, in every repeat.

    python benchmarks/speed/bench_memory.py --repeats 5 [--readme benchmarks/README.md]
    python benchmarks/speed/bench_memory.py --smoke    # smallest run: does it work
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: _common
from _common import parse_args, peak_rss, write_section


def surface_rss(n: int, out: str) -> float:
    """Peak RSS (MiB) of one per-point surface of n×n points."""
    cmd = [sys.executable, "-m", "landscape.cli", "surface", "--model", "zoo:mlp", "--data", "zoo:digits",
           f"--x=-1:1:{n}", f"--y=-1:1:{n}", "--points-per-batch", "1", "--device", "cpu", "--out", out,
           "--overwrite", "--no-progress"]
    return peak_rss(cmd)[0] / 2**20


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--readme")
    args = parse_args(ap, argv, "2×2 against 5×5", repeats=1)
    out = os.path.join(tempfile.mkdtemp(), "s.h5")
    sizes = (2, 5) if args.smoke else (5, 61)
    rows = []
    for r in range(args.repeats):
        small, large = surface_rss(sizes[0], out), surface_rss(sizes[1], out)
        rows.append((r + 1, small, large))
        print(r + 1, small, large, flush=True)
    worst = max(large / small for _, small, large in rows)
    lines = [f"## Per-point peak memory\n\n`python benchmarks/speed/bench_memory.py --repeats {args.repeats}` "
             f"({datetime.date.today()}, load average {os.getloadavg()[0]:.1f}): peak RSS of "
             "`landscape surface --points-per-batch 1` on the demo MLP and all 1,797 digits, fresh processes, "
             "sizes alternating.\n", f"| repeat | {sizes[0]}×{sizes[0]} (MiB) | {sizes[1]}×{sizes[1]} (MiB) | ratio |",
             "|---|---|---|---|"]
    lines += [f"| {r} | {s:.0f} | {g:.0f} | {g / s:.3f} |" for r, s, g in rows]
    lines.append(f"\nWorst ratio {worst:.3f} (target ≤ 1.10: {'met' if worst <= 1.10 else 'not met'}).")
    write_section(lines, args.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
