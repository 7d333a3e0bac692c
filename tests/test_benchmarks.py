"""Every benchmark script runs: each once at its smallest size (``--smoke``), as a fresh process from the
repository root, as a user would start it (``python benchmarks/<folder>/<script>.py``).

Nothing here is timed or compared with a target (the scripts print their ratios; a loaded CI machine
would make any timing assertion flaky): the point is that no script rots, e.g. by patching a function
that was renamed.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from tests.launch import HAVE_MPI, ROOT, subprocess_env

#: script -> (arguments of its smallest run, a line its output must contain)
SMOKE = {
    "speed/bench_command.py": (["--smoke"], "auto ÷ K=1 end to end"),
    "speed/bench_curvature_memory.py": (["--smoke"], "SLQ steps ÷ 8·P·4"),
    "speed/bench_flush.py": (["--points", "2", "--repeats", "1"], "flush time 201³ ÷ 51²"),
    "speed/bench_hessian.py": (["--smoke"], "HessianOperator's default"),
    "speed/bench_memory.py": (["--smoke"], "Worst ratio"),
    "speed/bench_mpi.py": (["--smoke"], "surfaces equal across configurations"),
    "speed/bench_scheduler.py": (["--smoke"], "| ranks | chunk |"),
    "speed/bench_surface.py": (["--smoke"], "peak RSS of the larger surfaces"),
    "paper/conditioning_study.py": (["--smoke"], "Layer-wise conditioning"),
    "paper/eos_study.py": (["--smoke"], "## Edge of stability"),
    "paper/eos_track_study.py": (["--smoke"], "## Edge of stability with `landscape track`"),
    "paper/mli_study.py": (["--smoke"], "| Adam |"),
}
#: run elsewhere: tests/test_gpu_check.py runs gpu_check.py on the CPU (--cpu --quick, slow marker)
ELSEWHERE = {"speed/gpu_check.py"}
NEEDS_MPI = {"speed/bench_mpi.py", "speed/bench_scheduler.py"}


def test_every_script_has_a_smallest_run():
    scripts = {os.path.relpath(p, os.path.join(ROOT, "benchmarks"))
               for p in glob.glob(os.path.join(ROOT, "benchmarks", "*", "*.py"))}
    assert scripts == set(SMOKE) | ELSEWHERE
    assert not glob.glob(os.path.join(ROOT, "benchmarks", "*.py").replace("*.py", "[!_]*.py"))  # all in a folder


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMOKE))
def test_script_runs_at_its_smallest_size(script, tmp_path):
    if script in NEEDS_MPI and not HAVE_MPI:
        pytest.skip("mpi4py or mpiexec missing")
    args, expected = SMOKE[script]
    if script == "paper/eos_track_study.py":
        args = [*args, "--out", str(tmp_path)]
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", script), *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(MPLBACKEND="Agg"), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert expected in proc.stdout, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr
