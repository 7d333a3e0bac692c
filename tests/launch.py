"""The one launcher of ``[mpiexec -n R] python ...`` subprocesses, for the tests (through
:mod:`tests.mpi_helpers`) and the benchmarks (``benchmarks/_common.py``). It imports neither torch nor
landscape, so a benchmark that reads a child's peak memory is not counting its own (Linux carries the
parent's peak into ``ru_maxrss`` across ``exec``).

The subprocesses run from the repository root with it on ``PYTHONPATH``, in a session of their own, so a
hang is killed as a whole (launcher, its group and every rank below it) and reported, never waited on forever.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = shutil.which("mpiexec")
try:
    import mpi4py  # noqa: F401

    HAVE_MPI = MPIEXEC is not None
except ImportError:  # pragma: no cover
    HAVE_MPI = False


# ----------------------------------------------------------------------------- launching
def subprocess_env(**extra) -> dict:
    """The environment of a launched run: the repository on ``PYTHONPATH``, thread counts left to landscape."""
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.pop("OMP_NUM_THREADS", None)
    e.pop("LANDSCAPE_NUM_THREADS", None)
    # Open MPI (where its mpiexec is the one on PATH): allow root (CI containers) and more ranks than cores
    e.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
             PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe")
    e.update({k: str(v) for k, v in extra.items()})
    return e


def launcher(ranks: int, options: list[str] | tuple[str, ...] = ()) -> list[str]:
    """``mpiexec [OPTIONS] -n RANKS`` to put before a command; nothing for ``ranks=0`` (a plain process)."""
    return [MPIEXEC or "mpiexec", *options, "-n", str(ranks)] if ranks else []


def command(args: list[str], ranks: int = 0, script: str | None = None) -> list[str]:
    """``[mpiexec -n RANKS] python -m landscape.cli ARGS`` (``ranks=0``: a plain process, no launcher);
    ``script`` (e.g. ``scripts/surface.py``) runs that file instead of the CLI."""
    entry = [sys.executable, os.path.join(ROOT, script)] if script else [sys.executable, "-m", "landscape.cli"]
    return [*launcher(ranks), *entry, *[str(a) for a in args]]


def _default_sigint() -> None:
    """In the child, before it runs: Ctrl-C's default action. A test run started in the background by a shell
    without job control (``cmd &`` in a script) ignores SIGINT, and children inherit that; a Python child would
    then never see the Ctrl-C that the tests send, where a user at a terminal would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args: list[str], ranks: int = 0, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
          script: str | None = None, **extra_env) -> subprocess.Popen:
    """Start ``[mpiexec -n R] landscape ARGS`` in a session of its own (so the whole group can be signalled)."""
    return subprocess.Popen(command(args, ranks, script), cwd=ROOT, env=subprocess_env(**extra_env), stdout=stdout,
                            stderr=stderr, text=True, start_new_session=True, preexec_fn=_default_sigint)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Open MPI puts each rank in a process group of its own)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill9(proc: subprocess.Popen) -> tuple[str, str]:
    """kill -9 the launcher, its process group and every rank below it; returns what they had written."""
    victims = descendants(proc.pid) if os.path.isdir("/proc") else []
    for pid in [proc.pid, *victims]:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    try:
        out, err = proc.communicate(timeout=30)
    except (subprocess.TimeoutExpired, ValueError):
        proc.wait()
        out = err = ""
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in victims) and time.monotonic() < deadline:
        time.sleep(0.05)
    return out or "", err or ""


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    """Wait for ``proc``: (exit status, stdout, stderr); a hang is killed and fails the test."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = kill9(proc)
        raise AssertionError(f"{' '.join(proc.args)} hung for {timeout} s\nstdout: {out[-2000:]}\n"
                             f"stderr: {err[-2000:]}") from None
    return proc.returncode, out or "", err or ""
