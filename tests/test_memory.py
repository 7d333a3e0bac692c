"""Resident memory of the per-point path does not creep up with the points evaluated (no timing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_CHILD = r"""
import json, numpy as np, torch
from landscape.problem import make_problem
from landscape.directions import make_random_directions
from landscape.evaluate import PointEvaluator
torch.set_num_threads(2)  # the arenas of OpenMP threads are where freed activations were kept
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
p = make_problem("zoo:mlp", data="zoo:digits", batch_size=500, device="cpu")  # batches of 500 and 297 rows
ev = PointEvaluator(p, make_random_directions(p.model, 2, seed=0))
g = np.stack(np.meshgrid(np.linspace(-1, 1, 30), np.linspace(-1, 1, 30)), -1).reshape(-1, 2)
after = []
for i in range(0, len(g), 30):
    ev(g[i:i + 30])
    after.append(rss())
# this process's own peak (VmHWM): ru_maxrss also keeps the peak of the process that forked it before exec (a
# large pytest parent), so it is not this process's
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"after": after, "peak": hwm * 1024}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_per_point_calls_retain_no_memory():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    after = res["after"]
    base = after[2]  # after warm-up
    # between calls the resident memory goes back to where it was (900 points in 30 calls): within 1 %
    assert max(after[2:]) <= 1.01 * base, [round(a / 2 ** 20, 1) for a in after]
    assert res["peak"] <= 1.1 * base
