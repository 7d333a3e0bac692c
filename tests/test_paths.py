"""Interpolation paths, BatchNorm re-estimation, bumps, barrier, trajectory PCA and the plane through three models."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from landscape import params as P
from landscape.paths.analysis import find_bumps, max_rise, path_summary
from landscape.paths.evaluator import evaluate_path, reestimate_bn
from landscape.paths.run import interpolate
from landscape.problem import make_problem


def _problem(bn: bool = False, test: bool = False, seed: int = 0):
    return make_problem("zoo:mlp", data="zoo:synthetic", samples=96, batch_size=40, device="cpu", seed=seed,
                        model_args={"width": 8, "depth": 1, "bn": bn}, test_data="zoo:synthetic" if test else None)


def _perturbed_state(model: torch.nn.Module, seed: int, scale: float = 0.5) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: (v + scale * torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone())
            for k, v in model.state_dict().items()}


def _save_pair(tmp_path, model, seeds=(1, 2)):
    paths = []
    for s in seeds:
        p = str(tmp_path / f"m{s}.pt")
        torch.save(_perturbed_state(model, s), p)
        paths.append(p)
    return paths


def _brute_force(problem, sd0: dict, sd1: dict, alphas, bn: bool):
    """Load (1−α)θ₀ + αθ₁ into a fresh model, optionally re-estimate BN by hand, evaluate with plain loops."""
    from landscape.problem import load_model

    out = {f"{s}_{m}": [] for s in problem.splits for m in ("loss", "acc")}
    for a in alphas:
        net = load_model("zoo:mlp", {"width": 8, "depth": 1, "bn": bn})
        sd = {k: ((1 - a) * sd0[k] + a * sd1[k]) if sd0[k].is_floating_point() else sd0[k] for k in sd0}
        net.load_state_dict(sd)
        if bn:
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.reset_running_stats()
                    m.momentum = None
            net.train()
            with torch.no_grad():
                for x, _ in problem.batches:
                    net(x)
        net.eval()
        for s, batches in problem.splits.items():
            tot, cor, n = 0.0, 0, 0
            with torch.no_grad():
                for x, y in batches:
                    o = net(x)
                    tot += float(torch.nn.functional.cross_entropy(o, y, reduction="sum"))
                    cor += int((o.argmax(1) == y).sum())
                    n += len(y)
            out[f"{s}_loss"].append(tot / n)
            out[f"{s}_acc"].append(cor / n)
    return {k: np.array(v) for k, v in out.items()}


# ---------------------------------------------------------------------------- interpolation
@pytest.mark.parametrize("bn", [False, True])
def test_interpolation_equals_brute_force(tmp_path, bn):
    problem = _problem(bn=bn, test=True)
    p0, p1 = _save_pair(tmp_path, problem.model)
    alphas = np.linspace(-0.5, 1.5, 9)
    res = interpolate(problem, p0, p1, alphas, str(tmp_path / "mli.h5"), progress=False)
    ref = _brute_force(problem, torch.load(p0), torch.load(p1), alphas, bn)
    for k, v in ref.items():
        np.testing.assert_allclose(res.values[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
    assert res.summary["bn_reestimated"] is bn
    # in-memory API gives the same numbers
    mem = evaluate_path(problem, p0, p1, alphas)
    np.testing.assert_allclose(mem["train_loss"], ref["train_loss"], rtol=1e-5, atol=1e-6)


def test_interpolation_file_layout_and_resume(tmp_path):
    problem = _problem(test=True)
    p0, p1 = _save_pair(tmp_path, problem.model)
    out = str(tmp_path / "mli.h5")
    res = interpolate(problem, p0, p1, "-0.5:1.5:11", out, progress=False, chunk_size=3)
    with h5py.File(out, "r") as f:
        assert f.attrs["kind"] == "interpolation"
        g = f["paths/interpolation"]
        assert set(g) == {"alpha", "train_loss", "train_acc", "test_loss", "test_acc", "done"}
        assert g["done"][()].all()
        np.testing.assert_allclose(g["alpha"][()], np.linspace(-0.5, 1.5, 11))
        for key in ("n_bumps", "max_bump", "monotonic", "tolerance", "distance", "relative_distance", "barrier",
                    "bn_reestimated"):
            assert key in g.attrs, key
        assert isinstance(json.loads(g.attrs["bumps"]), list)
        sd0, sd1 = torch.load(p0), torch.load(p1)
        d = np.sqrt(sum(float(((sd1[k] - sd0[k]) ** 2).sum()) for k, _ in problem.model.named_parameters()))
        n0 = np.sqrt(sum(float((sd0[k] ** 2).sum()) for k, _ in problem.model.named_parameters()))
        assert g.attrs["distance"] == pytest.approx(d, rel=1e-6)
        assert g.attrs["relative_distance"] == pytest.approx(d / n0, rel=1e-6)
    # resume: nothing left to do, same numbers; a different --to is refused
    again = interpolate(problem, p0, p1, "-0.5:1.5:11", out, progress=False)
    assert again.computed == 0
    np.testing.assert_array_equal(again.values["train_loss"], res.values["train_loss"])
    from landscape.errors import ResumeMismatch

    with pytest.raises(ResumeMismatch):
        interpolate(problem, p0, p0, "-0.5:1.5:11", out, progress=False)
    # a half-done file is finished
    with h5py.File(out, "r+") as f:
        f["paths/interpolation/done"][5:] = 0
    part = interpolate(problem, p0, p1, "-0.5:1.5:11", out, progress=False)
    assert part.computed == 6
    np.testing.assert_allclose(part.values["train_loss"], res.values["train_loss"], rtol=1e-12)


def test_bn_reestimation_matches_batch_statistics():
    problem = _problem(bn=True)
    model = problem.model
    with torch.no_grad():
        for _, v in P.parameters(model).items():
            v.add_(0.3 * torch.randn_like(v))
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(7.0)
    pre = torch.nn.Sequential(*list(model.children())[:2])  # Flatten, Linear: the BN layer's input
    means, vars_ = [], []
    with torch.no_grad():
        for x, _ in problem.batches:
            h = pre(x)
            means.append(h.mean(0))
            vars_.append(h.var(0, unbiased=True))
    assert reestimate_bn(model, problem.batches) == 1
    torch.testing.assert_close(bn.running_mean, torch.stack(means).mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, torch.stack(vars_).mean(0), rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.1 and not bn.training and not model.training


def test_no_bn_reestimate_flag_and_cli(tmp_path, run_cli):
    problem = _problem(bn=True)
    p0, p1 = _save_pair(tmp_path, problem.model)
    common = ["--model", "zoo:mlp", "--model-args", "width=8,depth=1,bn=true", "--data", "zoo:synthetic",
              "--samples", "96", "--batch-size", "40", "--device", "cpu", "--from", p0, "--to", p1,
              "--alpha=0:1:5", "--no-progress"]
    code, out, err = run_cli("interpolate", *common, "--out", str(tmp_path / "on.h5"))
    assert code == 0, err
    assert "verdict:" in out and "re-estimated" in out and "re-estimated" in err
    code, out, err = run_cli("interpolate", *common, "--no-bn-reestimate", "--out", str(tmp_path / "off.h5"))
    assert code == 0, err
    assert "NOT re-estimated" in out
    with h5py.File(tmp_path / "on.h5") as f_on, h5py.File(tmp_path / "off.h5") as f_off:
        assert bool(f_on["paths/interpolation"].attrs["bn_reestimated"])
        assert not bool(f_off["paths/interpolation"].attrs["bn_reestimated"])
        on, off = f_on["paths/interpolation/train_loss"][()], f_off["paths/interpolation/train_loss"][()]
    # interpolated running statistics are wrong in the middle of the path
    assert not np.allclose(on[1:-1], off[1:-1])


# ---------------------------------------------------------------------------- bumps
A = np.linspace(0, 1, 11)


def test_bumps_monotone_and_plateaus():
    assert find_bumps(A, np.linspace(2, 0, 11)) == []
    plateau = np.array([2, 2, 2, 1.5, 1.5, 1.5, 1, 1, 1, 0.5, 0.5])
    assert find_bumps(A, plateau) == [] and max_rise(plateau) == 0.0
    s = path_summary(A, plateau)
    assert s["monotonic"] and s["n_bumps"] == 0 and s["max_bump"] == 0.0


def test_one_bump():
    loss = np.array([2.0, 1.5, 1.0, 1.2, 1.6, 1.4, 0.9, 0.7, 0.5, 0.4, 0.3])
    (b,) = find_bumps(A, loss)
    assert (b.start, b.peak) == pytest.approx((0.2, 0.4)) and b.height == pytest.approx(0.6) and b.returns
    s = path_summary(A, loss)
    assert not s["monotonic"] and s["n_bumps"] == 1 and s["max_bump"] == pytest.approx(0.6)
    # a flat top counts once, peaking where the plateau starts
    top = np.array([2.0, 1.0, 1.5, 1.5, 1.5, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    (b,) = find_bumps(A, top)
    assert b.peak == pytest.approx(0.2) and b.height == pytest.approx(0.5)


def test_bump_that_never_comes_back_down():
    loss = np.array([2.0, 1.0, 0.5, 0.6, 0.8, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
    (b,) = find_bumps(A, loss)
    assert not b.returns and b.start == pytest.approx(0.2) and b.peak == pytest.approx(1.0)
    assert b.height == pytest.approx(1.0)  # counted up to its peak
    s = path_summary(A, loss)
    assert s["bump_returns"] == [False] and s["max_bump"] == pytest.approx(1.0)


def test_noise_below_tolerance_and_two_bumps():
    rng = np.random.default_rng(0)
    noisy = np.linspace(2, 0, 11) + rng.uniform(-2e-4, 2e-4, 11)
    noisy[5] = noisy[4] + 5e-4  # a rise below the tolerance
    assert find_bumps(A, noisy, 1e-3) == []
    s = path_summary(A, noisy, 1e-3)
    assert s["monotonic"] and 0 < s["max_bump"] <= 1e-3
    two = np.array([2.0, 1.0, 1.5, 0.8, 0.7, 1.1, 0.5, 0.4, 0.3, 0.2, 0.1])
    bumps = find_bumps(A, two)
    assert [round(b.height, 6) for b in bumps] == [0.5, 0.4]
    assert [b.peak for b in bumps] == pytest.approx([0.2, 0.5])
    assert path_summary(A, two)["max_bump"] == pytest.approx(max_rise(two)) == pytest.approx(0.5)
    # nested: the largest rise is from the first valley to the second, higher peak
    nested = np.array([1.0, 1.5, 1.2, 2.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.0])
    bumps = find_bumps(A, nested)
    assert max(b.height for b in bumps) == pytest.approx(max_rise(nested)) == pytest.approx(1.0)


def test_verdict_uses_the_segment_and_barrier():
    alpha = np.linspace(-0.5, 1.5, 21)
    loss = (alpha - 1.0) ** 2 + 0.3 * np.exp(-((alpha - 0.5) ** 2) / 0.01)  # a bump at 0.5, rising past α = 1
    s = path_summary(alpha, loss)
    assert s["n_bumps"] == 1 and s["bumps"][0][1] == pytest.approx(0.5) and s["verdict_window"] == [0.0, 1.0]
    # two minima at 0 and 1 with a barrier of 1 between them
    two = np.sin(np.pi * alpha) ** 2 * (alpha >= 0) * (alpha <= 1) + 0.1
    assert path_summary(alpha, two)["barrier"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------- PCA
def _fake_trajectory(tmp_path, model, n=5):
    final = {k: v.clone() for k, v in model.state_dict().items()}
    files = []
    g = torch.Generator().manual_seed(3)
    for t in range(n):
        sd = {k: (v + (n - t) * 0.1 * torch.randn(v.shape, generator=g)) if v.is_floating_point() else v
              for k, v in final.items()}
        p = str(tmp_path / f"ckpt_{t * 10:05d}.pt")
        torch.save(sd, p)
        files.append(p)
    fp = str(tmp_path / "final.pt")
    torch.save(final, fp)
    return files, fp


def test_pca_directions_equal_numpy_svd(tmp_path):
    from landscape.directions.pca import pca_directions
    from landscape.surface import SurfaceSpec

    problem = _problem()
    files, _ = _fake_trajectory(tmp_path, problem.model)
    problem.info["checkpoint"] = "final (in memory)"
    spec = SurfaceSpec(x="-1:1:3", y="-1:1:3", directions="pca", trajectory=str(tmp_path / "ckpt_*.pt"))
    dirs = pca_directions(problem, spec, 2)
    names = list(P.parameters(problem.model))
    final = np.concatenate([problem.model.state_dict()[k].numpy().ravel() for k in names]).astype(np.float64)
    M = np.stack([np.concatenate([torch.load(f)[k].numpy().ravel() for k in names]).astype(np.float64) - final
                  for f in files])
    _, S, Vt = np.linalg.svd(M, full_matrices=False)
    coords, attrs = dirs.extras["trajectory/coords"]
    for i in range(2):
        v = P.flatten(dirs.vectors[i]).double().numpy()
        assert abs(abs(v @ Vt[i]) - 1) < 1e-5 and abs(np.linalg.norm(v) - 1) < 1e-5
        np.testing.assert_allclose(coords[:, i], M @ v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(attrs["explained_variance"], (S**2 / (S**2).sum())[:2], rtol=1e-6)
    assert coords[0, 0] < 0 and attrs["centered"] is False
    assert json.loads(attrs["checkpoints"]) == files
    # with as many components as checkpoints the projections reproduce every checkpoint exactly
    full = pca_directions(problem, spec, 5)
    for t, f in enumerate(files):
        coeffs = [float(P.flatten(v).double() @ torch.from_numpy(M[t])) for v in full.vectors]
        rebuilt = P.combine(full.center, full.vectors, coeffs)
        for k in names:
            torch.testing.assert_close(rebuilt[k], torch.load(f)[k], rtol=1e-4, atol=1e-4)


def test_pca_surface_and_trajectory_in_file(tmp_path, run_cli):
    problem = _problem()
    files, final = _fake_trajectory(tmp_path, problem.model, n=4)
    out = str(tmp_path / "pca.h5")
    code, _, err = run_cli("surface", "--model", "zoo:mlp", "--model-args", "width=8,depth=1", "--data",
                           "zoo:synthetic", "--samples", "96", "--device", "cpu", "--checkpoint", final,
                           "--directions", "pca", "--trajectory", str(tmp_path / "ckpt_*.pt"),
                           "--x=-1:1:3", "--y=-1:1:3", "--out", out, "--no-progress")
    assert code == 0, err
    assert "explained variance" in err
    from landscape.results import open_result

    r = open_result(out)
    assert r.trajectory["coords"].shape == (4, 2)
    assert len(r.trajectory["explained_variance"]) == 2
    assert r.directions_meta["x"]["kind"] == "pca"


# ---------------------------------------------------------------------------- planes
def _spec(**kw):
    from landscape.surface import SurfaceSpec

    return SurfaceSpec(**kw)


def test_plane_through_three_models(tmp_path):
    from landscape.directions.plane import plane_directions
    from landscape.evaluate import PointEvaluator, evaluate_batches

    problem = _problem()
    paths = _save_pair(tmp_path, problem.model, seeds=(1, 2, 3))
    dirs = plane_directions(problem, _spec(x="-1:2:4", y="-1:2:4", plane=paths), 2)
    coords = dirs.extras["plane/coords"][0]
    own = []
    for p in paths:
        problem.model.load_state_dict(torch.load(p))
        own.append(evaluate_batches(problem, problem.batches)[0])
    ev = PointEvaluator(problem, dirs)
    got = ev(coords)["train_loss"]
    np.testing.assert_allclose(got, own, rtol=1e-5)
    assert abs(P.dot(dirs.vectors[0], dirs.vectors[1])) < 1e-4 * P.norm(dirs.vectors[0]) * P.norm(dirs.vectors[1])


def test_interp_directions_contain_the_path(tmp_path):
    from landscape.directions.interp import interp_directions

    problem = _problem()
    p0, p1 = _save_pair(tmp_path, problem.model)
    dirs = interp_directions(problem, _spec(x="0:1:3", y="-1:1:3", from_ckpt=p0, to_ckpt=p1, seed=4), 2)
    sd0, sd1 = torch.load(p0), torch.load(p1)
    at1 = P.combine(dirs.center, dirs.vectors, [1.0, 0.0])
    for k in dirs.center:
        torch.testing.assert_close(dirs.center[k], sd0[k])
        torch.testing.assert_close(at1[k], sd1[k], rtol=1e-5, atol=1e-6)
    d1, d2 = dirs.vectors
    assert abs(P.dot(d1, d2)) < 1e-4 * P.norm(d1) * P.norm(d2)
    assert P.norm(d2) == pytest.approx(P.norm(d1), rel=1e-5)
    # the x axis of the surface is the interpolation path
    from landscape.surface import SurfaceSpec, run_surface

    out = str(tmp_path / "plane.h5")
    run_surface(problem, SurfaceSpec(x="0:1:3", y="0:0:1", directions="interp", from_ckpt=p0, to_ckpt=p1), out,
                progress=False)
    with h5py.File(out) as f:
        surf = f["surfaces/train_loss"][()][:, 0]
    mem = evaluate_path(_problem(), p0, p1, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(surf, mem["train_loss"], rtol=1e-5)


def test_bad_inputs(tmp_path):
    from landscape.directions.pca import pca_directions
    from landscape.directions.plane import plane_directions
    from landscape.errors import LandscapeError

    problem = _problem()
    p0, p1 = _save_pair(tmp_path, problem.model)
    with pytest.raises(LandscapeError, match="one line"):
        torch.save({k: 2 * torch.load(p1)[k] - torch.load(p0)[k] for k in torch.load(p0)}, tmp_path / "c.pt")
        plane_directions(problem, _spec(plane=[p0, p1, str(tmp_path / "c.pt")]), 2)
    with pytest.raises(LandscapeError, match="matches no file"):
        pca_directions(problem, _spec(directions="pca", trajectory=str(tmp_path / "nothing_*.pt")), 2)
    other = make_problem("zoo:mlp", data="zoo:synthetic", samples=32, device="cpu", model_args={"width": 4})
    with pytest.raises(LandscapeError, match="does not match the model"):
        evaluate_path(other, p0, p1, [0.0])


# ---------------------------------------------------------------------------- the plot marks the verdict's bumps
def _marked_bumps(path: str) -> tuple[list[float], list[str]]:
    """The peaks the path figure marks (its "v" markers) and the heights it writes next to them."""
    import matplotlib

    matplotlib.use("Agg")
    from landscape.plot.path import path_figure
    from landscape.results import open_result

    fig = path_figure(open_result(path))
    ax = fig.axes[0]
    peaks = [float(line.get_xdata()[0]) for line in ax.lines if line.get_marker() == "v"]
    heights = [t.get_text() for t in ax.texts if t.get_text().startswith("Δ=")]
    return peaks, heights


@pytest.mark.parametrize("stored", [True, False], ids=["verdict-in-file", "found-again"])
def test_plot_marks_the_bumps_the_verdict_counts(tmp_path, stored):
    from landscape.store import set_attrs
    from tests.test_results import write_ours

    alpha = np.linspace(-0.5, 1.5, 81)
    rng = np.random.default_rng(3)
    loss = 2.0 * (1 - np.clip(alpha, None, 1.0)) ** 2 + 0.05
    loss = loss + rng.uniform(-3e-4, 3e-4, len(alpha))  # wiggles below the tolerance: no bump
    loss[(alpha > 0.9) & (alpha < 1.5)] = 0.05 + rng.uniform(-3e-4, 3e-4, int(((alpha > 0.9) & (alpha < 1.5)).sum()))
    loss += 0.2 * np.exp(-((alpha - 0.45) / 0.05) ** 2)  # one real bump inside [0, 1]
    loss += 0.2 * np.exp(-((alpha - 1.3) / 0.05) ** 2)  # a rise beyond θ₁: outside the verdict's window
    p = write_ours(str(tmp_path / "path.h5"), ndim=0, paths=True)
    summary = path_summary(alpha, loss, 1e-3)
    with h5py.File(p, "r+") as f:
        g = f["paths/interpolation"]
        for k in ("alpha", "train_loss", "test_loss", "train_acc", "done"):
            del g[k]
        g.create_dataset("alpha", data=alpha)
        g.create_dataset("train_loss", data=loss)
        g.create_dataset("done", data=np.ones(len(alpha), np.uint8))
        for k in list(g.attrs):
            del g.attrs[k]
        if stored:
            set_attrs(g, summary)
    peaks, heights = _marked_bumps(p)
    assert summary["n_bumps"] == 1 and summary["bumps"][0][1] == pytest.approx(0.45, abs=0.03)
    assert peaks == pytest.approx([b[1] for b in summary["bumps"]])
    assert heights == [f"Δ={b[2]:.3g}" for b in summary["bumps"]]
