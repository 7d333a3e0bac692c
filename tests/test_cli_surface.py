"""`landscape surface` as a user runs it: bad input gives one line, exit 2, nothing on disk."""

from __future__ import annotations

import os

import h5py
import pytest
import torch

BASE = ["surface", "--model", "zoo:mlp", "--model-args", "width=8,depth=1", "--data", "zoo:synthetic",
        "--samples", "64", "--no-progress"]


def one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines and "error" in lines[-1], err
    assert "Traceback" not in err
    error_lines = [ln for ln in lines if "error" in ln]
    assert len(error_lines) == 1, err
    for n in needles:
        assert n in error_lines[0], (n, err)


def test_surface_runs_and_resumes(run_cli, tmp_path):
    out = tmp_path / "s.h5"
    code, stdout, _ = run_cli(*BASE, "--x=-1:1:3", "--y=0:1:2", "--out", out)
    assert code == 0 and "6/6 points done" in stdout
    code, stdout, _ = run_cli(*BASE, "--x=-1:1:3", "--y=0:1:2", "--out", out)
    assert code == 0 and "0 computed now" in stdout


@pytest.mark.parametrize("rng,needle", [("1:-1:5", "min must be smaller"), ("a:b:c", "must be numbers"),
                                        ("0:1:0", "at least 1")])
def test_malformed_range(run_cli, tmp_path, rng, needle):
    out = tmp_path / "s.h5"
    one_line_error(*run_cli(*BASE, f"--x={rng}", "--out", out)[::2], "--x", needle)
    assert not out.exists()


def test_missing_checkpoint(run_cli, tmp_path):
    one_line_error(*run_cli(*BASE, "--x=-1:1:3", "--checkpoint", tmp_path / "nope.pt", "--out", tmp_path / "s.h5")[::2],
                   "does not exist")


def test_checkpoint_mismatch_names_keys(run_cli, tmp_path):
    from landscape.zoo.models import MLP

    ck = tmp_path / "other.pt"
    torch.save(MLP(width=5, depth=1).state_dict(), ck)
    one_line_error(*run_cli(*BASE, "--x=-1:1:3", "--checkpoint", ck, "--out", tmp_path / "s.h5")[::2],
                   "does not match the model", "1.weight")
    sd = MLP(width=8, depth=1).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": sd}, ck)
    one_line_error(*run_cli(*BASE, "--x=-1:1:3", "--checkpoint", ck, "--out", tmp_path / "s.h5")[::2],
                   "unexpected extra.weight")


def test_wrapped_checkpoint_loads(run_cli, tmp_path):
    from landscape.zoo.models import MLP

    ck = tmp_path / "wrapped.pt"
    torch.save({"model": MLP(width=8, depth=1).state_dict(), "epoch": 3}, ck)
    code, _, err = run_cli(*BASE, "--x=-1:1:2", "--checkpoint", ck, "--out", tmp_path / "s.h5")
    assert code == 0, err


def test_pickled_model_refused_without_unsafe_load(run_cli, tmp_path):
    from landscape.zoo.models import MLP

    ck = tmp_path / "whole.pt"
    torch.save(MLP(width=8, depth=1), ck)
    one_line_error(*run_cli(*BASE, "--x=-1:1:2", "--checkpoint", ck, "--out", tmp_path / "s.h5")[::2],
                   "--unsafe-load")
    code, _, err = run_cli(*BASE, "--x=-1:1:2", "--checkpoint", ck, "--unsafe-load", "--out", tmp_path / "s.h5")
    assert code == 0, err
    assert "landscape: warning: --unsafe-load" in err, err  # one line of ours, not a raw UserWarning (issue 17)


@pytest.mark.parametrize("args,needle", [
    (["--model", "zoo:nope"], "unknown zoo model"),
    (["--model", "no_such_module_xyz:make"], "cannot import module"),
    (["--model", "collections:OrderedDict"], "not a torch.nn.Module"),
    (["--data", "zoo:nope"], "unknown zoo data set"),
    (["--data", "os:getcwd"], "expected a Dataset"),
    (["--model-args", "width"], "key=value"),
    (["--model-args", "bogus=1"], "--model-args"),
])
def test_bad_specs(run_cli, tmp_path, args, needle):
    argv = list(BASE)
    for flag, value in zip(args[::2], args[1::2]):
        argv[argv.index(flag) + 1] = value
    one_line_error(*run_cli(*argv, "--x=-1:1:2", "--out", tmp_path / "s.h5")[::2], needle)
    assert not (tmp_path / "s.h5").exists()


def test_output_in_missing_folder(run_cli, tmp_path):
    one_line_error(*run_cli(*BASE, "--x=-1:1:2", "--out", tmp_path / "no" / "s.h5")[::2], "--out", "does not exist")


def test_directions_file_for_other_model(run_cli, tmp_path):
    a = tmp_path / "a.h5"
    assert run_cli(*BASE, "--x=-1:1:2", "--out", a)[0] == 0
    argv = [*BASE, "--x=-1:1:2", "--directions", a, "--out", tmp_path / "b.h5"]
    argv[argv.index("width=8,depth=1")] = "width=6,depth=1"
    one_line_error(*run_cli(*argv)[::2], "--directions", "another model")


def test_non_hdf5_output_is_not_clobbered(run_cli, tmp_path):
    out = tmp_path / "notes.h5"
    out.write_text("precious")
    one_line_error(*run_cli(*BASE, "--x=-1:1:2", "--out", out)[::2], "cannot be read as HDF5", "--overwrite")
    assert out.read_text() == "precious"


def test_nan_loss_is_stored_not_fatal(run_cli, tmp_path):
    out = tmp_path / "s.h5"
    # far points of a huge grid blow the logits up; the loss may become inf/nan there: stored, not fatal
    code, _, err = run_cli(*BASE, "--x=-1e30:1e30:3", "--norm", "none", "--out", out)
    assert code == 0, err
    with h5py.File(out, "r") as f:
        assert f["surfaces/done"][()].all()


def test_help_lists_flags(run_cli):
    code, out, _ = run_cli("surface", "--help")
    assert code == 0
    for flag in ("--x", "--y", "--z", "--directions", "--norm", "--ignore", "--dir-type", "--samples", "--out"):
        assert flag in out


def test_script_entry_point_exists():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert os.path.isfile(os.path.join(root, "scripts", "surface.py"))


def test_plot_flag_draws_what_the_plot_command_draws(run_cli, tmp_path):
    """``--plot`` (surface and interpolate) writes and prints the pictures ``landscape plot`` does."""
    out = tmp_path / "s.h5"
    code, stdout, err = run_cli(*BASE, "--x=-1:1:3", "--y=0:1:2", "--out", out, "--plot")
    assert code == 0, err
    drawn = [ln for ln in stdout.splitlines() if ln.endswith(".png")]
    assert drawn and all(os.path.getsize(p) > 0 for p in drawn)
    for p in drawn:
        os.remove(p)
    code, again, err = run_cli("plot", out)
    assert code == 0, err
    assert again.splitlines() == drawn

    from landscape.zoo.models import MLP

    ends = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        ends.append(tmp_path / f"m{seed}.pt")
        torch.save(MLP(width=8, depth=1).state_dict(), ends[-1])
    path = tmp_path / "p.h5"
    code, stdout, err = run_cli("interpolate", *BASE[1:], "--from", ends[0], "--to", ends[1], "--alpha=0:1:5",
                                "--out", path, "--plot")
    assert code == 0, err
    drawn = [ln for ln in stdout.splitlines() if ln.endswith(".png")]
    assert len(drawn) == 1 and os.path.getsize(drawn[0]) > 0
    os.remove(drawn[0])
    code, again, err = run_cli("plot", path, "--kind", "path")
    assert code == 0 and again.splitlines() == drawn, err
