"""``landscape track`` and ``hessian --operator``: every quantity against dense float64 references on a tiny model
(random weights, a few GD steps and a trained minimum with loss ≤ 1e-4), resume and refusals, plots."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import torch
from torch.func import functional_call

from landscape import curvature as C
from landscape.curvature._base import generator, rademacher
from landscape.curvature.fisher import per_example_loss
from landscape.problem import make_problem
from landscape.track import TrackSpec, checkpoint_series, negative_mass, run_track, subspace_overlap
from tests.curvature_models import IGNORE_JIT_SCRIPT, all_data, dense_ggn, dense_hessian, flat, named, unflat
from tests.track_models import tiny_data, tiny_labels, tiny_model, write_series

pytestmark = [pytest.mark.usefixtures("one_thread"), IGNORE_JIT_SCRIPT]
MODEL = ["--model", "tests.track_models:tiny_model", "--data", "tests.track_models:tiny_data", "--loss", "mse"]


def tiny_problem(loss: str = "mse"):
    return make_problem(tiny_model(), data=tiny_data() if loss == "mse" else tiny_labels(), loss=loss,
                        batch_size=5, device="cpu")


def load_into(problem, path):
    problem.model.load_state_dict(torch.load(path, weights_only=True))


def dense_fisher(problem) -> torch.Tensor:
    params = named(problem)
    buffers = dict(problem.model.named_buffers())
    X, Y = all_data(problem)
    rows = []
    for x, y in zip(X, Y):
        def li(theta, x=x, y=y):
            out = functional_call(problem.model, {**buffers, **unflat(theta, params)}, (x[None],))
            return per_example_loss(problem.loss, out, y[None])[0]
        rows.append(torch.func.grad(li)(flat(params)))
    G = torch.stack(rows)
    return G.T @ G / len(X)


def slq_reference(A: torch.Tensor, runs: int, seed: int, grid: np.ndarray | None = None, sigma: float | None = None,
                  eps: float = 0.0):
    """What SLQ with steps = dim gives for the start vectors it draws: exact quadrature of the dense spectrum."""
    lam, V = torch.linalg.eigh(A)
    gen = generator(seed)
    weights = []
    for _ in range(runs):
        v = rademacher(A.shape[0], gen)
        weights.append(((V.T @ (v / v.norm())) ** 2).numpy())
    lam = lam.numpy()
    W = np.stack(weights)
    cut = -eps * np.abs(lam).max()
    neg = float((W[:, lam < cut]).sum() / runs)
    dens = None
    if grid is not None:
        dens = C.gaussian_density(np.tile(lam, (runs, 1)), W, grid, sigma)
    return neg, dens


# ------------------------------------------------------------------------------------------- operators
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_empirical_fisher_matches_per_example_gradients(loss):
    prob = tiny_problem(loss)
    F = C.make_operator(prob, "fisher").to_dense()
    ref = dense_fisher(prob)
    assert torch.allclose(F, ref, rtol=1e-10, atol=1e-12 * float(ref.abs().max()))
    assert float(torch.linalg.eigvalsh(F)[0]) >= -1e-12  # PSD


@pytest.mark.parametrize("operator", ["ggn", "fisher"])
def test_hessian_command_operator_topk_and_density_match_dense(operator, run_cli, tmp_path):
    """`landscape hessian --operator ggn|fisher`: top-k (≤ 1e-6 relative) and the SLQ density (same start vectors)
    against the dense float64 matrix, at random weights and at a trained minimum."""
    paths = write_series(str(tmp_path))
    for ck in (paths[0], paths[-1]):
        out = str(tmp_path / f"{operator}_{os.path.basename(ck)}.h5")
        prob = tiny_problem()
        load_into(prob, ck)
        A = dense_ggn(prob) if operator == "ggn" else dense_fisher(prob)
        dim = A.shape[0]
        code, stdout, err = run_cli("hessian", *MODEL, "--checkpoint", ck, "--operator", operator, "--top-k", "3",
                                    "--tol", "1e-12", "--max-iter", str(dim), "--smallest", "--density",
                                    "--density-runs", "2", "--density-steps", str(dim), "--out", out)
        assert code == 0, err
        assert f"/curvature/{operator}" in stdout
        with h5py.File(out, "r") as f:
            g = f[f"curvature/{operator}"]
            eig = g["eigenvalues"][()]
            grid, dens = g["density/grid"][()], g["density/values"][()]
            sigma = float(g["density"].attrs["sigma"])
            assert "eigenvalues" not in f["curvature"]  # the Hessian's place is left alone
        lam = torch.linalg.eigvalsh(A).numpy()[::-1]
        np.testing.assert_allclose(eig, lam[:3], rtol=1e-6, atol=1e-10 * lam[0])
        _, ref = slq_reference(A, runs=2, seed=0, grid=grid, sigma=sigma)
        np.testing.assert_allclose(dens, ref, rtol=1e-6, atol=1e-6 * ref.max())


def test_hessian_operator_ggn_differs_from_hessian_and_both_live_in_one_file(run_cli, tmp_path):
    paths = write_series(str(tmp_path))
    out = str(tmp_path / "both.h5")
    for op in ("hessian", "ggn"):
        assert run_cli("hessian", *MODEL, "--checkpoint", paths[0], "--operator", op, "--top-k", "2", "--density",
                       "--out", out)[0] == 0
    from landscape.plot.spectrum import has_spectrum, other_spectra
    from landscape.results import open_result

    r = open_result(out)
    assert has_spectrum(r) and list(other_spectra(r)) == ["ggn"]
    assert abs(r.curvature["eigenvalues"][0] - r.curvature["ggn"]["eigenvalues"][0]) > 1e-6  # tanh: H ≠ GGN
    code, stdout, _ = run_cli("plot", out, "--kind", "density")
    assert code == 0 and os.path.getsize(stdout.split()[0]) > 0


# ------------------------------------------------------------------------------------------- quantities
@pytest.fixture(scope="module")
def series(tmp_path_factory):
    d = tmp_path_factory.mktemp("series")
    return write_series(str(d))


@pytest.fixture(scope="module")
def tracked(series, tmp_path_factory):
    prob = tiny_problem()
    dim = sum(p.numel() for p in prob.model.parameters())
    spec = TrackSpec(top_k=3, lr=0.05, tol=1e-12, max_iter=dim, trace_matvecs=3 * dim, density_runs=2,
                     density_steps=dim, negative_eps=1e-6)
    out = str(tmp_path_factory.mktemp("track") / "t.h5")
    res = run_track(prob, os.path.join(os.path.dirname(series[0]), "ckpt_*.pt"), spec, out, progress=False)
    return res, spec


@pytest.mark.parametrize("i", [0, 1, 4])  # random weights, after one GD step, the trained minimum
def test_each_quantity_matches_dense_float64(i, series, tracked):
    res, spec = tracked
    v = res.values
    assert res.steps.tolist() == [0, 1, 2, 3, 1000]
    prob = tiny_problem()
    load_into(prob, series[i])
    H = dense_hessian(prob)
    lam, V = torch.linalg.eigh(H)
    top = V[:, -3:].flip(1)
    theta = flat(named(prob))
    X, Y = all_data(prob)
    g = torch.func.grad(lambda t: prob.loss_sum(functional_call(prob.model, unflat(t, named(prob)), (X,)), Y)
                        / len(X))(theta)
    with torch.no_grad():
        loss = float(prob.loss_sum(prob.model(X), Y)) / len(X)
    np.testing.assert_allclose(v["train_loss"][i], loss, rtol=1e-12)
    if i == 4:
        assert v["train_loss"][i] <= 1e-4
    np.testing.assert_allclose(v["eigenvalues"][i], lam.numpy()[::-1][:3], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(v["lambda_min"][i], float(lam[0]), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(v["eos_ratio"][i], 0.05 * float(lam[-1]) / 2, rtol=1e-8)
    np.testing.assert_allclose(v["trace"][i], float(lam.sum()), rtol=1e-8, atol=1e-10)
    # gradient in the top-k eigenspace (Gur-Ari et al.)
    ref_ov = float(((top.T @ g) ** 2).sum() / (g @ g))
    np.testing.assert_allclose(v["grad_overlap"][i], ref_ov, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v["grad_norm"][i], float(g.norm()), rtol=1e-10)
    # negative spectral mass: the same start vectors, exact quadrature of the dense spectrum
    ref_neg, _ = slq_reference(H, runs=2, seed=0, eps=1e-6)
    np.testing.assert_allclose(v["negative_mass"][i], ref_neg, atol=1e-8)
    # pair quantities with the next checkpoint
    nxt = tiny_problem()
    load_into(nxt, series[i + 1] if i + 1 < len(series) else series[i])
    if i + 1 < len(series):
        u = flat(named(nxt)) - theta
        np.testing.assert_allclose(v["update_sharpness"][i], float(u @ H @ u / (u @ u)), rtol=1e-8)
        np.testing.assert_allclose(v["update_grad_corr"][i], float(g @ u), rtol=1e-8)
        np.testing.assert_allclose(v["update_cosine"][i], float(g @ u / (g.norm() * u.norm())), rtol=1e-8)
        lam2, V2 = torch.linalg.eigh(dense_hessian(nxt))
        top2 = V2[:, -3:]
        ref_sub = float(((top.T @ top2) ** 2).sum() / 3)
        np.testing.assert_allclose(v["subspace_overlap"][i], ref_sub, rtol=1e-5, atol=1e-6)
    else:
        assert np.isnan(v["update_sharpness"][i]) and np.isnan(v["subspace_overlap"][i])


def test_gradient_descent_step_has_directional_sharpness_of_its_gradient(tracked):
    """From step 0 to 1 the update is −η g: cos = −1 and uᵀHu/‖u‖² = gᵀHg/‖g‖² (Pan & Li's GD case)."""
    res, _ = tracked
    assert res.values["update_cosine"][0] == pytest.approx(-1.0, abs=1e-10)
    np.testing.assert_allclose(res.values["update_norm"][0], 0.05 * res.values["grad_norm"][0], rtol=1e-10)


def test_negative_mass_is_calibrated_over_start_vectors():
    """SLQ's negative mass (one run per seed, many seeds) converges to the dense fraction of negative eigenvalues."""
    prob = tiny_problem()
    H = dense_hessian(prob)
    lam = torch.linalg.eigvalsh(H).numpy()
    truth = float((lam < 0).mean())
    assert 0.1 < truth < 0.9  # random weights: a spectrum with both signs
    op = C.MatrixOperator(H)
    est = np.array([negative_mass(*C.slq_nodes(op, runs=1, steps=H.shape[0], seed=s)) for s in range(200)])
    assert abs(est.mean() - truth) <= 4 * est.std(ddof=1) / np.sqrt(len(est))


def test_subspace_overlap_of_bases():
    Q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((20, 20)))
    assert subspace_overlap(Q[:, :3].T, Q[:, [2, 0, 1]].T) == pytest.approx(1.0)  # same span, other order
    assert subspace_overlap(Q[:, :3].T, Q[:, 3:6].T) == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------- the series
def test_checkpoints_in_natural_step_order_from_names_and_step_entries(tmp_path):
    sd = tiny_model().state_dict()
    for s in (10, 2, 100):
        torch.save(sd, tmp_path / f"ckpt_{s}.pt")
    torch.save({"state_dict": sd, "step": 50}, tmp_path / "snapshot.pt")
    steps, paths = checkpoint_series([str(tmp_path / "ckpt_*.pt"), str(tmp_path / "snapshot.pt")])
    assert steps == [2, 10, 50, 100]
    assert os.path.basename(paths[2]) == "snapshot.pt"


def test_resume_recomputes_nothing_and_mismatch_is_refused(series, run_cli, tmp_path):
    out = str(tmp_path / "r.h5")
    pattern = os.path.join(os.path.dirname(series[0]), "ckpt_*.pt")
    args = ["track", *MODEL, "--checkpoints", pattern, "--top-k", "2", "--lr", "0.05", "--no-progress", "--out", out]
    code, stdout, err = run_cli(*args)
    assert code == 0, err
    assert "(5 computed now" in stdout and "late-phase λ_max" in stdout
    code, stdout, err = run_cli(*args)
    assert code == 0 and "(0 computed now" in stdout
    code, _, err = run_cli(*args[:-2], "--operator", "ggn", "--out", out)
    assert code == 2 and "--operator" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert run_cli(*args[:-2], "--operator", "ggn", "--overwrite", "--out", out)[0] == 0


def test_wrong_architecture_in_the_series_is_one_line_naming_it(series, run_cli, tmp_path):
    import shutil

    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in series:
        shutil.copy(p, folder)
    torch.save(tiny_model(width=4).state_dict(), folder / "ckpt_00002.pt")  # another width, in the middle
    out = str(tmp_path / "bad.h5")
    code, _, err = run_cli("track", *MODEL, "--checkpoints", str(folder / "ckpt_*.pt"), "--no-progress",
                           "--out", out)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "ckpt_00002.pt" in err and "checkpoint 3 of 5" in err and "does not match the model" in err
    assert not os.path.exists(out)


def test_track_beside_a_surface_and_plots(series, run_cli, tmp_path):
    f32 = ["--model", "tests.track_models:tiny_model_f32", "--data", "tests.track_models:tiny_data_f32",
           "--loss", "mse"]
    surf = str(tmp_path / "s.h5")
    assert run_cli("surface", *f32, "--checkpoint", series[-1], "--x=-1:1:5", "--no-progress",
                   "--out", surf)[0] == 0
    pattern = os.path.join(os.path.dirname(series[0]), "ckpt_*.pt")
    code, _, err = run_cli("track", *f32, "--checkpoints", pattern, "--top-k", "2", "--lr", "0.05",
                           "--no-progress", "--out", surf)
    assert code == 0, err
    from landscape.results import open_result

    r = open_result(surf)
    assert r.kind == "surface" and r.surfaces and r.track["done"].all()
    code, stdout, err = run_cli("plot", surf, "--kind", "track")
    assert code == 0, err
    names = [os.path.basename(p) for p in stdout.split()]
    assert names == ["s_eos.png", "s_spectrum_evolution.png", "s_overlaps.png"]
    code, stdout, err = run_cli("report", surf)
    assert code == 0, err
    from landscape.plot.report import _panels
    from landscape.plot.surface import Options

    titles = [t for t, _, _ in _panels(r, Options())]
    assert "edge of stability: λ_max vs 2/η" in titles and "1D surface" in titles
    code, stdout, _ = run_cli("info", surf)
    assert code == 0 and "track: 5/5 checkpoints done (steps 0–1000), operator hessian, lr 0.05" in stdout


@pytest.mark.parametrize("operator", ["ggn", "fisher"])
def test_track_with_another_operator_matches_its_dense_matrix(operator, series, tmp_path):
    prob = tiny_problem()
    dim = sum(p.numel() for p in prob.model.parameters())
    spec = TrackSpec(metrics="eigen,update", operator=operator, top_k=2, tol=1e-12, max_iter=dim)
    res = run_track(prob, series[:2] + series[-1:], spec, str(tmp_path / "op.h5"), progress=False)
    for i, ck in enumerate(series[:2] + series[-1:]):
        ref = tiny_problem()
        load_into(ref, ck)
        A = dense_ggn(ref) if operator == "ggn" else dense_fisher(ref)
        lam = torch.linalg.eigvalsh(A).numpy()[::-1]
        np.testing.assert_allclose(res.values["eigenvalues"][i], lam[:2], rtol=1e-6, atol=1e-12)
        if i == 0:
            u = flat(_params_of(series[1])) - flat(named(ref))
            np.testing.assert_allclose(res.values["update_sharpness"][0], float(u @ A @ u / (u @ u)), rtol=1e-8)


def _params_of(path):
    p = tiny_problem()
    load_into(p, path)
    return named(p)
