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
