"""``landscape track`` under the store rules of issue 17: two runs racing on one new ``--out`` (two real
processes, and the link race itself made deterministic in-process), ``/track`` added to a surface file of
another model or ``--samples`` (refused by name, the file unchanged), ``--out`` over a checkpoint of the series,
``--overwrite`` of a file that is not ours."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from tests.faults.test_fault_files import cli, one_line_error, race
from tests.mpi_helpers import ROOT, subprocess_env
from tests.track_models import tiny_data, tiny_model, write_series

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
TINY = ["--model", "tests.track_models:tiny_model", "--data", "tests.track_models:tiny_data", "--loss", "mse",
        "--batch-size", "5", "--no-progress"]
F32 = ["--model", "tests.track_models:tiny_model_f32", "--data", "tests.track_models:tiny_data_f32", "--loss", "mse",
       "--no-progress"]
CLI = [sys.executable, "-m", "landscape.cli"]


def _track(path: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r", locking=False) as f:
        f["track"].visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset)
                              else None)
        out["@top_k"] = np.asarray(f["track"].attrs["top_k"])
    return out


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return write_series(str(tmp_path_factory.mktemp("series")))


def test_two_track_runs_racing_on_one_new_out_never_mix(tmp_path):
    """Run A (--top-k 2, slow) and run B (--top-k 1) start 1 s apart on the same new --out: exactly one gets the
    file, the other is refused in one line, and the file equals a reference run of the winner's command."""
    pattern = os.path.join(os.path.dirname(write_series(str(tmp_path), gd_steps=8, prefix="net.")[0]), "ckpt_*.pt")
    slow = ["track", "--model", "tests.track_models:slow_tiny_model", *TINY[2:], "--checkpoints", pattern,
            "--max-iter", "6", "--metrics", "eigen,update", "--flush-every", "0.2"]
    out = str(tmp_path / "race.h5")
    cmd_a = [*slow, "--top-k", "2", "--out", out]
    cmd_b = [*slow, "--top-k", "1", "--out", out]
    winner = race(cmd_a, cmd_b, 300, {"LANDSCAPE_TEST_SLEEP": "0.05"}, {"LANDSCAPE_TEST_SLEEP": "0.02"})
    state = _track(out)
    ref = str(tmp_path / "ref.h5")
    r = subprocess.run([*CLI, *[ref if x == out else x for x in winner]], cwd=ROOT, capture_output=True, text=True,
                       env=subprocess_env(LANDSCAPE_TEST_SLEEP="0"), timeout=300)
    assert r.returncode == 0, r.stderr
    reference = _track(ref)
    assert sorted(state) == sorted(reference) and state["done"].all()
    for k in reference:
        np.testing.assert_allclose(state[k], reference[k], rtol=1e-9, atol=1e-7 if k == "eigenvectors" else 1e-12,
                                   equal_nan=True, err_msg=k)
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]


def test_a_file_created_at_the_new_out_while_starting_is_not_taken(series, tmp_path, monkeypatch):
    """The link race itself, deterministically: another run creates --out between this run's existence check and
    its creation. This run is refused in one line, the other's file is untouched, no temporary is left."""
    import landscape.track as T
    from landscape.errors import LandscapeError
    from landscape.problem import make_problem
    from landscape.store import atomic_create as real

    out = str(tmp_path / "t.h5")

    def theirs(f):
        f.attrs["who"] = "the other run"

    def racing(path, build, **kw):
        real(path, theirs)  # the other run wins the name first
        return real(path, build, **kw)

    monkeypatch.setattr(T, "atomic_create", racing)
    p = make_problem(tiny_model(), data=tiny_data(), loss="mse", device="cpu")
    with pytest.raises(LandscapeError, match="created by another landscape process"):
        T.run_track(p, series[:2], T.TrackSpec(metrics="eigen", top_k=1, max_iter=4), out, progress=False)
    with h5py.File(out, "r", locking=False) as f:
        assert f.attrs["who"] == "the other run" and "track" not in f
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]


def test_track_added_to_a_surface_of_another_model_or_samples_is_refused(series, tmp_path):
    pattern = os.path.join(os.path.dirname(series[0]), "ckpt_*.pt")
    track = ["track", *F32, "--checkpoints", pattern, "--top-k", "1", "--metrics", "eigen"]
    other = str(tmp_path / "other.pt")
    torch.manual_seed(7)
    torch.save({k: v + 0.1 * torch.randn_like(v) for k, v in torch.load(series[-1], weights_only=True).items()},
               other)
    cases = [(["--checkpoint", other], "model"), (["--checkpoint", series[-1], "--samples", "4"], "--samples")]
    for extra, name in cases:
        surf = str(tmp_path / f"s{len(extra)}.h5")
        code, _, err = cli("surface", *F32, *extra, "--x=-1:1:3", "--out", surf)
        assert code == 0, err
        before = open(surf, "rb").read()
        for flags in ([], ["--overwrite"]):
            code, _, err = cli(*track, *flags, "--out", surf)
            line = one_line_error(code, err, err)
            assert name in line and "/track" in line and "another" in line and "choose another --out" in line, line
            assert open(surf, "rb").read() == before
    surf = str(tmp_path / "mid.h5")  # a surface at any checkpoint of the series is the same run: added
    assert cli("surface", *F32, "--checkpoint", series[1], "--x=-1:1:3", "--out", surf)[0] == 0
    code, _, err = cli(*track, "--out", surf)
    assert code == 0, err
    with h5py.File(surf, "r", locking=False) as f:
        assert f["track/done"][()].all() and "surfaces/train_loss" in f and f.attrs["kind"] == "surface"
    code, _, err = cli(*track, "--overwrite", "--out", surf)  # a new /track, the surface kept
    assert code == 0, err
    with h5py.File(surf, "r", locking=False) as f:
        assert f["track/done"][()].all() and f["surfaces/done"][()].all()


def test_out_over_a_checkpoint_or_a_foreign_file_is_refused(series, tmp_path):
    pattern = os.path.join(os.path.dirname(series[0]), "ckpt_*.pt")
    before = open(series[-1], "rb").read()
    for flags in ([], ["--overwrite"]):
        code, _, err = cli("track", *TINY, "--checkpoints", pattern, *flags, "--out", series[-1])
        line = one_line_error(code, err, err)
        assert "is the --checkpoints of this run" in line, line
    assert open(series[-1], "rb").read() == before
    foreign = str(tmp_path / "model.pt")
    torch.save(tiny_model().state_dict(), foreign)
    before = open(foreign, "rb").read()
    code, _, err = cli("track", *TINY, "--checkpoints", pattern, "--overwrite", "--out", foreign)
    line = one_line_error(code, err, err)
    assert "zip archive" in line and "not a landscape result file" in line, line
    assert open(foreign, "rb").read() == before
