"""benchmarks/speed/gpu_check.py: its CPU-side logic (no GPU is needed or used)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.mpi_helpers import HAVE_MPI, ROOT, subprocess_env

SCRIPT = os.path.join(ROOT, "benchmarks", "speed", "gpu_check.py")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would run its checks")
def test_without_cuda_it_says_so_and_exits_0():
    proc = subprocess.run([sys.executable, SCRIPT], env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device" in proc.stdout and "|" not in proc.stdout


@pytest.mark.slow
def test_cpu_run_prints_one_table_of_passing_rows():
    """``--cpu``: every check runs on the CPU (fp32 vs itself, bf16/fp16, channels_last expected off, 2 ranks)."""
    args = [sys.executable, SCRIPT, "--cpu", "--quick", "--skip-compile", "--conv", "zoo:cnn", "--reps", "2"]
    if not HAVE_MPI:
        args.append("--skip-mpi")
    proc = subprocess.run(args, env=subprocess_env(), capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = proc.stdout[proc.stdout.index("| check |"):]
    rows = [r for r in table.splitlines()[2:] if r.startswith("|")]
    assert "FAIL" not in table
    names = {r.split("|")[1].strip() for r in rows}
    assert {"fp32 device vs CPU", "bf16 vs fp32", "fp16 vs fp32", "per-point ÷ bare forward", "channels_last",
            "HVP ÷ forward+backward"} <= names
    if HAVE_MPI:
        assert any("bitwise equal to 1 rank" in r for r in rows)
