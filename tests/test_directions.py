import pytest
import torch
from torch import nn

from landscape import params as P
from landscape.directions import make_random_directions, normalize_direction, orthogonalize
from landscape.errors import LandscapeError


def conv_bn_net():
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def test_filter_norm_matches_every_filter():
    net = conv_bn_net()
    dirs = make_random_directions(net, ndim=2, seed=3)
    theta = P.parameters(net)
    for d in dirs.vectors:
        for k, v in d.items():
            w = theta[k]
            if w.dim() <= 1:
                assert torch.count_nonzero(v) == 0, f"{k} should be ignored (biasbn)"
            else:
                dn = v.reshape(v.shape[0], -1).norm(dim=1)
                wn = w.reshape(w.shape[0], -1).norm(dim=1)
                torch.testing.assert_close(dn, wn, rtol=1e-5, atol=1e-7)


def test_ignore_none_copies_weights_on_1d_tensors():
    net = conv_bn_net()
    d = make_random_directions(net, 1, seed=0, ignore="none").vectors[0]
    torch.testing.assert_close(d["1.weight"], net[1].weight.detach())
    torch.testing.assert_close(d["4.bias"], net[4].bias.detach())


@pytest.mark.parametrize("norm", ["layer", "model", "none"])
def test_other_normalizations(norm):
    net = conv_bn_net()
    theta = P.clone(P.parameters(net))
    g = torch.Generator().manual_seed(1)
    raw = {k: torch.randn(v.shape, generator=g) for k, v in theta.items()}
    d = normalize_direction(P.clone(raw), theta, norm)
    multi = [k for k in theta if theta[k].dim() > 1]
    if norm == "layer":
        for k in multi:
            assert abs(d[k].norm() - theta[k].norm()) < 1e-4
    elif norm == "model":
        assert abs(P.norm({k: d[k] for k in multi}) - P.norm({k: theta[k] for k in multi})) < 1e-4
    else:
        for k in multi:
            torch.testing.assert_close(d[k], raw[k])


def test_states_directions_leave_integer_buffers_out():
    net = conv_bn_net()
    d = make_random_directions(net, 1, seed=0, dir_type="states").vectors[0]
    assert "1.num_batches_tracked" not in d
    assert "1.running_mean" in d and torch.count_nonzero(d["1.running_mean"]) == 0


def test_same_seed_same_bits_and_prefix_property():
    net = conv_bn_net()
    a = make_random_directions(net, 2, seed=7)
    b = make_random_directions(net, 3, seed=7)
    for da, db in zip(a.vectors, b.vectors):
        assert all(torch.equal(da[k], db[k]) for k in da)
    c = make_random_directions(net, 2, seed=8)
    assert not torch.equal(a.vectors[0]["0.weight"], c.vectors[0]["0.weight"])
    assert a.fingerprint() != c.fingerprint()


def test_orthogonalize():
    net = conv_bn_net()
    dirs = make_random_directions(net, 3, seed=0, orthogonal=True)
    v = dirs.vectors
    for i in range(3):
        for j in range(i):
            assert abs(P.dot(v[i], v[j])) < 1e-4 * P.norm(v[i]) * P.norm(v[j])
    d = {k: t.clone() for k, t in v[0].items()}
    orthogonalize(d, [v[0]])
    assert P.norm(d) < 1e-4 * P.norm(v[0])


def test_bad_options():
    net = conv_bn_net()
    with pytest.raises(LandscapeError, match="`norm`"):
        make_random_directions(net, 1, norm="bogus")
    with pytest.raises(LandscapeError, match="`dir_type`"):
        make_random_directions(net, 1, dir_type="bogus")


# ---------------------------------------------------------------------------- the registry of kinds
def test_every_kind_is_one_builder_with_the_same_arguments():
    import inspect

    from landscape.directions import DIRECTION_KINDS

    assert set(DIRECTION_KINDS) >= {"random", "hessian", "interp", "pca", "plane", "file"}
    for kind, build in DIRECTION_KINDS.items():
        assert list(inspect.signature(build).parameters) == ["problem", "spec", "ndim"], kind


def test_plane_and_files_choose_their_kind():
    from landscape.directions import direction_kind
    from landscape.surface import SurfaceSpec

    assert direction_kind(SurfaceSpec()) == "random"
    assert direction_kind(SurfaceSpec(directions="pca")) == "pca"
    assert direction_kind(SurfaceSpec(plane=["a.pt", "b.pt", "c.pt"])) == "plane"
    assert direction_kind(SurfaceSpec(directions="old.h5")) == "file"
    assert direction_kind(SurfaceSpec(directions="old.hdf5")) == "file"


def test_the_registry_builds_what_the_kinds_build(tmp_path, tiny_problem):
    from landscape.directions import build_directions
    from landscape.surface import SurfaceSpec, run_surface

    spec = SurfaceSpec(x="-1:1:3", y="-1:1:3", seed=4, norm="layer", orthogonalize=True)
    got = build_directions(tiny_problem, spec, 2)
    want = make_random_directions(tiny_problem.model, 2, seed=4, norm="layer", orthogonal=True)
    assert got.fingerprint() == want.fingerprint() and got.meta == want.meta
    out = str(tmp_path / "s.h5")
    run_surface(tiny_problem, spec, out, progress=False)
    again = build_directions(tiny_problem, SurfaceSpec(directions=out), 2)  # the "file" kind reads them back
    assert again.fingerprint() == want.fingerprint()
    assert P.fingerprint(again.center) == P.fingerprint(want.center)


def test_unknown_kind_and_bad_registrations(tiny_problem):
    from landscape.directions import DIRECTION_KINDS, build_directions, register_direction
    from landscape.surface import SurfaceSpec

    listed = "`directions`: 'sideways' is not random, hessian, interp, pca or a FILE.h5"
    with pytest.raises(LandscapeError, match=listed):
        build_directions(tiny_problem, SurfaceSpec(directions="sideways"), 1)
    with pytest.raises(LandscapeError, match="not a file name"):
        register_direction("mine.h5", lambda problem, spec, ndim: None)
    with pytest.raises(LandscapeError, match="not callable"):
        register_direction("mine", "nope")
    assert "mine" not in DIRECTION_KINDS
