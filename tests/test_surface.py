"""Surfaces against brute force and closed forms; the HDF5 schema; resume."""

from __future__ import annotations

import copy
import json

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from landscape import params as P
from landscape.errors import LandscapeError
from landscape.problem import make_problem
from landscape.surface import SurfaceSpec, run_surface


def brute_force(problem, dirs_file, x, y):
    """Load θ + x·d₁ + y·d₂ into a fresh copy of the model and evaluate, point by point."""
    with h5py.File(dirs_file, "r") as f:
        d1 = {k: torch.from_numpy(f["directions/x"][k][()]) for k in f["directions/x"]}
        d2 = {k: torch.from_numpy(f["directions/y"][k][()]) for k in f["directions/y"]}
    theta = P.clone(P.parameters(problem.model))
    Z = np.zeros((len(x), len(y)))
    A = np.zeros((len(x), len(y)))
    X = torch.cat([b[0] for b in problem.batches])
    Y = torch.cat([b[1] for b in problem.batches])
    for i, a in enumerate(x):
        for j, b in enumerate(y):
            net = copy.deepcopy(problem.model)
            sd = net.state_dict()
            for k in theta:
                sd[k] = theta[k] + float(a) * d1[k] + float(b) * d2[k]
            net.load_state_dict(sd)
            with torch.no_grad():
                out = net.eval()(X)
                Z[i, j] = nn.functional.cross_entropy(out, Y).item()
                A[i, j] = (out.argmax(1) == Y).float().mean().item()
    return Z, A


def test_surface_equals_brute_force_on_non_square_grid(tmp_path, tiny_problem):
    out = tmp_path / "s.h5"
    res = run_surface(tiny_problem, SurfaceSpec(x="-1:1:5", y="0:0.5:3", seed=2), str(out), progress=False)
    assert res.shape == (5, 3) and res.done == 15
    with h5py.File(out, "r") as f:
        x, y = f["coords/x"][()], f["coords/y"][()]
        Z, A = f["surfaces/train_loss"][()], f["surfaces/train_acc"][()]
        assert f["surfaces/done"][()].all()
    Zb, Ab = brute_force(tiny_problem, out, x, y)
    np.testing.assert_allclose(Z, Zb, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(A, Ab, atol=1e-9)
    # the model is left at the centre
    assert Z[2, 0] == pytest.approx(Zb[2, 0])


def test_quadratic_surface_closed_form(tmp_path):
    torch.manual_seed(0)
    n, dim = 64, 5
    X = torch.randn(n, dim, dtype=torch.float64)
    y = torch.randn(n, 1, dtype=torch.float64)
    net = nn.Linear(dim, 1, bias=False).double()
    p = make_problem(net, data=(X, y), loss="mse", batch_size=24, device="cpu")
    out = tmp_path / "q.h5"
    run_surface(p, SurfaceSpec(x="-2:1:7", y="-1:1:4", norm="none", seed=1), str(out), progress=False)
    with h5py.File(out, "r") as f:
        xs, ys, Z = f["coords/x"][()], f["coords/y"][()], f["surfaces/train_loss"][()]
        d1 = torch.from_numpy(f["directions/x/weight"][()]).double()
        d2 = torch.from_numpy(f["directions/y/weight"][()]).double()
    w = net.weight.detach()
    r, u, v = (X @ w.T - y).squeeze(1), (X @ d1.T).squeeze(1), (X @ d2.T).squeeze(1)
    for i, a in enumerate(xs):
        for j, b in enumerate(ys):
            # L = mean((r + a u + b v)²), expanded
            want = (r.pow(2).mean() + 2 * a * (r * u).mean() + 2 * b * (r * v).mean() + a * a * u.pow(2).mean()
                    + b * b * v.pow(2).mean() + 2 * a * b * (u * v).mean())
            assert Z[i, j] == pytest.approx(float(want), rel=1e-5)


def test_1d_and_3d_shapes(tmp_path, tiny_problem):
    r1 = run_surface(tiny_problem, SurfaceSpec(x="-1:1:4"), str(tmp_path / "a.h5"), progress=False)
    r3 = run_surface(tiny_problem, SurfaceSpec(x="-1:1:3", y="-1:1:2", z="0:1:2"), str(tmp_path / "b.h5"),
                     progress=False)
    assert r1.shape == (4,) and r3.shape == (3, 2, 2)
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert f["surfaces/train_loss"].shape == (3, 2, 2)
        assert set(f["directions"]) == {"x", "y", "z"}


def test_schema_round_trip(tmp_path, tiny_problem):
    out = tmp_path / "s.h5"
    run_surface(tiny_problem, SurfaceSpec(x="-1:1:3", y="-1:1:3", seed=5), str(out), command="landscape surface ...",
                progress=False)
    with h5py.File(out, "r") as f:
        a = f.attrs
        assert a["format"] == "landscape" and a["format_version"] == 1 and a["kind"] == "surface"
        assert a["command"] == "landscape surface ..."
        cfg = json.loads(a["config"])
        assert cfg["seed"] == 5 and cfg["norm"] == "filter" and cfg["x"] == "-1:1:3" and cfg["model"] == "zoo:mlp"
        assert len(a["model_fingerprint"]) == 64 and len(a["data_fingerprint"]) == 64
        assert f["directions/x"].attrs["kind"] == "random" and f["directions/x"].attrs["seed"] == 5
        assert f["coords/x"].dtype == np.float64 and f["directions/x/1.weight"].dtype == np.float32
        assert f["surfaces/done"].dtype == np.uint8


def test_resume_after_interruption_equals_uninterrupted(tmp_path, tiny_problem, monkeypatch):
    spec = SurfaceSpec(x="-1:1:4", y="-1:1:3", seed=1, flush_every=0.0, chunk_size=1, points_per_batch=1)
    full = tmp_path / "full.h5"
    run_surface(tiny_problem, spec, str(full), progress=False)

    from landscape import evaluate

    calls = {"n": 0}
    real = evaluate.PointEvaluator.__call__

    def flaky(self, coords):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(self, coords)

    part = tmp_path / "part.h5"
    monkeypatch.setattr(evaluate.PointEvaluator, "__call__", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_surface(tiny_problem, spec, str(part), progress=False)
    with h5py.File(part, "r") as f:
        assert f["surfaces/done"][()].sum() == 4
        assert np.isnan(f["surfaces/train_loss"][()]).sum() == 12 - 4
    monkeypatch.setattr(evaluate.PointEvaluator, "__call__", real)
    res = run_surface(tiny_problem, spec, str(part), progress=False)
    assert res.computed == 8 and res.done == 12
    with h5py.File(full, "r") as f, h5py.File(part, "r") as g:
        np.testing.assert_allclose(f["surfaces/train_loss"][()], g["surfaces/train_loss"][()], rtol=1e-6)
        for k in f["directions/x"]:
            assert np.array_equal(f["directions/x"][k][()], g["directions/x"][k][()])


def test_resume_refuses_other_grid_and_overwrite_replaces(tmp_path, tiny_problem):
    out = str(tmp_path / "s.h5")
    run_surface(tiny_problem, SurfaceSpec(x="-1:1:3"), out, progress=False)
    with pytest.raises(LandscapeError, match="--x: file has -1:1:3, this run has -1:1:5"):
        run_surface(tiny_problem, SurfaceSpec(x="-1:1:5"), out, progress=False)
    res = run_surface(tiny_problem, SurfaceSpec(x="-1:1:5"), out, progress=False, overwrite=True)
    assert res.shape == (5,)


def test_directions_reused_from_file(tmp_path, tiny_problem):
    a = str(tmp_path / "a.h5")
    run_surface(tiny_problem, SurfaceSpec(x="-1:1:3", y="-1:1:3", seed=11), a, progress=False)
    b = str(tmp_path / "b.h5")
    run_surface(tiny_problem, SurfaceSpec(x="-1:1:3", y="-1:1:3", directions=a), b, progress=False)
    with h5py.File(a, "r") as f, h5py.File(b, "r") as g:
        np.testing.assert_array_equal(f["surfaces/train_loss"][()], g["surfaces/train_loss"][()])
    other = make_problem("zoo:mlp", data="zoo:synthetic", samples=32, device="cpu", model_args={"width": 5})
    with pytest.raises(LandscapeError, match="made for another model"):
        run_surface(other, SurfaceSpec(x="-1:1:3", directions=a), str(tmp_path / "c.h5"), progress=False)


def test_test_split_surfaces(tmp_path):
    p = make_problem("zoo:mlp", data="zoo:synthetic:train", test_data="zoo:synthetic:test", device="cpu")
    out = tmp_path / "s.h5"
    run_surface(p, SurfaceSpec(x="-1:1:3"), str(out), progress=False)
    with h5py.File(out, "r") as f:
        assert {"train_loss", "train_acc", "test_loss", "test_acc", "done"} <= set(f["surfaces"])
        assert not np.allclose(f["surfaces/train_loss"][()], f["surfaces/test_loss"][()])


def test_samples_are_recorded_and_reproduce_the_surface(tmp_path):
    """--samples: the evaluated examples' indices are in the file, and evaluating exactly them gives its values."""
    from landscape.problem import load_data

    p = make_problem("zoo:mlp", data="zoo:synthetic", samples=24, seed=3, device="cpu")
    out = tmp_path / "s.h5"
    run_surface(p, SurfaceSpec(x="-1:1:3", seed=1), str(out), progress=False)
    X, Y = load_data("zoo:synthetic", "--data")
    with h5py.File(out, "r") as f:
        idx = f["samples/train"][()]
        assert f["samples/train"].attrs["of"] == len(X) and f["samples/train"].attrs["seed"] == 3
        loss = f["surfaces/train_loss"][()]
    assert len(idx) == 24 and len(np.unique(idx)) == 24 and np.all(np.diff(idx) > 0)
    same = make_problem(p.model, data=(X[idx], Y[idx]), device="cpu")
    run_surface(same, SurfaceSpec(x="-1:1:3", seed=1), str(tmp_path / "t.h5"), progress=False)
    with h5py.File(tmp_path / "t.h5", "r") as f:
        np.testing.assert_allclose(f["surfaces/train_loss"][()], loss, rtol=1e-6)
    # a run on every example records no sample
    run_surface(make_problem("zoo:mlp", data="zoo:synthetic", device="cpu"), SurfaceSpec(x="-1:1:3"),
                str(tmp_path / "all.h5"), progress=False)
    with h5py.File(tmp_path / "all.h5", "r") as f:
        assert "samples" not in f


def test_precision_is_part_of_the_resume_identity(tmp_path, tiny_problem):
    out = str(tmp_path / "s.h5")
    run_surface(tiny_problem, SurfaceSpec(x="-1:1:3", precision="bf16"), out, progress=False)
    with pytest.raises(LandscapeError, match="--precision: file has \"bf16\", this run has \"fp32\""):
        run_surface(tiny_problem, SurfaceSpec(x="-1:1:3"), out, progress=False)


def test_info_shows_the_samples(tmp_path, run_cli):
    out = str(tmp_path / "s.h5")
    code, _, err = run_cli("surface", "--model", "zoo:mlp", "--data", "zoo:synthetic", "--samples", "24",
                           "--x=-1:1:3", "--no-progress", "--out", out)
    assert code == 0, err
    code, text, _ = run_cli("info", out)
    assert code == 0
    assert "train samples: 24 of " in text and "indices in /samples/train" in text
    assert "other groups" not in text
