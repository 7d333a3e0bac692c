"""Hessian and GGN operators against dense references (``torch.func.hessian`` / ``jacrev``), float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.curvature import GGNOperator, HessianOperator, check_deterministic, hvp
from landscape.errors import LandscapeError
from landscape.problem import Problem
from tests.curvature_models import IGNORE_JIT_SCRIPT, all_data, dense_ggn, dense_hessian, flat, named, unflat

pytestmark = [pytest.mark.usefixtures("one_thread"), IGNORE_JIT_SCRIPT]


SIZES = (16, 16, 8)  # unequal batches: a wrong (per-batch mean) weighting shows


# ------------------------------------------------------------------ models and problems
class WithUnused(nn.Module):
    """A linear classifier plus a parameter it never uses and a frozen one."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 3)
        self.unused = nn.Linear(2, 2)
        self.frozen = nn.Parameter(torch.ones(3), requires_grad=False)

    def forward(self, x):
        return torch.tanh(self.lin(x)) * 2 + self.frozen


class ConvBN(nn.Module):
    """Conv → BN pairs (one conv output also used outside its BN; a grouped conv without bias)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(2)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1, groups=2, bias=False)
        self.bn2 = nn.BatchNorm2d(2)
        self.lin = nn.Linear(50, 3)

    def forward(self, x):
        a = self.conv1(x)
        h = torch.tanh(self.bn1(a)) + 0.1 * a
        h = torch.tanh(self.bn2(self.conv2(h))) + h
        return self.lin(h.flatten(1))


def _model(kind: str) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    if kind == "mlp":
        m = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    elif kind == "mlp_bn":
        m = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))
    elif kind == "cnn":
        m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3))
    elif kind == "bn_input":  # BatchNorm of the data: not foldable into a layer, runs as x·s + t
        m = nn.Sequential(nn.BatchNorm1d(5), nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    elif kind == "cnn_bn":
        m = ConvBN()
    elif kind == "unused":
        m = WithUnused()
    elif kind == "dropout":
        m = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 3))
    else:
        raise ValueError(kind)
    m = m.double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.7)
        for name, b in m.named_buffers():  # non-trivial BatchNorm running statistics
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g, dtype=torch.float64) * 0.3)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g, dtype=torch.float64) + 0.5)
    return m.eval()


def _problem(kind: str = "mlp", loss: str = "cross_entropy", sizes=SIZES, dtype=torch.float64) -> Problem:
    g = torch.Generator().manual_seed(2)
    n = sum(sizes)
    shape = (n, 1, 5, 5) if kind.startswith("cnn") else (n, 5)
    X = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randint(0, 3, (n,), generator=g)
    batches, i = [], 0
    for s in sizes:
        batches.append((X[i: i + s], y[i: i + s]))
        i += s
    model = _model(kind).to(dtype)
    return Problem(model=model, loss=loss, splits={"train": batches}, device=torch.device("cpu"))


# ------------------------------------------------------------------ Hessian-vector products
@pytest.mark.parametrize("kind", ["mlp", "mlp_bn", "bn_input", "cnn", "cnn_bn"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_hvp_matches_dense_hessian(kind, loss):
    prob = _problem(kind, loss)
    H = dense_hessian(prob)
    op = HessianOperator(prob)
    assert op.dim == H.shape[0]
    g = torch.Generator().manual_seed(3)
    V = torch.randn(op.dim, 3, generator=g, dtype=torch.float64)
    for v in V.T:
        torch.testing.assert_close(op.matvec_flat(v), H @ v, rtol=1e-10, atol=1e-12)
    assert op.cache is True and op.matvecs == 3
    # the named interface, the one-shot function and the uncached path agree
    v = unflat(V[:, 0], named(prob))
    hv = hvp(prob, v)
    assert list(hv) == list(v)
    torch.testing.assert_close(flat(hv), H @ V[:, 0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(flat(op.matvec(v)), H @ V[:, 0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(HessianOperator(prob, cache=False).matvec_flat(V[:, 1]), H @ V[:, 1],
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["mlp", "mlp_bn", "cnn_bn", "unused"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_forward_over_reverse_matches_dense_hessian(kind, loss):
    """``method="forward"`` (jvp of grad) gives the dense Hessian's products, the loss and the gradient."""
    prob = _problem(kind, loss)
    H = dense_hessian(prob)
    fwd, rev = HessianOperator(prob, method="forward"), HessianOperator(prob, method="reverse")
    V = torch.randn(fwd.dim, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for v in V.T:
        torch.testing.assert_close(fwd.matvec_flat(v), H @ v, rtol=1e-10, atol=1e-12)
    assert fwd.method == "forward" and fwd.matvecs == 3 and fwd._cached is None  # no graph kept
    rev.matvec_flat(V[:, 0])
    assert fwd.value() == pytest.approx(rev.value(), rel=1e-12)
    torch.testing.assert_close(flat(fwd.gradient()), flat(rev.gradient()), rtol=1e-10, atol=1e-14)


def test_forward_over_reverse_at_a_trained_minimum():
    """Near a minimum (loss <= 1e-4) the two methods still agree with the dense Hessian."""
    prob = _problem("mlp", "mse")
    X, Y = all_data(prob)
    target = prob.model(X).detach()  # regress the model on its own outputs, then nudge: loss ~ 1e-6
    with torch.no_grad():
        for p in prob.model.parameters():
            p.add_(1e-3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(5), dtype=p.dtype))
    prob = Problem(model=prob.model, loss="mse", splits={"train": [(X, target)]}, device=torch.device("cpu"))
    H = dense_hessian(prob)
    fwd = HessianOperator(prob, method="forward")
    assert fwd.value() <= 1e-4
    v = torch.randn(fwd.dim, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    torch.testing.assert_close(fwd.matvec_flat(v), H @ v, rtol=1e-10, atol=1e-13)


class _NoFunctorch(nn.Module):
    """A model torch.func cannot transform (``.numpy()`` of a weight): forward-over-reverse must fall back."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 3).double()

    def forward(self, x):
        scale = 1.0 + 0.0 * float(self.lin.weight.detach().numpy().sum())
        return torch.tanh(self.lin(x)) * scale


def test_forward_over_reverse_falls_back_with_a_notice(capsys):
    prob = _problem("mlp")
    prob = Problem(model=_NoFunctorch().eval(), loss="cross_entropy", splits=prob.splits, device=torch.device("cpu"))
    params = named(prob)
    X, Y = all_data(prob)

    def loss(theta):  # the dense reference by plain autograd (torch.func.hessian fails on .item() too)
        return prob.loss_sum(torch.func.functional_call(prob.model, unflat(theta, params), (X,)), Y) / len(X)

    H = torch.autograd.functional.hessian(loss, flat(params))
    op = HessianOperator(prob, method="forward")
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    torch.testing.assert_close(op.matvec_flat(v), H @ v, rtol=1e-10, atol=1e-12)
    assert op.method == "reverse"
    assert "forward-over-reverse" in capsys.readouterr().err


def test_hvp_method_auto_and_bad_method():
    from landscape.curvature.hvp import DEFAULT_HVP_METHOD

    prob = _problem("mlp")
    assert HessianOperator(prob).method == DEFAULT_HVP_METHOD
    with pytest.raises(LandscapeError, match="hvp method"):
        HessianOperator(prob, method="sideways")

def test_hvp_equals_finite_differences_of_gradient():
    prob = _problem("mlp_bn")
    theta = named(prob)
    op = HessianOperator(prob)
    v = unflat(torch.randn(op.dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64), theta)
    eps = 1e-5
    plus = {k: theta[k] + eps * v[k] for k in theta}
    minus = {k: theta[k] - eps * v[k] for k in theta}
    fd = (flat(HessianOperator(prob, params=plus).gradient()) - flat(HessianOperator(prob, params=minus).gradient()))
    fd = fd / (2 * eps)
    torch.testing.assert_close(flat(op.matvec(v)), fd, rtol=1e-6, atol=1e-8)


def test_gradient_and_loss_are_byproducts():
    prob = _problem("mlp")
    op = HessianOperator(prob)
    op.matvec_flat(torch.ones(op.dim, dtype=torch.float64))
    X, Y = all_data(prob)
    loss = prob.loss_sum(prob.model(X), Y) / len(X)
    grads = torch.autograd.grad(loss, [p for p in prob.model.parameters()])
    assert op.value() == pytest.approx(float(loss.detach()), rel=1e-12)
    torch.testing.assert_close(flat(op.gradient()), torch.cat([g.reshape(-1) for g in grads]))


def test_unequal_batches_weighted_by_size():
    prob = _problem("mlp", sizes=(30, 7, 3))
    H = dense_hessian(prob)  # of the mean over all 40 samples
    op = HessianOperator(prob)
    torch.testing.assert_close(op.to_dense(), H, rtol=1e-10, atol=1e-12)
    # the bug this guards against: an equal-weight mean of per-batch mean Hessians is different
    per_batch = []
    for b in prob.batches:
        sub = Problem(model=prob.model, loss=prob.loss, splits={"train": [b]}, device=prob.device)
        per_batch.append(dense_hessian(sub))
    assert not torch.allclose(sum(per_batch) / len(per_batch), H, rtol=1e-3)


@pytest.mark.parametrize("cache", [True, False])
def test_unused_parameter_gives_zero_rows(cache):
    prob = _problem("unused")
    names = [k for k, p in prob.model.named_parameters() if p.requires_grad]
    assert "unused.weight" in names and "frozen" not in names
    op = HessianOperator(prob, cache=cache)
    H = dense_hessian(prob)
    dense = op.to_dense()
    torch.testing.assert_close(dense, H, rtol=1e-10, atol=1e-12)
    v = {k: torch.ones_like(t) for k, t in named(prob).items()}
    hv = op.matvec(v)
    assert torch.count_nonzero(hv["unused.weight"]) == 0 and torch.count_nonzero(hv["unused.bias"]) == 0
    assert torch.count_nonzero(hv["lin.weight"]) > 0
    assert torch.count_nonzero(op.gradient()["unused.weight"]) == 0


def test_parameter_subset_and_missing_entries():
    prob = _problem("mlp")
    H = dense_hessian(prob)
    op = HessianOperator(prob, params=["2.weight", "2.bias"])
    n_first = sum(p.numel() for k, p in prob.model.named_parameters() if k.startswith("0."))
    torch.testing.assert_close(op.to_dense(), H[n_first:, n_first:], rtol=1e-10, atol=1e-12)
    # a vector with only some entries is zero elsewhere
    v = {"2.bias": torch.ones(3, dtype=torch.float64)}
    full = torch.zeros(H.shape[0], dtype=torch.float64)
    full[-3:] = 1.0
    torch.testing.assert_close(flat(hvp(prob, v)), H @ full, rtol=1e-10, atol=1e-12)
    with pytest.raises(LandscapeError):
        hvp(prob, {"nope": torch.ones(1)})
    with pytest.raises(LandscapeError):
        HessianOperator(prob, params=["nope"])


def test_cache_is_rebuilt_when_weights_change():
    prob = _problem("mlp")
    op = HessianOperator(prob)
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    before = op.matvec_flat(v)
    with torch.no_grad():
        for p in prob.model.parameters():
            p.mul_(1.3)
    after = op.matvec_flat(v)
    torch.testing.assert_close(after, dense_hessian(prob) @ v, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(before, after)


def test_float32_model():
    prob64 = _problem("cnn")
    H = dense_hessian(prob64)
    prob = _problem("cnn", dtype=torch.float32)
    op = HessianOperator(prob)
    assert op.dtype == torch.float32
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    hv = op.matvec_flat(v)
    assert hv.dtype == torch.float32
    ref = H @ v
    assert float((hv.double() - ref).norm() / ref.norm()) < 1e-5


# ------------------------------------------------------------------ Gauss-Newton
@pytest.mark.parametrize("kind", ["mlp", "mlp_bn", "cnn_bn", "unused"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_ggn_matches_dense(kind, loss):
    prob = _problem(kind, loss)
    G = dense_ggn(prob)
    V = torch.randn(G.shape[0], 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for cache in (True, False):
        op = GGNOperator(prob, cache=cache)
        for v in V.T:
            torch.testing.assert_close(op.matvec_flat(v), G @ v, rtol=1e-10, atol=1e-12)
    assert op.cache is False and op.matvecs == 2
    assert torch.linalg.eigvalsh(G).min() > -1e-10  # PSD
    if kind == "mlp":
        assert not torch.allclose(G, dense_hessian(prob), atol=1e-6)  # tanh: H ≠ GGN


# ------------------------------------------------------------------ determinism and modes
def test_check_deterministic_passes_in_eval_mode():
    for kind in ("mlp_bn", "dropout"):
        prob = _problem(kind)
        assert check_deterministic(HessianOperator(prob)) <= 1e-12
        assert check_deterministic(GGNOperator(prob)) <= 1e-12


def test_check_deterministic_raises_for_dropout_in_train_mode():
    prob = _problem("dropout")
    prob.model.train()
    with pytest.warns(UserWarning, match="train mode"):
        op = HessianOperator(prob)
    op.matvec_flat(torch.ones(op.dim, dtype=torch.float64))  # a cached graph must not hide the random mask
    with pytest.raises(LandscapeError, match="dropout|Dropout|train mode"):
        check_deterministic(op)


def test_check_deterministic_raises_for_batchnorm_in_train_mode():
    prob = _problem("mlp_bn")
    prob.model.train()
    with pytest.warns(UserWarning, match="train mode"):
        op = HessianOperator(prob)
    with pytest.raises(LandscapeError, match="BatchNorm"):
        check_deterministic(op)


def test_ggn_generic_loss_path_matches_closed_form():
    """A loss without a closed-form output Hessian goes through double backward: same result."""
    prob = _problem("mlp")
    op = GGNOperator(prob)
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    ref = op.matvec_flat(v)
    prob.loss = "custom"
    prob.loss_sum = lambda out, y: torch.nn.functional.cross_entropy(out, y, reduction="sum")  # type: ignore
    torch.testing.assert_close(GGNOperator(prob).matvec_flat(v), ref, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ sharded over ranks (world=...)
class _ThreadRanks:
    """``size`` fake ranks run as threads of this process; ``allreduce_sum`` adds the ranks' tensors (float64, in
    rank order) at a barrier. A rank that makes fewer or more collective calls than the others breaks the barrier
    (its timeout), so a mismatch fails the test instead of hanging it."""

    def __init__(self, size: int):
        import threading

        self.size = size
        self.slots: list = [None] * size
        self.barrier = threading.Barrier(size, timeout=60)

    def world(self, rank: int):
        from types import SimpleNamespace

        return SimpleNamespace(rank=rank, size=self.size, allreduce_sum=lambda t: self._sum(rank, t))

    def _sum(self, rank: int, t: torch.Tensor) -> torch.Tensor:
        self.slots[rank] = t.detach().to(torch.float64).clone()
        self.barrier.wait()
        total = self.slots[0].clone()
        for s in self.slots[1:]:
            total += s
        self.barrier.wait()  # nobody overwrites a slot before every rank has read them all
        return total.to(t.dtype)

    def run(self, fn, problem) -> list:
        """``fn(world, problem)`` on every rank at once, each with its own copy of ``problem`` (functional_call
        swaps a module's parameters while it runs: threads must not share one); their results in rank order
        (a failure on any rank is raised)."""
        import copy
        import threading

        copies = [copy.deepcopy(problem) for _ in range(self.size)]

        results, errors = [None] * self.size, [None] * self.size

        def target(r: int) -> None:
            try:
                results[r] = fn(self.world(r), copies[r])
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors[r] = e
                self.barrier.abort()

        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "a rank hung"
        import threading as _t

        # the rank that failed first, not those that then found the barrier broken
        for e in sorted((e for e in errors if e is not None), key=lambda e: isinstance(e, _t.BrokenBarrierError)):
            raise e
        return results


@pytest.mark.parametrize("size", [1, 2, 3, 4])  # 3 batches: with 4 ranks, rank 3 holds none
def test_sharded_hessian_matches_dense(size):
    """Batch i on rank i % size, partial sums added over ranks: every rank gets the dense float64 product, the
    gradient and the loss, whatever the rank count, with or without a cached graph (ranks may differ there)."""
    prob = _problem("mlp_bn", sizes=SIZES)
    ref = dense_hessian(prob)
    single = HessianOperator(prob)
    grad, value = flat(single.gradient()), single.value()
    V = torch.randn(ref.shape[0], 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def rank(w, p):
        op = HessianOperator(p, cache=w.rank % 2 == 0, world=w)
        assert op.n_samples == sum(SIZES) and len(op.batches) == len(range(w.rank, len(SIZES), w.size))
        prods = [op.matvec_flat(v) for v in V.T]
        prods += [op.fresh_matvec_flat(V[:, 0]), flat(op.matvec(unflat(V[:, 1], named(p))))]
        check_deterministic(op)
        return prods, op.to_dense(), flat(op.gradient()), op.value()

    for r, (prods, dense, g, loss) in enumerate(_ThreadRanks(size).run(rank, prob)):
        for got, v in zip(prods, [*V.T, V[:, 0], V[:, 1]]):
            torch.testing.assert_close(got, ref @ v, rtol=1e-10, atol=1e-12, msg=f"rank {r}")
        torch.testing.assert_close(dense, ref, rtol=1e-10, atol=1e-12, msg=f"rank {r}")
        torch.testing.assert_close(g, grad, rtol=1e-10, atol=1e-12, msg=f"rank {r}")
        assert loss == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("size", [2, 4])
def test_sharded_ggn_partial_sums_add_up_to_dense(size):
    """The GGN's shards, one rank at a time (``torch.func.jvp`` is not thread-safe, so no threads here): a world
    whose allreduce returns this rank's part; the parts of all ranks add up to the dense G (rank 3 of 4: zeros)."""
    from types import SimpleNamespace

    prob = _problem("mlp_bn", sizes=SIZES)
    G = dense_ggn(prob)
    v = torch.randn(G.shape[0], generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    parts = []
    for r in range(size):
        w = SimpleNamespace(rank=r, size=size, allreduce_sum=lambda t: t)
        for cache in (True, False):
            parts.append(GGNOperator(prob, cache=cache, world=w).matvec_flat(v))
    if size == 4:
        assert torch.count_nonzero(parts[-1]) == 0
    torch.testing.assert_close(sum(parts[::2]), G @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sum(parts[1::2]), G @ v, rtol=1e-10, atol=1e-12)


def test_sharded_lanczos_and_trace_agree_on_every_rank():
    """Everything built on the sharded product (Lanczos, Hutch++) gives the single-process result on each rank."""
    from landscape.curvature import hessian_eigenpairs, hessian_trace

    prob = _problem("mlp", sizes=(9, 9, 9, 9, 4))
    eig = hessian_eigenpairs(prob, k=3, which="both", tol=1e-8, seed=1, return_vectors=False)
    tr = hessian_trace(prob, matvecs=30, seed=2)

    def rank(w, p):
        op = HessianOperator(p, world=w)
        e = hessian_eigenpairs(op, k=3, which="both", tol=1e-8, seed=1, return_vectors=False)
        return e.eigenvalues, e.smallest, hessian_trace(op, matvecs=30, seed=2).estimate

    for vals, smallest, trace in _ThreadRanks(3).run(rank, prob):
        torch.testing.assert_close(torch.as_tensor(vals), torch.as_tensor(eig.eigenvalues), rtol=1e-10, atol=0)
        assert smallest == pytest.approx(eig.smallest, rel=1e-9)
        assert trace == pytest.approx(tr.estimate, rel=1e-10)


def test_world_of_one_is_the_plain_operator():
    from types import SimpleNamespace

    prob = _problem("mlp")
    one = SimpleNamespace(rank=0, size=1, allreduce_sum=None)  # never called
    v = torch.randn(HessianOperator(prob).dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    a, b = HessianOperator(prob).matvec_flat(v), HessianOperator(prob, world=one).matvec_flat(v)
    assert torch.equal(a, b)
