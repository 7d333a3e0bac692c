"""A float64 model through every command (its float32 data cast to float64), and ``--precision fp64``."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from landscape.cli import main
from landscape.store import H5_KW


def mlp64(width: int = 16):
    """The demo MLP in float64 (a user model whose parameters are float64)."""
    from landscape.zoo import MODELS

    torch.manual_seed(0)
    return MODELS["mlp"](width=width).double()


MODEL = ["--model", "tests.test_float64_commands:mlp64", "--data", "zoo:digits", "--samples", "128",
         "--device", "cpu"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("f64")
    assert main(["train", *MODEL[:4], "--samples", "128", "--epochs", "2", "--out-dir", str(d)]) == 0
    state = torch.load(d / "final.pt", weights_only=True)
    assert all(v.dtype == torch.float64 for v in state.values() if v.is_floating_point())
    return d


def _surface(path) -> np.ndarray:
    with h5py.File(path, "r", **H5_KW) as f:
        return f["surfaces/train_loss"][()]


def test_every_command_takes_a_float64_model(checkpoints, tmp_path, capsys):
    ck = ["--checkpoint", str(checkpoints / "final.pt")]
    grid = ["--x=-1:1:4", "--y=-1:1:3", "--no-progress", "--overwrite"]
    runs = {}
    for name, extra in {"auto": [], "k1": ["--points-per-batch", "1"], "k4": ["--points-per-batch", "4"],
                        "fp64": ["--precision", "fp64"], "fp64k4": ["--precision", "fp64", "--points-per-batch", "4"]
                        }.items():
        out = tmp_path / f"{name}.h5"
        assert main(["surface", *MODEL, *ck, *grid, *extra, "--out", str(out)]) == 0, name
        runs[name] = _surface(out)
    assert "one grid point at a time" not in capsys.readouterr().err
    for name, z in runs.items():  # a float64 model: every path in float64, equal to float rounding
        np.testing.assert_allclose(z, runs["k1"], rtol=1e-10, err_msg=name)
    assert main(["surface", *MODEL, *ck, "--x=-1:1:3", "--curvature-map", "--no-progress",
                 "--out", str(tmp_path / "cm.h5")]) == 0
    path = ["--from", str(checkpoints / "init.pt"), "--to", str(checkpoints / "final.pt"), "--alpha=0:1:5",
            "--no-progress"]
    assert main(["interpolate", *MODEL, *path, "--out", str(tmp_path / "p.h5")]) == 0
    assert main(["interpolate", *MODEL, *path, "--precision", "fp64", "--out", str(tmp_path / "p64.h5")]) == 0
    for method in ("lanczos", "power"):
        assert main(["hessian", *MODEL, *ck, "--top-k", "1", "--smallest", "--trace", "--trace-matvecs", "6",
                     "--method", method, "--max-iter", "30", "--out", str(tmp_path / f"h_{method}.h5")]) == 0
    assert main(["sharpness", *MODEL, *ck, "--metrics", "curvature,eps", "--eps-steps", "2", "--trace-matvecs", "4",
                 "--quiet", "--out", str(tmp_path / "s.h5")]) == 0
    assert main(["export", str(tmp_path / "auto.h5"), "--format", "npz"]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "auto.h5")]) == 0  # x = -1:1:4 misses 0
    text = capsys.readouterr().out
    assert "nearest grid point to the centre (" in text and "0.333333, 0)" in text and "at the centre" not in text


def test_fp64_surface_of_a_float32_model(tmp_path):
    """--precision fp64 on a float32 model: a float64 copy is evaluated; the same directions as fp32."""
    base = ["surface", "--model", "zoo:mlp", "--data", "zoo:digits", "--samples", "128", "--device", "cpu",
            "--x=-1:1:5", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "a.h5")]) == 0
    assert main([*base, "--precision", "fp64", "--out", str(tmp_path / "b.h5")]) == 0
    a, b = _surface(tmp_path / "a.h5"), _surface(tmp_path / "b.h5")
    np.testing.assert_allclose(a, b, rtol=1e-5)
    with h5py.File(tmp_path / "a.h5", "r", **H5_KW) as fa, h5py.File(tmp_path / "b.h5", "r", **H5_KW) as fb:
        assert fa["directions/x"].attrs.get("fingerprint", 1) == fb["directions/x"].attrs.get("fingerprint", 1)
    # the precision is part of the file's identity: resuming with another one is refused
    assert main([*base, "--out", str(tmp_path / "a.h5"), "--precision", "fp64"]) != 0
