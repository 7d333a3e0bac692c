"""The batched (vmap) evaluator against the per-point one; auto K; fallback; non-finite losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape import evaluate as E
from landscape import kernels as K
from landscape import params as P
from landscape import zoo
from landscape.directions import make_random_directions
from landscape.problem import make_problem
from landscape.surface import SurfaceSpec, run_surface

RTOL = 1e-6


def _problem(model="zoo:mlp", model_args=None, samples=90, batch_size=32, test=True, loss="cross_entropy", data=None):
    return make_problem(model, data=data or "zoo:synthetic:train", test_data="zoo:synthetic:test" if test else None,
                        samples=samples, batch_size=batch_size, device="cpu", model_args=model_args, loss=loss)


def _coords(n: int, ndim: int, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-scale, scale, (n, ndim))


def _assert_same(a: dict, b: dict, rtol: float = RTOL) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=1e-9, equal_nan=True, err_msg=k)


def _compare(problem, dirs, coords, ks=(3, 4)):
    centre = P.clone(P.select(problem.model, dirs.dir_type))
    want = E.PointEvaluator(problem, dirs)(coords)
    for k in ks:
        got = E.BatchedEvaluator(problem, dirs, k)(coords)
        _assert_same(got, want)
    after = P.select(problem.model, dirs.dir_type)
    assert all(torch.equal(after[k], centre[k]) for k in centre), "the model must be left at the centre"
    return want


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_mlp_batched_equals_per_point_odd_k_two_splits(ndim):
    p = _problem()
    dirs = make_random_directions(p.model, ndim, seed=1)
    want = _compare(p, dirs, _coords(11, ndim), ks=(1, 3, 4, 16))
    assert set(want) == {"train_loss", "train_acc", "test_loss", "test_acc"}
    assert not np.allclose(want["train_loss"], want["test_loss"])


@pytest.mark.parametrize("dir_type,ignore", [("weights", "biasbn"), ("weights", "none"), ("states", "none"),
                                             ("states", "biasbn")])
def test_batchnorm_eval_weights_and_states(dir_type, ignore):
    p = _problem(model_args={"bn": True, "width": 16})
    with torch.no_grad():  # non-trivial running statistics
        for m in p.model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    dirs = make_random_directions(p.model, 2, seed=3, dir_type=dir_type, ignore=ignore)
    if dir_type == "states" and ignore == "none":
        assert any("running_var" in k for k in dirs.center)
    ev = E.BatchedEvaluator(p, dirs, 4)
    if dir_type == "states" and ignore == "none":
        assert any("running_mean" in k for k in ev.moving), "perturbed running stats must be stacked"
    _compare(p, dirs, _coords(7, 2, scale=0.3), ks=(4,))


@pytest.mark.parametrize("name", [n for n in ("cnn", "resnet20") if n in zoo.MODELS])
def test_conv_models(name):
    p = _problem(model=f"zoo:{name}", samples=24, batch_size=16, test=False)
    dirs = make_random_directions(p.model, 2, seed=0)
    _compare(p, dirs, _coords(3, 2, scale=0.5), ks=(2,))


def test_mse_regression_targets():
    X = torch.randn(50, 6)
    Y = torch.randn(50, 3)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    p = make_problem(model, data=(X, Y), loss="mse", batch_size=20, device="cpu")
    dirs = make_random_directions(p.model, 2, seed=0)
    want = _compare(p, dirs, _coords(5, 2), ks=(2,))
    assert np.isnan(want["train_acc"]).all()


def test_fast_cross_entropy_matches_torch():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(300, 10, generator=g) * 5
    out[:20] = 0.0  # ties: argmax takes the first index
    y = torch.randint(0, 10, (300,), generator=g)
    loss, correct = K.cross_entropy_and_correct(out, y)  # (the kernel every path uses)
    ref = nn.functional.cross_entropy(out.double(), y, reduction="sum")
    assert loss.dtype == torch.float64 and float(loss) == pytest.approx(float(ref), rel=1e-6)
    assert int(correct) == int((out.argmax(-1) == y).sum())


def test_nonfinite_losses_propagate():
    p = _problem(test=False)
    dirs = make_random_directions(p.model, 2, seed=0)
    coords = np.array([[0.0, 0.0], [1e30, -1e30], [np.inf, 0.0], [np.nan, 0.0], [0.1, 0.2]])
    want = E.PointEvaluator(p, dirs)(coords)
    got = E.BatchedEvaluator(p, dirs, 3)(coords)
    assert np.isfinite(want["train_loss"][[0, 4]]).all()
    assert not np.isfinite(want["train_loss"][1:4]).any()
    _assert_same(got, want)


class ItemNet(nn.Module):
    """A model vmap cannot batch: it reads a tensor's value on the host in forward."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        out = self.fc(x.flatten(1))
        return out / max(1.0, out.abs().max().item())


def test_fallback_notice_for_model_vmap_cannot_handle(capsys):
    p = _problem(model=ItemNet(), test=False)
    dirs = make_random_directions(p.model, 2, seed=0)
    ev = E.make_evaluator(p, dirs, 8)
    assert isinstance(ev, E.PointEvaluator)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "one grid point at a time" in err[0]
    _assert_same(ev(_coords(3, 2)), E.PointEvaluator(p, dirs)(_coords(3, 2)))


def test_make_evaluator_explicit_and_auto(monkeypatch):
    p = _problem()
    dirs = make_random_directions(p.model, 2, seed=0)
    assert isinstance(E.make_evaluator(p, dirs, 1), E.PointEvaluator)
    ev = E.make_evaluator(p, dirs, "5")
    assert isinstance(ev, E.BatchedEvaluator) and ev.k == 5
    auto = E.make_evaluator(p, dirs, "auto")
    if isinstance(auto, E.BatchedEvaluator):
        assert 1 < auto.k <= E.MAX_AUTO_K
    _assert_same(auto(_coords(9, 2)), E.PointEvaluator(p, dirs)(_coords(9, 2)))
    with pytest.raises(E.LandscapeError):
        E.make_evaluator(p, dirs, "0")
    # no memory to spare: one point at a time
    for module in (E.choose, E.fold):  # (the memory cap of K and the fold's cache)
        monkeypatch.setattr(module, "free_memory", lambda device: 1)
    assert isinstance(E.make_evaluator(p, dirs, "auto"), E.PointEvaluator)


def test_memory_cap_is_sane():
    p = _problem(samples=200, batch_size=64)
    dirs = make_random_directions(p.model, 2, seed=0)
    b = E.BatchedEvaluator(p, dirs, 1, fold=False)
    assert b.param_numel == sum(v.numel() for k, v in dirs.center.items() if v.dim() > 1)  # biases not stacked
    folded = E.BatchedEvaluator(p, dirs, 1)  # the first layer comes from the fold's cache: not stacked either
    assert folded.param_numel == b.param_numel - dirs.center["1.weight"].numel()
    assert 1 <= E.max_points_per_batch(p, b) <= E.MAX_AUTO_K
    assert E.activation_bytes(p) > 64 * 4 * 64  # at least the flattened input of one batch
    assert E.free_memory(torch.device("cpu")) > 0


def test_choose_k_returns_a_timed_candidate():
    p = _problem(test=False)
    dirs = make_random_directions(p.model, 2, seed=0)
    k, times = E.choose_points_per_batch(p, E.PointEvaluator(p, dirs), E.BatchedEvaluator(p, dirs, 1), 8,
                                         budget_s=1.0)
    assert k in times and 1 in times and all(t > 0 for t in times.values())


def test_surface_batched_equals_per_point(tmp_path):
    p = _problem(samples=64)
    res = {}
    for k in ("1", "4"):
        out = tmp_path / f"s{k}.h5"
        run_surface(p, SurfaceSpec(x="-1:1:5", y="-1:1:3", points_per_batch=k), str(out), progress=False)
        import h5py

        with h5py.File(out, "r") as f:
            res[k] = {n: f[f"surfaces/{n}"][()] for n in ("train_loss", "train_acc", "test_loss", "test_acc")}
    _assert_same(res["1"], res["4"])


def test_bf16_precision_runs_on_cpu():
    p = _problem(test=False)
    dirs = make_random_directions(p.model, 2, seed=0)
    c = _coords(4, 2, scale=0.5)
    ref = E.PointEvaluator(p, dirs)(c)
    for ev in (E.PointEvaluator(p, dirs, precision="bf16"), E.BatchedEvaluator(p, dirs, 2, precision="bf16")):
        got = ev(c)
        np.testing.assert_allclose(got["train_loss"], ref["train_loss"], rtol=5e-2)
    with pytest.raises(E.LandscapeError):
        E.PointEvaluator(p, dirs, precision="fp8")


def test_zero_directions_give_the_centre_everywhere():
    p = _problem(test=False)
    dirs = make_random_directions(p.model, 2, seed=0)
    for v in dirs.vectors:
        for t in v.values():
            t.zero_()
    want = E.PointEvaluator(p, dirs)(np.zeros((1, 2)))["train_loss"][0]
    np.testing.assert_allclose(E.PointEvaluator(p, dirs)(_coords(3, 2))["train_loss"], want, rtol=1e-12)
    # the batched path rounds differently (another order of sums), but every point is the centre
    got = E.BatchedEvaluator(p, dirs, 2)(_coords(3, 2))["train_loss"]
    assert len(set(got.tolist())) == 1
    np.testing.assert_allclose(got, want, rtol=1e-6)


# --------------------------------------------------------------------------- the input-layer fold
def _conv_first_problem():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 3, 3, padding=1, padding_mode="reflect"),
                        nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(192, 10))
    with torch.no_grad():
        net[2].running_mean.uniform_(-0.5, 0.5)
        net[2].running_var.uniform_(0.5, 2.0)
    x = torch.randn(70, 64)
    return make_problem(net.eval(), data=(x, torch.randint(0, 10, (70,))), batch_size=32, device="cpu")


@pytest.mark.parametrize("case", ["mlp-1d", "mlp-2d", "mlp-3d", "mlp-bn-states", "mlp-ignore-none", "conv-first"])
def test_input_fold_equals_the_plain_forward(case):
    """The fold (first layer from cached per-direction outputs) gives the plain forward's numbers."""
    if case == "conv-first":
        p, ndim, kw = _conv_first_problem(), 2, {}
    else:
        ndim = int(case[4]) if case[4].isdigit() else 2
        p = _problem(model_args={"bn": True, "width": 16} if "bn" in case else None)
        kw = {"dir_type": "states"} if "states" in case else {"ignore": "none"} if "none" in case else {}
    dirs = make_random_directions(p.model, ndim, seed=4, **kw)
    coords = _coords(7, ndim, scale=1.5)
    plain = E.PointEvaluator(p, dirs, fold=False)(coords)
    folded = E.PointEvaluator(p, dirs)
    assert folded.fold is not None
    _assert_same(folded(coords), plain, rtol=1e-5)
    _assert_same(E.BatchedEvaluator(p, dirs, 3)(coords), plain, rtol=1e-5)
    # move_to/restore (the curvature maps' interface) still put the whole point into the model
    folded.move_to(coords[0])
    moved = P.select(p.model, dirs.dir_type)
    want = {k: dirs.center[k] + sum(float(c) * v[k] for c, v in zip(coords[0], dirs.vectors)) for k in dirs.center}
    assert all(torch.allclose(moved[k], want[k], atol=1e-6) for k in want)
    folded.restore()
    assert all(torch.equal(P.select(p.model, dirs.dir_type)[k], dirs.center[k]) for k in dirs.center)


def test_input_fold_applies_only_where_it_is_exact():
    p = _problem()
    dirs = make_random_directions(p.model, 2, seed=0)
    batches = p.batches
    assert E.input_fold(p.model, dirs, batches) is not None
    assert E.input_fold(p.model, dirs, batches, precision="bf16") is None  # autocast changes the first matmul
    assert E.input_fold(p.model, dirs, batches, max_bytes=1024) is None  # the cache would not fit
    cnn = _problem(model="zoo:cnn")  # not a Sequential: its forward may do anything
    assert E.input_fold(cnn.model, make_random_directions(cnn.model, 2, seed=0), cnn.batches) is None
    drop = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 10))  # a parameter-free but random module
    assert E.input_fold(drop, make_random_directions(drop, 2, seed=0), batches) is None
    bn_first = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64), nn.Linear(64, 10)).eval()
    assert E.input_fold(bn_first, make_random_directions(bn_first, 2, seed=0), batches) is None
    tied = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    tied[3].weight = tied[1].weight  # the later layer must see the tied weight move
    assert E.input_fold(tied, make_random_directions(tied, 2, seed=0), batches) is None


@pytest.mark.parametrize("fold", [True, False])
def test_batched_in_row_chunks_equals_per_point(monkeypatch, fold):
    """On a CPU the batched path runs K points over cache-sized row chunks; the numbers do not change."""
    p = _problem(samples=150, batch_size=100)  # batches of 100 and 50 rows, chunked at 64
    dirs = make_random_directions(p.model, 2, seed=2)
    monkeypatch.setattr(E.batched, "CACHE_BYTES", 1)
    ev = E.BatchedEvaluator(p, dirs, 4, fold=fold)
    assert ev.rows == E.MIN_ROWS == 64
    _assert_same(ev(_coords(9, 2)), E.PointEvaluator(p, dirs, fold=False)(_coords(9, 2)), rtol=1e-5)


def test_a_points_value_does_not_depend_on_the_other_points_of_its_call():
    """Every vmap call has exactly K points (the last group padded), so regrouping changes no bit."""
    p = _problem(test=False)
    dirs = make_random_directions(p.model, 2, seed=5)
    coords = _coords(13, 2)
    ev = E.BatchedEvaluator(p, dirs, 4)
    whole = ev(coords)["train_loss"]
    for n in (1, 2, 3, 5):
        parts = np.concatenate([ev(coords[i:i + n])["train_loss"] for i in range(0, len(coords), n)])
        assert parts.tobytes() == whole.tobytes(), n


def test_batched_shares_the_per_point_fold_and_groups():
    """make_evaluator builds both paths; with ``share`` the fold's cache is computed and held once."""
    p = _problem()
    dirs = make_random_directions(p.model, 2, seed=6)
    pp = E.PointEvaluator(p, dirs)
    shared = E.BatchedEvaluator(p, dirs, 3, share=pp)
    assert shared.fold is pp.fold is not None
    assert all(a[0][0] is b[0][0] for s in pp.groups for a, b in zip(pp.groups[s], shared.groups[s]))
    _assert_same(shared(_coords(7, 2)), E.BatchedEvaluator(p, dirs, 3)(_coords(7, 2)))
    _assert_same(shared(_coords(7, 2)), pp(_coords(7, 2)), rtol=1e-5)


def test_every_evaluator_follows_the_one_protocol():
    """Per-point, batched (linear chain and vmap) and curvature-map evaluators: ``names`` is what a call returns,
    ``prepare`` and ``release`` exist, and a toy evaluator on the private base is one too."""
    from landscape.curvature.maps import CurvatureMapEvaluator
    from landscape.evaluate._base import _Evaluator

    p = _problem(samples=40, test=False)
    dirs = make_random_directions(p.model, 2, seed=0)
    chain = E.BatchedEvaluator(p, dirs, 4)
    evaluators = [E.PointEvaluator(p, dirs), chain, E.BatchedEvaluator(p, dirs, 4, chain=False),
                  CurvatureMapEvaluator(p, dirs, max_iter=5)]
    assert chain.chain is not None
    for ev in evaluators:
        assert isinstance(ev, E.Evaluator) and isinstance(ev, _Evaluator), type(ev)
        out = ev(_coords(3, 2, 0.1))
        assert sorted(out) == sorted(ev.names) and all(v.shape == (3,) for v in out.values()), type(ev)
        ev.release()

    class Toy(_Evaluator):
        names = ["train_loss"]

        def __call__(self, coords):
            return {"train_loss": np.zeros(len(np.atleast_2d(coords)))}

    assert isinstance(Toy(), E.Evaluator) and Toy().prepare([1]) == [1]


def test_problem_and_autotune_import_without_the_evaluator():
    """Dependencies point one way: problem, losses and autotune sit below landscape.evaluate."""
    import subprocess
    import sys

    code = ("import sys, landscape.problem, landscape.autotune, landscape.losses; "
            "assert not [m for m in sys.modules if m.startswith('landscape.evaluate')], sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
