"""Issue 17 (reliability, round two): races, full disks, mixed provenance, Ctrl-C under MPI, unconverged
eigenvalues, outputs over inputs, and the remaining tracebacks. One test (or a few) per numbered item.

The race runs two real processes on one new path. Full disks are real: a 40 KiB (or a few MiB, filled up)
tmpfs mounted in a private mount namespace (``unshare -m``) where the machine allows it, otherwise the
``ulimit -f`` file size limit (``resource.setrlimit`` in the child); a test skips only when neither exists.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np
import pytest
import torch

from tests.faults.fault_helpers import done_count, read_all
from tests.faults.test_fault_files import cli, one_line_error, race
from tests.mpi_helpers import HAVE_MPI, ROOT, finish, start, subprocess_env

MLP8 = ["--model", "zoo:mlp", "--model-args", "width=8,depth=1", "--data", "zoo:synthetic", "--samples", "32"]
SLOW = ["--model", "tests.faults.fault_helpers:slow_mlp", "--data", "tests.faults.fault_helpers:synthetic16",
        "--chunk-size", "1", "--points-per-batch", "1", "--no-progress"]
CLI = [sys.executable, "-m", "landscape.cli"]


def _errors(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if "error:" in ln]


def _surface(out, *extra) -> list[str]:
    return ["surface", *MLP8, "--x=-1:1:3", "--y=-1:1:3", "--no-progress", *extra, "--out", str(out)]


# ----------------------------------------------------------------------------- real small file systems
@functools.lru_cache(maxsize=1)
def _tmpfs_mechanism() -> str | None:
    """Why a private tmpfs cannot be mounted here, or None when it can (root, or user namespaces)."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "no unshare/mount command"
    d = tempfile.mkdtemp()
    try:
        for pre in ([], ["-r"]):  # as root; else as the root of a user namespace
            r = subprocess.run(["unshare", *pre, "-m", "sh", "-c", f"mount -t tmpfs -o size=40k tmpfs {d}"],
                               capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                _UNSHARE[:] = pre
                return None
        return f"unshare -m + mount -t tmpfs refused ({r.stderr.strip()[:80]})"
    finally:
        os.rmdir(d)


_UNSHARE: list[str] = []


def _have_rlimit_fsize() -> bool:
    try:
        import resource

        return hasattr(resource, "RLIMIT_FSIZE")
    except ImportError:
        return False


def _in_tmpfs(tmp_path, opts: str, steps: list[tuple[str, str]], keep: list[str] = ()) -> dict:
    """Run shell ``steps`` ``[(name, command)]`` in a private mount namespace with a tmpfs (``opts``) at
    ``$M``; returns ``{name: (rc, stdout, stderr)}``, the listing of ``$M`` after the last step (``ls``) and
    copies of the files ``keep`` (read back before the namespace, and the tmpfs, are gone)."""
    m, res = tmp_path / "m", tmp_path / "res"
    m.mkdir()
    res.mkdir()
    env = subprocess_env(M=str(m), R=str(res), PY=sys.executable)
    lines = ["set -u", f'mount -t tmpfs -o {opts} tmpfs "$M" || exit 99', f"cd {shlex.quote(ROOT)}"]
    for name, cmd in steps:
        lines.append(f'( {cmd} ) >"$R/{name}.out" 2>"$R/{name}.err"; echo $? >"$R/{name}.rc"')
    lines.append('ls -a "$M" >"$R/ls"')
    for k in keep:
        lines.append(f'cp "$M/{k}" "$R/{k}" 2>/dev/null || true')
    r = subprocess.run(["unshare", *_UNSHARE, "-m", "bash", "-c", "\n".join(lines)], env=env, timeout=600,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = {"ls": sorted((res / "ls").read_text().split()), "dir": res}
    for name, _ in steps:
        out[name] = (int((res / f"{name}.rc").read_text()), (res / f"{name}.out").read_text(),
                     (res / f"{name}.err").read_text())
    return out


def _landscape(*args: str) -> str:
    """``landscape ARGS`` as a shell command; ``$M`` in an argument is the mount point."""
    return " ".join(['"$PY" -m landscape.cli', *(f'"{a}"' if "$M" in str(a) else shlex.quote(str(a)) for a in args)])


def _limited(argv: list[str], fsize: int, cwd: str = ROOT, **env) -> tuple[int, str, str]:
    """``landscape ARGV`` in a child whose files may not grow past ``fsize`` bytes (``ulimit -f``)."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    r = subprocess.run([*CLI, *map(str, argv)], cwd=cwd, env=subprocess_env(**env), preexec_fn=limit,
                       capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout, r.stderr


def _need_a_small_disk() -> str:
    why = _tmpfs_mechanism()
    if why is None:
        return "tmpfs"
    if _have_rlimit_fsize():
        return "ulimit"
    pytest.skip(f"neither a private tmpfs ({why}) nor a file size limit (no resource.RLIMIT_FSIZE) is available")


# ----------------------------------------------------------------------------- 1. the race
def test_1_two_runs_racing_on_one_new_out_never_mix(tmp_path):
    """Run A (slow Hessian directions, seed 0) and run B (random directions, seed 1) start 1 s apart on the same
    new --out: exactly one gets the file, the other is refused in one line, and the file holds exactly the
    winner's run (its values equal a reference run of the winner's command, point for point)."""
    out = str(tmp_path / "race.h5")
    grid = ["--x=-1:1:7", "--y=-1:1:7", "--flush-every", "0.2"]
    cmd_a = ["surface", *SLOW, *grid, "--directions", "hessian", "--seed", "0", "--out", out]
    cmd_b = ["surface", *SLOW, *grid, "--seed", "1", "--out", out]
    winner = race(cmd_a, cmd_b, 400, {"LANDSCAPE_FAULT_SLEEP": "0.1"}, {"LANDSCAPE_FAULT_SLEEP": "0.05"})
    state = read_all(out)
    assert state["surfaces/done"].all()
    ref = str(tmp_path / "ref.h5")
    r = subprocess.run([*CLI, *[ref if a == out else a for a in winner]], cwd=ROOT, capture_output=True, text=True,
                       env=subprocess_env(LANDSCAPE_FAULT_SLEEP="0"), timeout=400)
    assert r.returncode == 0, r.stderr
    reference = read_all(ref)
    for k in ("surfaces/train_loss", "surfaces/train_acc", "directions/x/net.1.weight"):
        key = k if k in reference else next(n for n in reference if n.startswith(k.rsplit("/", 1)[0]))
        np.testing.assert_allclose(state[key], reference[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]


def test_1_flushes_write_to_the_file_they_locked_not_the_path(tmp_path):
    """A file put at the path during a run (here: the path renamed away and replaced) is never written to."""
    from landscape.store import GridStore, atomic_create

    out = str(tmp_path / "s.h5")

    def build(f):
        f.create_dataset("v", data=np.full(4, np.nan))
        f.create_dataset("done", data=np.zeros(4, np.uint8))

    lock = atomic_create(out, build, keep_lock=True)
    store = GridStore(out, ["v"], "done", (4,), flush_every=1e9, lock=lock)
    os.rename(out, out + ".moved")
    atomic_create(out, build)  # someone else's file now has the name
    store.add(np.array([1, 2]), {"v": np.array([5.0, 6.0])})
    store.close()
    with h5py.File(out + ".moved", "r", locking=False) as f:
        assert f["done"][()].tolist() == [0, 1, 1, 0] and f["v"][1] == 5.0
    with h5py.File(out, "r", locking=False) as f:
        assert not f["done"][()].any()


# ----------------------------------------------------------------------------- 2. full disks
def test_2_surface_into_a_full_40k_filesystem_is_one_line_and_leaves_nothing(tmp_path):
    how = _need_a_small_disk()
    if how == "tmpfs":
        r = _in_tmpfs(tmp_path, "size=40k", [("run", _landscape(*_surface("$M/full.h5")[:-1], "$M/full.h5"))])
        rc, _, err = r["run"]
        listing = r["ls"]
    else:
        d = tmp_path / "lim"
        d.mkdir()
        rc, _, err = _limited(_surface(d / "full.h5"), 4096)
        listing = os.listdir(d)
    line = one_line_error(rc, err, err)
    assert "free space" in line or "ulimit -f" in line, line
    assert not [f for f in listing if f.startswith("full.h5")], listing  # no file, no full.h5.tmp-PID


def test_2_disk_filling_up_during_a_run_keeps_the_last_flush_and_hessian_sharpness_refuse(tmp_path):
    """A few MiB of tmpfs: a slow run starts, the disk is filled up mid-run; the next flush is refused in one
    line with the points of the last flush intact. Then hessian and sharpness --out that file refuse too, and
    leave its bytes as they were."""
    how = _need_a_small_disk()
    if how != "tmpfs":
        pytest.skip("filling a disk mid-run needs a real small file system (unshare -m + tmpfs)")  # ulimit: below
    run = _landscape("surface", *SLOW, "--x=-1:1:7", "--y=-1:1:7", "--flush-every", "0.2", "--out", "$M/s.h5")
    fill = 'until [ -s "$M/s.h5" ]; do sleep 0.05; done; sleep 1.5; dd if=/dev/zero of="$M/filler" bs=4k 2>/dev/null'
    model = ["--model", "tests.faults.fault_helpers:slow_mlp", "--data", "tests.faults.fault_helpers:synthetic16"]
    steps = [("run", f"LANDSCAPE_FAULT_SLEEP=0.05 {run} & {fill}; wait %1"),
             ("copy", 'cp "$M/s.h5" "$R/before.h5"'),
             ("hessian", _landscape("hessian", *model, "--top-k", "1", "--quiet", "--out", "$M/s.h5")),
             ("sharpness", _landscape("sharpness", *model, "--metrics", "curvature", "--quiet", "--out", "$M/s.h5"))]
    r = _in_tmpfs(tmp_path, "size=3m", steps, keep=["s.h5"])
    rc, _, err = r["run"]
    line = one_line_error(rc, err, err)
    assert "free space" in line and "saved before are intact" in line, line
    state = read_all(str(r["dir"] / "s.h5"))
    n = int(state["surfaces/done"].sum())
    assert 0 < n < 49, n
    assert f"the {n} points saved before are intact" in line, line
    for cmd in ("hessian", "sharpness"):
        rc, _, err = r[cmd]
        assert "free space" in one_line_error(rc, err, err), err
    assert (r["dir"] / "before.h5").read_bytes() == (r["dir"] / "s.h5").read_bytes()
    assert not [f for f in r["ls"] if ".tmp-" in f], r["ls"]
    # the points on disk are right: a resume with space back finishes and agrees with an uninterrupted run
    resumed = str(tmp_path / "resumed.h5")
    shutil.copy(r["dir"] / "s.h5", resumed)
    os.chmod(resumed, 0o644)
    argv = ["surface", *SLOW, "--x=-1:1:7", "--y=-1:1:7", "--out"]
    assert cli(*argv, resumed)[0] == 0
    assert cli(*argv, str(tmp_path / "ref.h5"))[0] == 0
    a, b = read_all(resumed), read_all(str(tmp_path / "ref.h5"))
    np.testing.assert_allclose(a["surfaces/train_loss"], b["surfaces/train_loss"], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not _have_rlimit_fsize(), reason="needs resource.RLIMIT_FSIZE (ulimit -f)")
def test_2_ulimit_f_on_create_and_on_a_resume_flush(tmp_path, monkeypatch):
    """Over ``ulimit -f`` a write used to kill the process (SIGXFSZ) or crash HDF5: now one line or success."""
    out = tmp_path / "lim.h5"
    rc, _, err = _limited(_surface(out), 2048)
    assert "ulimit -f" in one_line_error(rc, err, err) and not out.exists()
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]
    # a partly done file (out of memory after a few points), resumed with the limit at its current size
    part = tmp_path / "part.h5"
    argv = ["surface", "--model", "tests.faults.fault_helpers:oom_mlp", "--data",
            "tests.faults.fault_helpers:synthetic16", "--x=-1:1:9", "--chunk-size", "1", "--points-per-batch", "1",
            "--flush-every", "0.000001", "--no-progress", "--out", str(part)]
    monkeypatch.setenv("LANDSCAPE_FAULT_OOM_AFTER", "6")
    assert cli(*argv)[0] == 2
    before = done_count(str(part))
    assert 0 < before < 9
    rc, stdout, err = _limited(argv, part.stat().st_size, LANDSCAPE_FAULT_OOM_AFTER="1000000")
    assert rc in (0, 2) and "Traceback" not in err, (rc, err)  # never killed by a signal
    if rc == 2:
        one_line_error(rc, err, err)
    assert done_count(str(part)) >= before
    read_all(str(part))


@pytest.mark.skipif(not _have_rlimit_fsize(), reason="needs resource.RLIMIT_FSIZE (ulimit -f)")
def test_7_plot_under_ulimit_f_is_one_line(fault_files, tmp_path):
    rc, _, err = _limited(["plot", fault_files["result"], "--kind", "contour", "--out-dir", tmp_path], 1024)
    line = one_line_error(rc, err, err)
    assert "ulimit -f" in line or "File too large" in line, line


def test_8_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    out = tmp_path / "s.h5"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"s.h5.tmp-{dead.pid}"
    live = tmp_path / f"s.h5.tmp-{os.getppid()}"  # a process that is still running: left alone
    stale.write_bytes(b"\x89HDF half-made")
    live.write_bytes(b"\x89HDF being made")
    code, _, err = cli(*_surface(out))
    assert code == 0, err
    assert not stale.exists() and live.exists()


# ----------------------------------------------------------------------------- 3. mixed provenance
def test_3_adding_curvature_or_metrics_of_another_model_or_data_is_refused(fault_files, tmp_path):
    surf = str(tmp_path / "surf.h5")
    shutil.copy(fault_files["result"], surf)
    before = open(surf, "rb").read()
    other = str(tmp_path / "init.pt")
    from landscape.problem import load_model

    torch.save(load_model("zoo:mlp", "width=8,depth=1", seed=5).state_dict(), other)
    cases = [
        (["hessian", *MLP8, "--checkpoint", other, "--top-k", "1"], "model"),
        (["sharpness", *MLP8[:4], "--data", "zoo:digits", "--samples", "32", "--metrics", "curvature"], "--data"),
        (["hessian", *MLP8[:6], "--samples", "16", "--top-k", "1"], "--samples"),
        (["hessian", *MLP8, "--loss", "mse", "--top-k", "1"], "--loss"),
        (["sharpness", *MLP8, "--seed", "3", "--metrics", "curvature"], "--seed"),
    ]
    for argv, name in cases:
        quiet = ["--quiet"] if argv[0] == "sharpness" else []  # (hessian's --quiet is new: the test runs on old code)
        code, _, err = cli(*argv, *quiet, "--out", surf)
        line = one_line_error(code, err, err)
        assert name in line and "another" in line and "choose another --out" in line, line
    assert open(surf, "rb").read() == before
    code, _, err = cli("hessian", *MLP8, "--top-k", "1", "--out", surf)  # the same model and data: added
    assert code == 0, err
    with h5py.File(surf, "r", locking=False) as f:
        assert "curvature/eigenvalues" in f and "surfaces/train_loss" in f


# ----------------------------------------------------------------------------- 4. Ctrl-C under mpiexec -n 3
@pytest.mark.mpi
@pytest.mark.skipif(not HAVE_MPI, reason="needs mpiexec and mpi4py")
def test_4_ctrl_c_under_mpiexec_3_is_one_line_and_exit_130(tmp_path):
    out = str(tmp_path / "c.h5")
    proc = start(["surface", *SLOW, "--x=-1:1:10", "--y=-1:1:8", "--flush-every", "0.5", "--out", out], ranks=3)
    deadline = time.monotonic() + 180
    while (done_count(out) or 0) == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    rc, _, err = finish(proc, 60)
    assert rc == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    ours = [ln for ln in err.splitlines() if ln.startswith("landscape") and "→" not in ln]
    assert len(ours) == 1 and re.search(r"interrupted; (\d+)/80 points are saved", ours[0]), err
    n = int(re.search(r"(\d+)/80", ours[0])[1])
    assert int(read_all(out)["surfaces/done"].sum()) == n


# ----------------------------------------------------------------------------- 5. unreachable --top-k
def test_5_top_k_beyond_the_iteration_budget_is_refused(tmp_path):
    out = str(tmp_path / "h.h5")
    code, stdout, err = cli("hessian", "--model", "zoo:mlp", "--model-args", "width=64,depth=1", "--data",
                            "zoo:synthetic", "--samples", "32", "--top-k", "1000", "--out", out)
    line = one_line_error(code, err, err)
    assert "--top-k 1000" in line and "--max-iter 100" in line and "--max-iter 2000" in line, line
    assert not stdout and not os.path.exists(out)


def test_5_unconverged_eigenvalues_are_never_shown_as_converged(tmp_path):
    code, stdout, err = cli("hessian", *MLP8, "--top-k", "3", "--max-iter", "4", "--tol", "1e-12",
                            "--out", str(tmp_path / "h.h5"))
    assert code == 0, err
    assert "eigenvalues (top 3, NOT converged)" in stdout, stdout
    assert "warning: the eigenvalues did not converge" in err and "raise --max-iter" in err, err
    with h5py.File(tmp_path / "h.h5", "r", locking=False) as f:
        assert not f["curvature/eigenvalues"].attrs["converged"]


# ----------------------------------------------------------------------------- 6. --out over an input
def test_6_out_equal_to_an_input_checkpoint_is_never_overwritten(fault_files, tmp_path):
    ck = str(tmp_path / "final.pt")
    shutil.copy(fault_files["ckpt"], ck)
    before = open(ck, "rb").read()
    for argv in (_surface(ck, "--checkpoint", ck, "--overwrite"), _surface(ck, "--checkpoint", ck),
                 ["hessian", *MLP8, "--checkpoint", ck, "--top-k", "1", "--out", ck],
                 ["sharpness", *MLP8, "--checkpoint", ck, "--metrics", "curvature", "--out", ck],
                 ["interpolate", *MLP8, "--from", ck, "--to", fault_files["ckpt"], "--alpha=0:1:3", "--out", ck]):
        code, _, err = cli(*argv)
        line = one_line_error(code, err, err)
        assert "of this run" in line and "never writes over its inputs" in line, line
    assert open(ck, "rb").read() == before


def test_6_overwrite_names_a_file_that_is_not_ours_and_keeps_it(fault_files, tmp_path):
    other = str(tmp_path / "someone_elses.pt")
    shutil.copy(fault_files["ckpt"], other)
    before = open(other, "rb").read()
    code, _, err = cli(*_surface(other))
    line = one_line_error(code, err, err)
    assert "zip archive" in line and "--overwrite" not in line, line  # no longer suggests replacing it
    code, _, err = cli(*_surface(other, "--overwrite"))
    line = one_line_error(code, err, err)
    assert "zip archive" in line and "only replaces landscape result files" in line, line
    assert open(other, "rb").read() == before


# ----------------------------------------------------------------------------- 7. tracebacks
def test_7_garbage_and_truncated_safetensors_are_one_line(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    from landscape.problem import load_model

    good = tmp_path / "good.safetensors"
    save_file(load_model("zoo:mlp", "width=8,depth=1").state_dict(), str(good))
    data = good.read_bytes()
    cases = {"garbage": os.urandom(200), "truncated": data[: len(data) // 2], "cut_header": data[:5]}
    for name, content in cases.items():
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(content)
        code, _, err = cli(*_surface(tmp_path / f"{name}.h5", "--checkpoint", bad))
        line = one_line_error(code, err, err)
        assert "--checkpoint" in line and name in line and "safetensors" in line, line
    code, _, err = cli(*_surface(tmp_path / "ok.h5", "--checkpoint", good))
    assert code == 0, err


def test_7_a_label_out_of_range_anywhere_in_the_data_is_one_line(tmp_path):
    code, _, err = cli("surface", "--model", "tests.faults.fault_helpers:slow_mlp", "--data",
                       "tests.faults.fault_helpers:late_bad_label_data", "--x=-1:1:3", "--no-progress",
                       "--out", str(tmp_path / "s.h5"))
    line = one_line_error(code, err, err)
    assert "label 10 of example 50" in line and "10 classes" in line, line
    assert not (tmp_path / "s.h5").exists()


def test_7_a_model_constructor_that_raises_is_one_line(tmp_path):
    code, _, err = cli("surface", "--model", "tests.faults.fault_helpers:raising_model", "--data", "zoo:synthetic",
                       "--x=-1:1:3", "--out", str(tmp_path / "s.h5"))
    line = one_line_error(code, err, err)
    assert "--model" in line and "RuntimeError: boom" in line, line


def test_7_out_and_plot_out_dir_in_a_read_only_folder(fault_files, tmp_path):
    """A read-only folder: a read-only tmpfs (root ignores permissions) or chmod 555 for another user."""
    if os.geteuid() == 0:
        if _tmpfs_mechanism() is not None:
            pytest.skip(f"as root only a read-only mount makes a folder read-only: {_tmpfs_mechanism()}")
        src = str(tmp_path / "src.h5")
        shutil.copy(fault_files["result"], src)
        r = _in_tmpfs(tmp_path, "ro,size=40k", [
            ("surface", _landscape(*_surface("$M/s.h5"))),
            ("plot", _landscape("plot", src, "--kind", "contour", "--out-dir", "$M")),
            ("plot_sub", _landscape("plot", src, "--kind", "contour", "--out-dir", "$M/pics"))])
        results = [r["surface"], r["plot"], r["plot_sub"]]
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        os.chmod(ro, 0o555)
        results = [cli(*_surface(ro / "s.h5")),
                   cli("plot", fault_files["result"], "--kind", "contour", "--out-dir", ro),
                   cli("plot", fault_files["result"], "--kind", "contour", "--out-dir", ro / "pics")]
    for code, _, err in results:
        line = one_line_error(code, err, err)
        assert "Read-only file system" in line or "Permission denied" in line, line


def test_7_a_matplotlibrc_asking_for_latex_without_latex(fault_files, tmp_path):
    if shutil.which("latex") and shutil.which("dvipng"):
        pytest.skip("LaTeX is installed here: text.usetex works")
    (tmp_path / "matplotlibrc").write_text("text.usetex: True\n")
    r = subprocess.run([*CLI, "plot", fault_files["result"], "--kind", "contour", "--dpi", "30", "--out-dir",
                        str(tmp_path)], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "text.usetex" in r.stderr, r.stderr  # drawn, with a one-line warning
    assert any(f.endswith(".png") for f in os.listdir(tmp_path))


# ----------------------------------------------------------------------------- 8. smaller ones
def test_8_a_billion_point_grid_is_refused_up_front(tmp_path):
    code, _, err = cli(*_surface(tmp_path / "big.h5")[:-5], "--x=-1:1:1000", "--y=-1:1:1000", "--z=-1:1:1000",
                       "--out", str(tmp_path / "big.h5"))
    line = one_line_error(code, err, err)
    assert "1,000,000,000 points" in line and "too large" in line, line
    assert not (tmp_path / "big.h5").exists()


def test_8_out_of_memory_before_the_file_exists_does_not_claim_saved_points(tmp_path, monkeypatch):
    import landscape.surface as surface

    def no_memory(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(surface, "create_surface_file", no_memory)
    code, _, err = cli(*_surface(tmp_path / "s.h5"))
    line = one_line_error(code, err, err)
    assert "out of memory" in line and "nothing was saved" in line and "are saved" not in line, line


def test_8_resuming_a_1d_file_with_a_2d_grid_names_the_grid(fault_files, tmp_path):
    one = str(tmp_path / "one.h5")
    shutil.copy(fault_files["result1d"], one)
    code, _, err = cli("surface", *MLP8, "--x=-1:1:5", "--y=-1:1:5", "--no-progress", "--out", one)
    line = one_line_error(code, err, err)
    assert "1-D surface" in line and "2-D grid" in line and "--directions" not in line, line


def test_8_same_min_and_max_is_not_answered_with_the_same_range(tmp_path):
    code, _, err = cli(*_surface(tmp_path / "s.h5")[:-5], "--x=0:0:5", "--out", str(tmp_path / "s.h5"))
    line = one_line_error(code, err, err)
    assert "did you mean --x=0:0:5" not in line and "min < max" in line and "--x=0:0:1" in line, line


def test_8_sharpness_with_no_metric_is_refused(tmp_path):
    code, _, err = cli("sharpness", *MLP8, "--metrics", "", "--out", str(tmp_path / "m.h5"))
    line = one_line_error(code, err, err)
    assert "--metrics" in line and "names no metric" in line, line
    assert not (tmp_path / "m.h5").exists()


def test_8_int8_safetensors_is_not_cast_silently(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    from landscape.problem import load_model

    sd = {k: (v * 10).to(torch.int8) for k, v in load_model("zoo:mlp", "width=8,depth=1").state_dict().items()}
    path = tmp_path / "q.safetensors"
    save_file(sd, str(path))
    code, _, err = cli(*_surface(tmp_path / "s.h5", "--checkpoint", path))
    line = one_line_error(code, err, err)
    assert "int8" in line and "integer tensors" in line and "--checkpoint" in line, line


def test_8_nan_inputs_in_hessian_are_named_as_such(tmp_path):
    code, _, err = cli("hessian", "--model", "tests.faults.fault_helpers:slow_mlp", "--data",
                       "tests.faults.fault_helpers:nan_input_data", "--out", str(tmp_path / "h.h5"))
    line = one_line_error(code, err, err)
    assert "example 40 holds NaN" in line and "deterministic" not in line, line


def test_8_a_different_seed_is_named_as_the_seed(fault_files, tmp_path):
    surf = str(tmp_path / "s.h5")
    shutil.copy(fault_files["result"], surf)  # made with --seed 0 and --samples 32
    code, _, err = cli(*_surface(surf, "--seed", "1")[:-2], "--out", surf)
    line = one_line_error(code, err, err)
    assert "--seed: file has 0, this run has 1" in line and "data_fingerprint" not in line, line


# ----------------------------------------------------------------------------- 9. security floor
def test_9_torch_floor_in_install_requires_and_refusal_on_older_torch(fault_files, tmp_path, monkeypatch):
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    assert "torch>=2.10" in cfg["options"]["install_requires"].split()
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    code, _, err = cli(*_surface(tmp_path / "s.h5", "--checkpoint", fault_files["ckpt"]))
    line = one_line_error(code, err, err)
    assert "torch 2.5.1 is older than 2.10" in line and "CVE-2025-32434" in line and "--unsafe-load" in line, line
    code, _, err = cli(*_surface(tmp_path / "s.h5", "--checkpoint", fault_files["ckpt"], "--unsafe-load"))
    assert code == 0, err


# ----------------------------------------------------------------------------- 10. first-run usability
def test_10_default_out_folder_is_created(tmp_path):
    r = subprocess.run([*CLI, "surface", *MLP8, "--x=-1:1:3", "--no-progress"], cwd=tmp_path, env=subprocess_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "outputs" / "surface.h5").exists()


def test_10_negative_range_with_a_space_gets_the_fix(tmp_path):
    code, _, err = cli("surface", *MLP8, "--x", "-1:1:5", "--out", str(tmp_path / "s.h5"))
    line = one_line_error(code, err, err)
    assert "--x=-1:1:5" in line and "expected one argument" in line, line


def test_10_a_result_file_as_checkpoint_is_called_what_it_is(fault_files, tmp_path):
    code, _, err = cli(*_surface(tmp_path / "s.h5", "--checkpoint", fault_files["result"]))
    line = one_line_error(code, err, err)
    assert "is an HDF5 file" in line and "--unsafe-load" not in line and "pickle" not in line, line


def test_10_unknown_flag_points_at_the_subcommand_help(tmp_path):
    code, _, err = cli(*_surface(tmp_path / "s.h5", "--no-such-flag"))
    line = one_line_error(code, err, err)
    assert "unrecognized arguments: --no-such-flag" in line and "landscape surface --help" in line, line


def test_10_info_does_not_offer_interpolate_into_a_surface_file(fault_files, tmp_path):
    code, stdout, err = cli("info", fault_files["result"])
    assert code == 0, err
    added = [ln for ln in stdout.splitlines() if "can be added" in ln]
    assert added and "hessian" in added[0] and "interpolate" not in added[0], stdout
    assert "interpolation path (landscape interpolate, a file of its own)" in stdout, stdout
    surf = str(tmp_path / "s.h5")
    shutil.copy(fault_files["result"], surf)
    code, _, err = cli("interpolate", *MLP8, "--from", fault_files["ckpt"], "--to", fault_files["ckpt"],
                       "--alpha=0:1:3", "--no-progress", "--out", surf)
    assert "not an interpolation" in one_line_error(code, err, err)


def test_10_hessian_shows_progress(tmp_path):
    code, _, err = cli("hessian", *MLP8, "--top-k", "2", "--trace", "--out", str(tmp_path / "h.h5"))
    assert code == 0, err
    for want in ("checking that the loss is deterministic", "lanczos: top 2 eigenvalues", "trace: auto"):
        assert want in err, err
    code, _, err = cli("hessian", *MLP8, "--top-k", "2", "--quiet", "--out", str(tmp_path / "h2.h5"))
    assert code == 0 and "lanczos:" not in err, err


def test_10_plot_and_info_work_without_fcntl(fault_files, tmp_path):
    """Windows has no fcntl: reading commands must not need it (the writer lock imports it when it locks)."""
    code = ("import sys; sys.modules['fcntl'] = None\n"
            "from landscape.cli import main\n"
            f"assert main(['info', {fault_files['result']!r}]) == 0\n"
            f"assert main(['plot', {fault_files['result']!r}, '--kind', 'contour', '--dpi', '30', '--out-dir', "
            f"{str(tmp_path)!r}]) == 0\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr


def test_10_no_locks_is_told_apart_from_locked(tmp_path, monkeypatch):
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="has no file locks"):
        code, _, err = cli(*_surface(tmp_path / "s.h5"))
    assert code == 0, err

    def busy(fd, op):
        raise OSError(errno.EWOULDBLOCK, "Resource temporarily unavailable")

    monkeypatch.setattr(fcntl, "flock", busy)
    code, _, err = cli(*_surface(tmp_path / "s.h5"))
    assert "being written by another landscape process" in one_line_error(code, err, err)
