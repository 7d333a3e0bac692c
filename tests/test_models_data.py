"""Any model, any data, any loss: regression, a tiny language model, dict batches with two inputs, custom
losses, streamed data, import specs and checkpoint prefixes, each against a brute-force float64 recomputation."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape import batches as B
from landscape import losses as L
from landscape.errors import LandscapeError
from landscape.problem import make_problem
from landscape.surface import SurfaceSpec, run_surface
from landscape.zoo.data import chars
from landscape.zoo.models import TinyLM
from tests import user_models as U
from tests.mpi_helpers import HAVE_MPI, ROOT, command, subprocess_env

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = ["--device", "cpu", "--no-progress"]


# ------------------------------------------------------------------ the float64 reference
def read_surface(path):
    with h5py.File(path, "r") as f:
        dirs = {a: {k: torch.from_numpy(f[f"directions/{a}"][k][()]) for k in f[f"directions/{a}"]}
                for a in f["directions"]}
        coords = {a: f[f"coords/{a}"][()] for a in dirs}
        return dirs, coords, f["surfaces/train_loss"][()], f["surfaces/train_acc"][()]


def _f64(x):
    if isinstance(x, dict):
        return {k: _f64(v) for k, v in x.items()}
    return x.double() if x.is_floating_point() else x


def brute_force(model, path, inputs, target, ref):
    """θ + a·dx (+ b·dy) in a float64 copy of ``model``, run on all ``inputs`` at once; ``ref(out, target)`` →
    (mean loss, accuracy) in float64."""
    dirs, coords, _, _ = read_surface(path)
    net = copy.deepcopy(model).double().eval()
    centre = {k: v.clone() for k, v in net.state_dict().items()}
    axes = sorted(dirs)
    grids = np.meshgrid(*[coords[a] for a in axes], indexing="ij")
    Z, A = np.zeros(grids[0].shape), np.zeros(grids[0].shape)
    for idx in np.ndindex(grids[0].shape):
        sd = dict(centre)
        for a, g in zip(axes, grids):
            for k, d in dirs[a].items():
                sd[k] = sd[k] + float(g[idx]) * d.double()
        net.load_state_dict(sd)
        with torch.no_grad():
            x = _f64(inputs)
            out = net(**x) if isinstance(x, dict) else net(*x) if isinstance(x, tuple) else net(x)
            out = B.pick_output(out)
            Z[idx], A[idx] = ref(out, _f64(target))
    return Z, A


def ce_ref(out, y):
    if out.ndim == 3:  # token level, every position labelled
        out, y = out.reshape(-1, out.shape[-1]), y.reshape(-1)
    return F.cross_entropy(out, y).item(), (out.argmax(-1) == y).double().mean().item()


def mse_ref(out, y):
    return F.mse_loss(out, y).item(), float("nan")


# ------------------------------------------------------------------ regression
def test_regression_mse_surface_matches_float64(tmp_path, run_cli):
    out = tmp_path / "r.h5"
    code, _, err = run_cli("surface", "--model", "tests.user_models:Reg", "--data", "tests.user_models:regression",
                           "--loss", "mse", "--x=-1:1:5", "--y=-1:1:3", "--batch-size", "40", "--out", out, *CPU)
    assert code == 0, err
    _, _, Z, A = read_surface(out)
    torch.manual_seed(0)
    model = make_problem("tests.user_models:Reg", data="tests.user_models:regression", loss="mse",
                         device="cpu").model
    X, y = U.regression()
    Zb, _ = brute_force(model, out, X, y, mse_ref)
    np.testing.assert_allclose(Z, Zb, rtol=1e-5)
    assert np.isnan(A).all()  # accuracy is undefined for regression
    assert Z.max() > 1.5 * Z.min()  # not flat


@pytest.mark.parametrize("loss,needle", [
    (None, "one-column output"),  # the default cross-entropy: what a user gets without --loss
    ("nll", "one-column output"),
    ("bce", "targets in [0, 1]"),
])
def test_regression_with_classification_loss_is_refused(tmp_path, run_cli, loss, needle):
    out = tmp_path / "flat.h5"
    args = ["surface", "--model", "tests.user_models:Reg", "--data", "tests.user_models:regression",
            "--x=-1:1:3", "--out", out, *CPU]
    code, _, err = run_cli(*args, *(["--loss", loss] if loss else []))
    assert code != 0 and needle in err and "--loss mse" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_regression_surface_at_an_exact_minimum(tmp_path):
    """Targets made by the model itself: the centre is a global minimum (loss 0), as a fitted regression net's."""
    X, _ = U.regression()
    torch.manual_seed(0)
    teacher = U.Reg()
    with torch.no_grad():
        y = teacher(X)
    p = make_problem(teacher, data=(X, y), loss="mse", device="cpu", batch_size=32)
    out = tmp_path / "min.h5"
    run_surface(p, SurfaceSpec(x="-0.1:0.1:5", y="-0.1:0.1:5", seed=4), str(out), progress=False)
    _, _, Z, _ = read_surface(out)
    Zb, _ = brute_force(p.model, out, X, y, mse_ref)
    assert Z[2, 2] <= 1e-12 and Z.min() == Z[2, 2]
    np.testing.assert_allclose(Z, Zb, rtol=1e-4, atol=1e-9)


def test_sequential_regression_and_huber(tmp_path):
    """The input-layer fold stays on for a plain Sequential regression net; huber against F.huber_loss."""
    X, y = U.regression()
    for loss, fn in (("mse", F.mse_loss), ("huber", F.huber_loss)):
        torch.manual_seed(0)
        p = make_problem(U.reg_seq(), data=(X, y), loss=loss, device="cpu", batch_size=32)
        res = run_surface(p, SurfaceSpec(x="-1:1:5", seed=1), str(tmp_path / f"{loss}.h5"), progress=False)
        assert res.done == 5
        Zb, _ = brute_force(p.model, tmp_path / f"{loss}.h5", X, y, lambda o, t, fn=fn: (fn(o, t).item(), 0.0))
        _, _, Z, A = read_surface(tmp_path / f"{loss}.h5")
        np.testing.assert_allclose(Z, Zb, rtol=1e-5)


# ------------------------------------------------------------------ a tiny language model
def _lm_problem(**kw):
    X, y = chars("all", length=16, n=40)
    torch.manual_seed(0)
    model = TinyLM(d_model=16, n_layers=1, n_heads=2, context=16)
    return make_problem(model, data=(X, y), device="cpu", batch_size=16, **kw), X, y


def test_tiny_lm_surface_on_token_batches_matches_float64(tmp_path):
    p, X, y = _lm_problem()
    assert X.dtype == torch.int64 and p.batches[0][0].dtype == torch.int64  # ids stay integer
    out = tmp_path / "lm.h5"
    run_surface(p, SurfaceSpec(x="-1:1:5", y="-1:1:3", seed=3), str(out), progress=False)
    _, _, Z, A = read_surface(out)
    Zb, Ab = brute_force(p.model, out, X, y, ce_ref)
    np.testing.assert_allclose(Z, Zb, rtol=1e-5)
    np.testing.assert_allclose(A, Ab, atol=1e-9)  # token-level accuracy
    assert abs(Z[2, 1] - np.log(96)) < 0.05  # GPT-2's small init: near-uniform predictions at the centre


def test_token_level_loss_ignores_minus_100_and_shifts():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(3, 5, 7, generator=g, dtype=torch.float64)
    y = torch.randint(0, 7, (3, 5), generator=g)
    y[0, :2] = -100
    loss = L.get_loss("cross_entropy")
    per = loss.per_example(out, y)
    for i in range(3):
        keep = y[i] != -100
        assert per[i].item() == pytest.approx(F.cross_entropy(out[i][keep], y[i][keep]).item(), rel=1e-12)
    acc = loss.correct(out, y).item()
    ref = sum(((out[i].argmax(-1) == y[i])[y[i] != -100]).double().mean().item() for i in range(3))
    assert acc == pytest.approx(ref, rel=1e-12)
    shifted = L.get_loss("cross_entropy", shift=True).per_example(out, y)
    keep = y[1, 1:] != -100
    assert shifted[1].item() == pytest.approx(F.cross_entropy(out[1, :-1][keep], y[1, 1:][keep]).item(), rel=1e-12)
    # nll on log-probabilities equals cross-entropy on logits
    nll = L.get_loss("nll").per_example(F.log_softmax(out, -1), y)
    torch.testing.assert_close(nll, per)


def test_bce_binary_and_multilabel():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(6, 3, generator=g, dtype=torch.float64)
    t = (torch.rand(6, 3, generator=g) > 0.5).double()
    loss = L.get_loss("bce")
    assert loss.sum(out, t).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(out, t, reduction="none").mean(1).sum().item(), rel=1e-12)
    assert loss.correct(out, t).item() == pytest.approx(((out > 0) == (t > 0.5)).double().mean(1).sum().item())
    binary = L.get_loss("bce")
    o1, t1 = out[:, :1], t[:, 0].long()  # (B, 1) outputs with (B,) integer 0/1 labels
    assert binary.correct(o1, t1).item() == ((o1[:, 0] > 0) == (t1 > 0)).sum().item()


def test_tiny_lm_hessian_top_eigenvalue_matches_dense():
    """Hessian top-1 of a tiny transformer (float64) vs eigvalsh of the dense reverse-over-reverse Hessian.

    (Not torch.func.hessian: in torch 2.13 its forward-over-reverse gets the LayerNorm weights' rows wrong, by up
    to 20 %, where finite differences of the gradient agree with reverse-over-reverse to 1e-8.)
    """
    from torch.func import functional_call

    from landscape.curvature import hessian_eigenpairs
    from tests.curvature_models import flat, named, unflat

    g = torch.Generator().manual_seed(0)
    X = torch.randint(0, 12, (8, 6), generator=g)
    y = torch.randint(0, 12, (8, 6), generator=g)
    torch.manual_seed(0)
    model = TinyLM(vocab=12, d_model=8, n_layers=1, n_heads=2, context=6).double()
    with torch.no_grad():  # larger weights than GPT-2's init: a Hessian with some structure
        for p_ in model.parameters():
            p_.normal_(0, 0.5)
    p = make_problem(model, data=(X, y), device="cpu", batch_size=3)
    params, buffers = named(p), dict(p.model.named_buffers())

    def mean_loss(theta):
        out = functional_call(p.model, {**buffers, **unflat(theta, params)}, (X,))
        return F.cross_entropy(out.reshape(-1, 12), y.reshape(-1))  # every token labelled: the token mean

    H = torch.autograd.functional.hessian(mean_loss, flat(params))
    # finite differences of the gradient agree (the reference is itself checked)
    v = torch.randn(len(H), generator=g, dtype=torch.float64)
    grad = lambda t: torch.autograd.grad(mean_loss(t.requires_grad_(True)), t)[0]  # noqa: E731
    fd = (grad(flat(params) + 1e-5 * v) - grad(flat(params) - 1e-5 * v)) / 2e-5
    assert float((fd - H @ v).norm() / fd.norm()) < 1e-7
    top = np.linalg.eigvalsh(H.numpy())[-1]
    res = hessian_eigenpairs(p, k=1, tol=1e-10, max_iter=200)
    assert abs(float(res.eigenvalues[0]) - top) <= 1e-6 * abs(top)


# ------------------------------------------------------------------ dict batches, two inputs, output structures
def test_dict_batch_with_two_inputs_matches_float64(tmp_path, run_cli):
    out = tmp_path / "pair.h5"
    code, _, err = run_cli("surface", "--model", "tests.user_models:PairNet", "--data", "tests.user_models:pair_data",
                           "--target-key", "target", "--x=-1:1:5", "--y=-1:1:3", "--batch-size", "32", "--out",
                           out, *CPU)
    assert code == 0, err
    _, _, Z, A = read_surface(out)
    torch.manual_seed(0)
    model = make_problem("tests.user_models:PairNet", data="tests.user_models:pair_data", target_key="target",
                         device="cpu").model
    d = U.pair_data()
    Zb, Ab = brute_force(model, out, {"a": d.a, "b": d.b}, d.y, ce_ref)
    np.testing.assert_allclose(Z, Zb, rtol=1e-5)
    np.testing.assert_allclose(A, Ab, atol=1e-9)
    # positional (a, b, target) tuples and a tuple output give the same surface
    out2 = tmp_path / "pos.h5"
    code, _, err = run_cli("surface", "--model", "tests.user_models:PairPositional", "--data",
                           "tests.user_models:pair_tuples", "--x=-1:1:5", "--y=-1:1:3", "--batch-size", "32",
                           "--out", out2, *CPU)
    assert code == 0, err
    np.testing.assert_allclose(read_surface(out2)[2], Z, rtol=1e-6)


def test_dict_batch_errors_are_one_line(tmp_path, run_cli):
    code, _, err = run_cli("surface", "--model", "tests.user_models:PairNet", "--data", "tests.user_models:pair_data",
                           "--x=-1:1:3", "--out", tmp_path / "x.h5", *CPU)
    assert code != 0 and "--target-key" in err and "'labels'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("surface", "--model", "tests.user_models:PairNet", "--data", "tests.user_models:pair_data",
                           "--target-key", "target", "--output-key", "scores", "--x=-1:1:3", "--out",
                           tmp_path / "x.h5", *CPU)
    assert code != 0 and "--output-key" in err and "hidden" in err and len(err.strip().splitlines()) == 1


def test_model_output_object():
    X, y = U.four_classes()
    p = make_problem(U.ObjectOut(), data=(X, y), device="cpu")
    with torch.no_grad():
        ref = F.cross_entropy(p.model.lin(X), y).item()
    from landscape.evaluate import evaluate_batches

    assert evaluate_batches(p, p.batches)[0] == pytest.approx(ref, rel=1e-6)


# ------------------------------------------------------------------ custom losses and setup checks
def test_custom_loss_callable_matches_float64(tmp_path, run_cli):
    out = tmp_path / "c.h5"
    code, _, err = run_cli("surface", "--model", "tests.user_models:Reg", "--data", "tests.user_models:regression",
                           "--loss", "tests.user_models:log_cosh", "--x=-1:1:5", "--batch-size", "40", "--out",
                           out, *CPU)
    assert code == 0, err
    torch.manual_seed(0)
    model = make_problem("tests.user_models:Reg", data="tests.user_models:regression", loss="mse",
                         device="cpu").model
    X, y = U.regression()
    Zb, _ = brute_force(model, out, X, y, lambda o, t: (torch.log(torch.cosh(o - t)).mean().item(), 0.0))
    _, _, Z, A = read_surface(out)
    np.testing.assert_allclose(Z, Zb, rtol=1e-5)
    assert np.isnan(A).all()


@pytest.mark.parametrize("loss,needle", [("tests.user_models:scalar_loss", "per-example losses"),
                                         ("tests.user_models:constant_loss", "constant"),
                                         ("hinge", "is not one of"),
                                         ("tests.user_models:nothing", "no attribute")])
def test_bad_losses_are_refused_in_one_line(tmp_path, run_cli, loss, needle):
    code, _, err = run_cli("surface", "--model", "tests.user_models:Reg", "--data", "tests.user_models:regression",
                           "--loss", loss, "--x=-1:1:3", "--out", tmp_path / "x.h5", *CPU)
    assert code != 0 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_float_targets_that_are_not_probabilities_are_refused():
    X, _ = U.four_classes()
    with pytest.raises(LandscapeError, match="not class probabilities"):
        make_problem(U.ObjectOut(), data=(X, torch.randn(len(X), 4)), device="cpu")
    soft = torch.softmax(torch.randn(len(X), 4), -1)  # class probabilities are fine
    p = make_problem(U.ObjectOut(), data=(X, soft), device="cpu")
    with torch.no_grad():
        ref = -(soft * F.log_softmax(p.model.lin(X), -1)).sum(1).mean().item()
    from landscape.evaluate import evaluate_batches

    assert evaluate_batches(p, p.batches)[0] == pytest.approx(ref, rel=1e-6)


# ------------------------------------------------------------------ streaming
@pytest.mark.parametrize("case", ["lm", "pair", "mlp"])
def test_streamed_and_on_device_surfaces_are_identical(tmp_path, case):
    def problem(mode):
        torch.manual_seed(0)
        if case == "lm":
            return _lm_problem(data_on_device=mode)[0]
        if case == "pair":
            return make_problem("tests.user_models:PairNet", data="tests.user_models:pair_data",
                                target_key="target", device="cpu", batch_size=16, data_on_device=mode)
        return make_problem("zoo:mlp", data="zoo:synthetic", samples=96, batch_size=40, device="cpu",
                            model_args={"width": 8, "depth": 1}, data_on_device=mode)

    res = {}
    for k in (1, 4):  # (a fixed K: "auto" picks K by timing, and K = 1 and K > 1 round differently)
        for mode in ("always", "never"):
            p = problem(mode)
            assert p.streamed == (mode == "never") and p.info["data_on_device"] == (mode == "always")
            out = tmp_path / f"{mode}{k}.h5"
            run_surface(p, SurfaceSpec(x="-1:1:4", y="-1:1:3", seed=0, points_per_batch=k), str(out), progress=False)
            res[mode, k] = read_surface(out)[2:]
    for a, b in [*zip(res["always", 1], res["never", 1]), *zip(res["always", 4], res["never", 4])]:
        if case == "mlp":  # streaming turns the input-layer fold off (its cache is as large as the data)
            np.testing.assert_allclose(a, b, rtol=1e-6)
        else:
            np.testing.assert_array_equal(a, b)


def test_streamed_curvature_and_sharpness_match(tmp_path):
    from landscape.sharpness import eps_sharpness, loss_at, trainable

    on, _, _ = _lm_problem(data_on_device="always")
    off, _, _ = _lm_problem(data_on_device="never")
    th_on, th_off = trainable(on.model), trainable(off.model)
    assert loss_at(on, th_on) == loss_at(off, th_off)
    assert float(eps_sharpness(on, eps=1e-2, steps=2)) == pytest.approx(float(eps_sharpness(off, eps=1e-2, steps=2)),
                                                                       rel=1e-12)
    from landscape.curvature.hvp import HessianOperator

    h_on, h_off = HessianOperator(on), HessianOperator(off)
    v = torch.randn(h_on.dim, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(h_on.matvec_flat(v), h_off.matvec_flat(v), rtol=0, atol=0)


# ------------------------------------------------------------------ every command on the LM
def test_every_command_runs_on_the_tiny_lm(tmp_path, run_cli):
    model = ["--model", "zoo:tinylm", "--model-args", "d_model=16,n_layers=1", "--data", "zoo:chars",
             "--samples", "32", "--batch-size", "16", "--device", "cpu"]
    code, out, err = run_cli("train", "--model", "zoo:tinylm", "--model-args", "d_model=16,n_layers=1", "--data",
                             "zoo:chars", "--samples", "32", "--batch-size", "16", "--optimizer", "adam", "--lr",
                             "0.01", "--steps", "6", "--out-dir", tmp_path / "t", "--quiet")
    assert code == 0, err
    final = str(tmp_path / "t" / "final.pt")
    code, _, err = run_cli("hessian", *model, "--checkpoint", final, "--top-k", "1", "--out", tmp_path / "h.h5")
    assert code == 0, err
    code, _, err = run_cli("sharpness", *model, "--checkpoint", final, "--metrics", "layerwise", "--out",
                           tmp_path / "s.h5", "--quiet")
    assert code == 0, err
    seen: list[str] = []
    with h5py.File(tmp_path / "s.h5", "r") as f:  # every name, attribute and string stored
        def visit(name, obj):
            seen.append(name)
            seen.extend(f"{k}={v}" for k, v in obj.attrs.items())
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "OS":
                seen.append(str(obj[()]))
        f.visititems(visit)
    names = " ".join(seen)
    assert "blocks.0.qkv" in names and "head" in names  # the Linear layers inside the transformer
    code, _, err = run_cli("interpolate", *model, "--from", str(tmp_path / "t" / "init.pt"), "--to", final,
                           "--alpha=0:1:3", "--out", tmp_path / "i.h5", "--no-progress")
    assert code == 0, err


# ------------------------------------------------------------------ MPI
@pytest.mark.mpi
@pytest.mark.skipif(not HAVE_MPI, reason="needs mpiexec and mpi4py")
def test_mpi_two_ranks_on_the_lm_equal_one_process(tmp_path):
    args = ["surface", "--model", "zoo:tinylm", "--model-args", "d_model=16,n_layers=1", "--data", "zoo:chars",
            "--samples", "48", "--batch-size", "16", "--x=-1:1:4", "--y=-1:1:3", *CPU]
    for ranks, name in ((0, "one.h5"), (2, "two.h5")):
        r = subprocess.run(command([*args, "--out", str(tmp_path / name)], ranks), cwd=ROOT, env=subprocess_env(),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    one, two = read_surface(tmp_path / "one.h5"), read_surface(tmp_path / "two.h5")
    np.testing.assert_array_equal(one[2], two[2])
    np.testing.assert_array_equal(one[3], two[3])


# ------------------------------------------------------------------ import specs and checkpoints
def test_import_specs_from_the_current_folder_and_file_paths(tmp_path):
    shutil.copy(os.path.join(ROOT, "tests", "user_models.py"), tmp_path / "mymods.py")
    env = subprocess_env()
    base = ["surface", "--data", "mymods:regression", "--loss", "mse", "--x=-1:1:3", "--points-per-batch", "4", *CPU]
    r = subprocess.run([sys.executable, "-m", "landscape.cli", *base, "--model", "mymods:Reg", "--out", "a.h5"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "landscape.cli", *base, "--model", "./mymods.py:Reg", "--out", "b.h5"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(read_surface(tmp_path / "a.h5")[2], read_surface(tmp_path / "b.h5")[2])
    r = subprocess.run([sys.executable, "-m", "landscape.cli", *base, "--model", "./nothere.py:Reg", "--out", "c.h5"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_strip_prefix_and_safetensors(tmp_path, run_cli):
    torch.manual_seed(5)
    net = U.Reg()
    lightning = {"state_dict": {**{f"model.{k}": v for k, v in net.state_dict().items()},
                                "loss_fn.weight": torch.ones(1)}}
    torch.save(lightning, tmp_path / "l.ckpt")
    args = ["surface", "--model", "tests.user_models:Reg", "--data", "tests.user_models:regression", "--loss", "mse",
            "--x=0:0:1", *CPU]
    code, _, err = run_cli(*args, "--checkpoint", tmp_path / "l.ckpt", "--out", tmp_path / "no.h5")
    assert code != 0 and "--strip-prefix model." in err
    code, _, err = run_cli(*args, "--checkpoint", tmp_path / "l.ckpt", "--strip-prefix", "model.", "--out",
                           tmp_path / "l.h5")
    assert code == 0, err
    X, y = U.regression()
    with torch.no_grad():
        ref = F.mse_loss(net(X), y).item()
    assert read_surface(tmp_path / "l.h5")[2][0] == pytest.approx(ref, rel=1e-6)
    safetensors = pytest.importorskip("safetensors.torch")
    safetensors.save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    code, _, err = run_cli(*args, "--checkpoint", tmp_path / "w.safetensors", "--out", tmp_path / "s.h5")
    assert code == 0, err
    assert read_surface(tmp_path / "s.h5")[2][0] == pytest.approx(ref, rel=1e-6)


# ------------------------------------------------------------------ optional: HuggingFace GPT-2
def test_tiny_gpt2_from_a_config_with_dict_batches(tmp_path, run_cli):
    pytest.importorskip("transformers")
    out = tmp_path / "gpt2.h5"
    code, _, err = run_cli("surface", "--model", "tests.user_models:tiny_gpt2", "--data", "tests.user_models:lm_dicts",
                           "--shift-labels", "--x=-1:1:3", "--batch-size", "16", "--out", out, *CPU)
    assert code == 0, err
    torch.manual_seed(0)
    model = U.tiny_gpt2().eval()
    d = U.lm_dicts()
    with torch.no_grad():  # HF's own loss (it shifts the labels) at the centre
        ref = model(**d).loss.item()
    _, _, Z, _ = read_surface(out)
    assert Z[1] == pytest.approx(ref, rel=1e-5)


def test_train_on_dict_batches_and_regression(tmp_path):
    from landscape.train import train

    r = train("tests.user_models:PairNet", "tests.user_models:pair_data", target_key="target", steps=4,
              batch_size=16, lr=0.05, out_dir=str(tmp_path / "pair"), log=None)
    assert np.isfinite(r.final_loss) and 0 <= r.final_acc <= 1
    assert r.history[-1]["loss"] < r.history[0]["loss"]
    r = train("tests.user_models:Reg", "tests.user_models:regression", loss="mse", steps=20, batch_size=32, lr=0.05,
              out_dir=str(tmp_path / "reg"), log=None)
    assert r.final_loss < r.history[0]["loss"] and np.isnan(r.final_acc)
    with pytest.raises(LandscapeError, match="one-column output"):
        train("tests.user_models:Reg", "tests.user_models:regression", steps=1, out_dir=str(tmp_path / "x"), log=None)
