"""Layer-wise conditioning and degeneracy (docs/layerwise.md), for every Linear and Conv layer.

**K-FAC factors** (Martens & Grosse 2015; Huang, Qin, Liu, Zhu, Shao, ECCV 2020). For a layer
h = W x (+ b), the Fisher block is approximated by F ≈ Σ_x ⊗ Σ_δ with

    Σ_x = E[x xᵀ]   (x the layer input, with a 1 appended when the layer has a bias),
    Σ_δ = E[δ δᵀ]   (δ = ∂ℓ/∂h, the per-example loss gradient w.r.t. the layer output).

Labels: ``fisher="empirical"`` uses the data labels; ``"true"`` samples labels y ~ softmax(f(x)) (seeded;
cross-entropy only). Conv layers: x are the unfolded input patches (``F.unfold``) and δ the output
gradients at every spatial position; Σ_x is the mean over examples × positions and Σ_δ the sum over
positions averaged over examples (for Linear layers both are plain means over examples).

Since eig(A ⊗ B) = {a_i b_j}: λ_max(F) = λ_max(Σ_x)·λ_max(Σ_δ) and κ(F) = κ(Σ_x)·κ(Σ_δ) with
κ = λ_max/λ_min; the percentile condition number κ_p = λ_max/λ_(p), λ_(p) the eigenvalue at the p-th
percentile of the spectrum sorted in decreasing order (index ⌈p·n/100⌉), ignores the zero tail.

**Weight domination**: σ_max(W) / σ_max(∂L/∂W) (W reshaped to out × fan-in; L the mean loss with data
labels); a layer with a large ratio barely moves under gradient descent.

**Degeneracy** (Orhan & Pitkow 2018; Saxe et al. 2014): singular values s of W, stable rank
‖W‖²_F/‖W‖²₂ = Σs²/s₁², effective rank exp(−Σ pᵢ log pᵢ) with pᵢ = sᵢ/Σs (Roy & Vetterli 2007).

Example:
    >>> from landscape.problem import make_problem
    >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=64, device="cpu")
    >>> r = layerwise(p)
    >>> r.layers, r.quantities["kron_lambda_max"].shape
    (['1', '3', '5'], (3,))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import LandscapeError
from .objective import eval_mode, loss_grad, trainable
from .problem import Batch, Problem
from .store import set_attrs

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
PERCENTILES = (50, 90)


def layers_of(model: nn.Module) -> dict[str, nn.Module]:
    """Every Linear and Conv layer, by module name, in registration order (= depth for sequential nets)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LAYER_TYPES)}


def _input_rows(m: nn.Module, x: Tensor) -> tuple[Tensor, int]:
    """Rows of layer inputs (patches for convs), with a ones column for the bias; and positions per example."""
    if isinstance(m, nn.Linear):
        rows = x.reshape(-1, x.shape[-1])
        per = rows.shape[0] // x.shape[0]
    elif isinstance(m, nn.Conv2d):
        if m.groups != 1 or isinstance(m.padding, str):
            raise LandscapeError(f"layer-wise: grouped or 'same'-padded Conv2d {m} is not supported")
        cols = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)  # N, Ckk, T
        per = cols.shape[-1]
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    elif isinstance(m, nn.Conv1d):
        if m.groups != 1 or isinstance(m.padding, str):
            raise LandscapeError(f"layer-wise: grouped or 'same'-padded Conv1d {m} is not supported")
        cols = F.unfold(x.unsqueeze(-1), (m.kernel_size[0], 1), dilation=(m.dilation[0], 1),
                        padding=(m.padding[0], 0), stride=(m.stride[0], 1))
        per = cols.shape[-1]
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    else:
        raise LandscapeError(f"layer-wise: {type(m).__name__} layers are not supported (Linear, Conv1d, Conv2d)")
    if m.bias is not None:
        rows = torch.cat([rows, torch.ones_like(rows[:, :1])], dim=1)
    return rows, per


def _output_rows(m: nn.Module, d: Tensor) -> Tensor:
    if isinstance(m, nn.Linear):
        return d.reshape(-1, d.shape[-1])
    return d.reshape(d.shape[0], d.shape[1], -1).transpose(1, 2).reshape(-1, d.shape[1])


def kfac_factors(problem: Problem, *, fisher: str = "empirical", seed: int = 0,
                 batches: Sequence[Batch] | None = None,
                 layers: dict[str, nn.Module] | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """``{layer: (Σ_x, Σ_δ)}`` in float64 over ``batches`` (default: the problem's), model in eval mode."""
    if fisher not in ("empirical", "true"):
        raise LandscapeError(f"layer-wise: `fisher` must be empirical or true, got {fisher!r}")
    if fisher == "true" and problem.loss != "cross_entropy":
        raise LandscapeError("layer-wise: the true Fisher (sampled labels) needs `loss` cross_entropy")
    batches = problem.batches if batches is None else batches
    layers = layers_of(problem.model) if layers is None else layers
    if not layers:
        raise LandscapeError("layer-wise: the model has no Linear or Conv layer")
    g = torch.Generator().manual_seed(int(seed))
    sx = {k: None for k in layers}
    sd = {k: None for k in layers}
    nx = dict.fromkeys(layers, 0)
    n_examples = 0
    calls: list[tuple[str, Tensor, Tensor]] = []

    def hook(name):
        def fn(mod, inp, out):
            calls.append((name, inp[0].detach(), out))
        return fn

    handles = [m.register_forward_hook(hook(k)) for k, m in layers.items()]
    try:
        with eval_mode(problem.model), torch.enable_grad():
            for x, y in batches:
                calls.clear()
                out = problem.model(x)
                if fisher == "true":
                    probs = torch.softmax(out.detach().double(), -1).cpu()
                    y = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=g) \
                        .reshape(out.shape[:-1]).to(out.device)  # (sequences: one label per token)
                loss = problem.loss_sum(out, y)
                outs = [o for _, _, o in calls]
                if any(not o.requires_grad for o in outs):
                    raise LandscapeError("layer-wise: a layer output does not require grad "
                                         "(are all parameters frozen?)")
                grads = torch.autograd.grad(loss, outs, allow_unused=True)
                n_examples += len(x)
                for (name, inp, o), d in zip(calls, grads):
                    m = layers[name]
                    rows, _ = _input_rows(m, inp.double())
                    a = rows.T @ rows
                    sx[name] = a if sx[name] is None else sx[name] + a
                    nx[name] += rows.shape[0]
                    dr = _output_rows(m, (d if d is not None else torch.zeros_like(o)).double())
                    b = dr.T @ dr
                    sd[name] = b if sd[name] is None else sd[name] + b
    finally:
        for h in handles:
            h.remove()
    missing = [k for k in layers if sx[k] is None]
    if missing:
        raise LandscapeError(f"layer-wise: layers {', '.join(missing[:3])} are never called by the model's forward")
    return {k: (sx[k] / nx[k], sd[k] / n_examples) for k in layers}


def spectrum_stats(eig: Tensor | np.ndarray, percentiles: Sequence[float] = PERCENTILES) -> dict[str, float]:
    """λ_max, λ_min, κ = λ_max/λ_min (inf if λ_min ≤ 0) and κ_p = λ_max/λ_(p) of a PSD spectrum."""
    e = np.sort(np.clip(np.asarray(eig, dtype=np.float64).reshape(-1), 0.0, None))[::-1]
    lmax, lmin = float(e[0]), float(e[-1])
    out = {"lambda_max": lmax, "lambda_min": lmin, "kappa": lmax / lmin if lmin > 0 else math.inf}
    for p in percentiles:
        idx = min(len(e) - 1, max(0, math.ceil(p / 100.0 * len(e)) - 1))
        lp = float(e[idx])
        out[f"kappa_p{p:g}"] = lmax / lp if lp > 0 else math.inf
    return out


def weight_stats(W: Tensor) -> dict:
    """Singular values s of W (out × fan-in), stable rank Σs²/s₁², effective rank exp(H(s/Σs))."""
    s = torch.linalg.svdvals(W.detach().double().reshape(W.shape[0], -1)).cpu().numpy()
    total = s.sum()
    if total <= 0:
        return {"singular_values": s, "sigma_max": 0.0, "stable_rank": 0.0, "effective_rank": 0.0}
    p = s / total
    p = p[p > 0]
    return {"singular_values": s, "sigma_max": float(s[0]), "stable_rank": float((s ** 2).sum() / s[0] ** 2),
            "effective_rank": float(math.exp(-(p * np.log(p)).sum()))}


@dataclass
class LayerwiseResult:
    """Per-layer arrays (``quantities[q][i]`` is layer ``layers[i]``), singular values and parameters."""

    layers: list[str]
    quantities: dict[str, np.ndarray]
    singular_values: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    def write(self, f) -> None:
        """/layerwise/<quantity> (attrs: layers, parameters) and /layerwise/singular_values/<layer>."""
        for q, arr in self.quantities.items():
            path = f"layerwise/{q}"
            if path in f:
                del f[path]
            ds = f.create_dataset(path, data=np.asarray(arr, dtype=np.float64))
            set_attrs(ds, {"layers": self.layers, **self.params})
        if "layerwise/singular_values" in f:
            del f["layerwise/singular_values"]
        if self.singular_values:
            grp = f.create_group("layerwise/singular_values", track_order=True)
            set_attrs(grp, {"layers": self.layers})
            for name, s in self.singular_values.items():
                grp.create_dataset(name, data=np.asarray(s, dtype=np.float64))

    def table(self, quantities: Sequence[str] | None = None) -> str:
        qs = list(quantities or ("sigma_x_lambda_max", "sigma_delta_lambda_max", "kron_lambda_max", "kron_kappa_p90",
                                 "weight_domination", "stable_rank", "effective_rank"))
        qs = [q for q in qs if q in self.quantities]
        w0 = max([5] + [len(n) for n in self.layers])
        head = f"{'layer':<{w0}}  " + "  ".join(f"{q:>{max(11, len(q))}}" for q in qs)
        lines = [head, "-" * len(head)]
        for i, name in enumerate(self.layers):
            lines.append(f"{name:<{w0}}  " + "  ".join(f"{self.quantities[q][i]:>{max(11, len(q))}.4g}" for q in qs))
        return "\n".join(lines)


def layerwise(problem: Problem, *, fisher: str = "empirical", percentiles: Sequence[float] = PERCENTILES,
              seed: int = 0, batches: Sequence[Batch] | None = None, singular_values: bool = True) -> LayerwiseResult:
    """All quantities of docs/layerwise.md for every Linear/Conv layer (see the module docstring for the definitions).

    Quantities: ``{sigma_x, sigma_delta, kron}_{lambda_max, lambda_min, kappa, kappa_p<p>}``,
    ``weight_sigma_max``, ``grad_sigma_max``, ``weight_domination``, ``stable_rank``, ``effective_rank``,
    ``fan_in``, ``fan_out``.
    """
    layers = layers_of(problem.model)
    factors = kfac_factors(problem, fisher=fisher, seed=seed, batches=batches, layers=layers)
    theta = trainable(problem.model)
    _, grad = loss_grad(problem, theta, batches)
    names = list(layers)
    q: dict[str, list[float]] = {}
    svals: dict[str, np.ndarray] = {}

    def put(key: str, v: float) -> None:
        q.setdefault(key, []).append(float(v))

    for name in names:
        m = layers[name]
        A, B = factors[name]
        ea = torch.linalg.eigvalsh(A).cpu().numpy()
        eb = torch.linalg.eigvalsh(B).cpu().numpy()
        ek = np.outer(np.clip(ea, 0, None), np.clip(eb, 0, None)).reshape(-1)
        for prefix, e in (("sigma_x", ea), ("sigma_delta", eb), ("kron", ek)):
            for k, v in spectrum_stats(e, percentiles).items():
                put(f"{prefix}_{k}", v)
        ws = weight_stats(m.weight)
        gname = f"{name}.weight" if name else "weight"
        gw = grad.get(gname)
        gmax = float(torch.linalg.matrix_norm(gw.double().reshape(gw.shape[0], -1), ord=2)) if gw is not None \
            else float("nan")
        put("weight_sigma_max", ws["sigma_max"])
        put("grad_sigma_max", gmax)
        put("weight_domination", ws["sigma_max"] / gmax if gmax > 0 else math.inf)
        put("stable_rank", ws["stable_rank"])
        put("effective_rank", ws["effective_rank"])
        put("fan_in", A.shape[0])
        put("fan_out", B.shape[0])
        if singular_values:
            svals[name] = ws["singular_values"]
    params = {"fisher": fisher, "percentiles": [float(p) for p in percentiles], "seed": seed,
              "conv_convention": "Sigma_x mean over examples*positions; Sigma_delta sum over positions, "
                                 "mean over examples"}
    return LayerwiseResult(names, {k: np.asarray(v) for k, v in q.items()}, svals, params)

