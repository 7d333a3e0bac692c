"""The input-layer fold: a sequential model's first layer computed once per batch for the centre and each
direction, so that a point's first-layer output is one small matrix product (both evaluation paths, fp32/fp64).

For an ``nn.Sequential`` whose first layer is a ``Linear``/``Conv`` on the input, that layer's output for the
centre and for each direction is computed once per batch; a point's first-layer output is then ``[1, c] @ Z``,
exact to rounding. It removes the first layer's matrix product from every point (60 % of the demo MLP's
multiply-adds). See :class:`InputFold`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from ..autotune import free_memory, module_output_bytes
from ..batches import adapts_outputs
from ..directions._base import Directions
from ..problem import Batch
from .groups import Group

#: the body's activations for the rows the fold joins into one tensor may take this many bytes
MERGE_BYTES = 16 << 20

#: layer types the fold understands: affine in their (weight, bias) for a fixed input
_FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: the fold's cache may take at most this share of the free memory
FOLD_MEMORY_SHARE = 0.1


class InputFold:
    r"""The first layer of a sequential model, computed once per batch for the centre and each direction.

    For a model :math:`f = g \circ L \circ p` whose first layer :math:`L` (``Linear`` or ``Conv``) is
    affine in its weights and acts on the (fixed) input through parameter-free modules :math:`p`
    (``Flatten``), every grid point shares

    .. math:: L_{\theta + \sum_i c_i d_i}(u) = L_\theta(u) + \sum_i c_i\, L^{0}_{d_i}(u),

    where :math:`L^0_d` is the layer with weight and bias taken from the direction :math:`d`. So the
    ``(1 + ndim)`` outputs :math:`Z = [L_\theta(u), L^0_{d_1}(u), \dots]` are computed once per batch and a
    point's first-layer output is one matrix product ``[1, c] @ Z`` (K points: ``C @ Z``, with ``C`` the
    ``(K, 1 + ndim)`` coefficients): for the demo MLP that removes 60 % of the multiply-adds of every
    point. Exact up to float rounding (~1e-6 relative). The cache costs ``(1 + ndim)`` × the layer's
    output over all evaluation samples; :func:`input_fold` skips the fold when that does not fit.

    Example:
        >>> from landscape.problem import make_problem
        >>> from landscape.directions import make_random_directions
        >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=64, device="cpu")
        >>> d = make_random_directions(p.model, 2, seed=0)
        >>> fold = input_fold(p.model, d, p.batches)
        >>> fold.names, tuple(fold.stack(p.batches[0][0]).shape)
        (['1.weight', '1.bias'], (3, 64, 32))
    """

    def __init__(self, prefix: list[nn.Module], layer: nn.Module, body: nn.Module, layer_name: str,
                 directions: Directions):
        self.prefix = prefix
        self.layer = layer
        self.body = body
        self.names = [f"{layer_name}.{n}" for n, _ in layer.named_parameters(recurse=False)]
        own = dict(layer.named_parameters(recurse=False))

        def pick(src: dict, name: str, fallback):
            return src[name] if name in src else fallback

        self.row_bytes = 0  # the body's activations per sample (set by input_fold)
        w, b = f"{layer_name}.weight", f"{layer_name}.bias"
        self._weights = [(pick(directions.center, w, own["weight"]), pick(directions.center, b, own.get("bias")))]
        for v in directions.vectors:
            zw = torch.zeros_like(own["weight"])
            zb = None if own.get("bias") is None else torch.zeros_like(own["bias"])
            self._weights.append((pick(v, w, zw), pick(v, b, zb)))

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the cache (the layer's weights)."""
        return self._weights[0][0].dtype

    def _apply(self, u: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if isinstance(self.layer, nn.Linear):
            return torch.nn.functional.linear(u, weight, bias)
        return self.layer._conv_forward(u, weight, bias)

    def stack(self, x: Tensor) -> Tensor:
        """``(1 + ndim, n, ...)``: the layer's output for the centre, then for each direction (bias included)."""
        with torch.inference_mode():
            u = x
            for m in self.prefix:
                u = m(u)
            return torch.stack([self._apply(u, w, b) for w, b in self._weights])

    @staticmethod
    def combine(z: Tensor, coeffs: Tensor) -> Tensor:
        """First-layer output of the points ``coeffs`` (``(K, 1 + ndim)``, first column 1): ``(K, n, ...)``."""
        return (coeffs @ z.reshape(len(z), -1)).reshape(len(coeffs), *z.shape[1:])

    def prepare(self, groups: list[Group]) -> list[Group]:
        """The same groups with their input batches replaced by stacked first-layer outputs.

        Consecutive batches of a group are joined into one tensor (the cache exists anyway, so this
        costs no memory) while the body's activations for the joined rows stay under
        ``MERGE_BYTES``: a small model then runs a few large matrix products per point instead of
        many small ones, whose fixed cost dominates.
        """
        out = []
        for xs, y, onehot in groups:
            stacks = [self.stack(x) for x in xs]
            rows = max(1, MERGE_BYTES // max(1, self.row_bytes))
            merged, part, n = [], [], 0
            for z in stacks:
                if part and n + z.shape[1] > rows:
                    merged.append(part[0] if len(part) == 1 else torch.cat(part, 1))
                    part, n = [], 0
                part.append(z)
                n += z.shape[1]
            merged.append(part[0] if len(part) == 1 else torch.cat(part, 1))
            out.append((merged, y, onehot))
        return out


def _param_device(model: nn.Module) -> torch.device | None:
    p = next(iter(model.parameters()), None)
    return None if p is None else p.device


def input_fold(model: nn.Module, directions: Directions, batches: list[Batch], precision: str = "fp32",
               max_bytes: int | None = None) -> InputFold | None:
    """An :class:`InputFold` for ``model``, or None where it does not apply.

    It applies to an ``nn.Sequential`` (its own ``forward``) whose first module holding parameters
    or buffers is a plain ``Linear``/``Conv`` reached through parameter-free modules, without autocast, when
    the cache fits in ``max_bytes`` (default: a tenth of the free memory).
    """
    if precision not in ("fp32", "fp64") or not isinstance(model, nn.Sequential) \
            or type(model).forward is not nn.Sequential.forward:
        return None
    if adapts_outputs(model) or any(not isinstance(x, Tensor) or x.device != _param_device(model) for x, _ in batches):
        return None  # outputs picked by a hook, inputs that are not one tensor, or streamed data (cache ~ data)
    children = list(model.named_children())
    first = next((i for i, (_, m) in enumerate(children)
                  if any(True for _ in m.parameters()) or any(True for _ in m.buffers())), None)
    if first is None:
        return None
    name, layer = children[first]
    if type(layer) not in _FOLDABLE or type(layer).forward is not _FOLDABLE[_FOLDABLE.index(type(layer))].forward:
        return None
    if any(not isinstance(m, (nn.Flatten, nn.Identity, nn.Unflatten)) for _, m in children[:first]):
        return None  # other parameter-free modules may be random or costly: keep them per point
    body = nn.Sequential(OrderedDict(children[first + 1:]))
    own = {t.data_ptr() for t in layer.parameters(recurse=False)}
    if any(t.data_ptr() in own for t in (*body.parameters(), *body.buffers())):
        return None  # weights tied to a later layer: that layer must see them move
    fold = InputFold([m for _, m in children[:first]], layer, body, name, directions)
    if not batches:
        return None
    rows = sum(len(x) for x, _ in batches)
    probe = fold.stack(batches[0][0][:1])
    fold.row_bytes = module_output_bytes(body, probe[0])
    need = probe.numel() * probe.element_size() * rows
    budget = FOLD_MEMORY_SHARE * free_memory(batches[0][0].device) if max_bytes is None else max_bytes
    return fold if need <= budget else None
