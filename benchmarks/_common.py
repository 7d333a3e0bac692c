"""Shared by the benchmark scripts in ``speed/`` and ``paper/``.

Each script starts with::

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/
    from _common import ...

Importing this module puts the repository first on ``sys.path``, so a script measures the ``landscape`` of
the tree it lives in (not an installed copy), and ``tests.launch`` -- the one place that knows how to
launch ``[mpiexec -n R] python ...`` (environment, Open MPI's root and oversubscription switches) -- is
importable here too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.launch import launcher, subprocess_env  # noqa: E402

__all__ = ["ROOT", "launcher", "subprocess_env", "parse_args", "write_section", "run_marked", "peak_rss"]


def parse_args(ap: argparse.ArgumentParser, argv: list[str] | None = None, what: str = "", **smallest):
    """``ap.parse_args(argv)`` with ``--smoke``: the script's smallest run (does it still work?), which sets the
    options ``smallest`` (``what`` describes what else it makes smaller)."""
    sizes = ", ".join([f"--{k.replace('_', '-')} {v}" for k, v in smallest.items()] + ([what] if what else []))
    ap.add_argument("--smoke", action="store_true", help=f"the smallest run ({sizes})")
    args = ap.parse_args(argv)
    if args.smoke:
        vars(args).update(smallest)
    return args


def write_section(lines: list[str], readme: str | None = None) -> str:
    """Print a markdown section (``lines`` joined) and, given ``readme`` (``--readme``), append it to that file."""
    text = "\n".join(lines) + "\n"
    print(text)
    if readme:
        with open(readme, "a") as f:
            f.write("\n" + text)
    return text


def run_marked(cmd: list[str], mark: str, ranks: int = 0, mpiexec_args: str = "", timeout: float = 600.0,
               **env) -> dict:
    """Run ``[mpiexec -n ranks] cmd`` (``ranks=0``: a plain process) and return the JSON that its rank 0 printed
    after ``mark``, with ``process_wall_s`` added; a failed run ends the benchmark with its stderr."""
    full = [*launcher(ranks, mpiexec_args.split()), *cmd]
    t = time.perf_counter()
    proc = subprocess.run(full, env=subprocess_env(**env), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"{' '.join(full)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith(mark))
    r = json.loads(line[len(mark):])
    r["process_wall_s"] = wall
    return r


def peak_rss(cmd: list[str]) -> tuple[int, str]:
    """(peak resident bytes of the process ``cmd``, its stderr tail), from ``wait4``'s resource usage (a fresh
    process each time, so nothing of an earlier run is counted); a failed run ends the benchmark."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=subprocess_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-2000:]
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
    return usage.ru_maxrss * 1024, tail  # KiB on Linux
