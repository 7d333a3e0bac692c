"""What every sharpness metric shares: the :class:`Metric` result, the :class:`Option` and :class:`Family`
records of the registry (:mod:`landscape.sharpness._registry`), and the seeded random draws.

Example:
    >>> m = Metric("lambda_max", 2.5, {"seed": 0})
    >>> float(m), m.params["seed"]
    (2.5, 0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor


@dataclass
class Metric:
    """One metric: its value (a float or an array), the parameters used, and optional extra arrays
    (``extras[name] = (array, attrs)``, stored beside it under /metrics)."""

    name: str
    value: float | np.ndarray
    params: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)

    def __float__(self) -> float:
        return float(np.asarray(self.value).reshape(-1)[0]) if np.size(self.value) else float("nan")


@dataclass(frozen=True)
class Option:
    """One option of a metric family: a keyword of :func:`~landscape.sharpness.compute_metrics` and, unless
    ``cli`` is False, the flag ``--name-with-dashes`` of ``landscape sharpness`` (whose argparse dest is
    ``name``, so library errors naming ```name``` read as that flag).

    ``kind``: ``float+`` / ``int+`` (positive numbers), ``choice`` (one of ``choices``) or ``str``.
    ``default`` is the library's default; ``cli_default`` the command line's when it differs in form
    (a text that ``parse`` turns into the library's value, e.g. ``--etas 0.05:0.4:8``). ``library``: False
    for a flag that the command turns into other keywords itself (``--direction-from``).
    """

    name: str
    default: Any = None
    kind: str = "str"
    help: str | None = None
    metavar: str | None = None
    choices: tuple | None = None
    cli_default: Any = None
    parse: Callable[[str], Any] | None = None
    cli: bool = True
    library: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Family:
    """A group of metrics computed together: ``names`` (in table order), ``compute(problem, names, options,
    world, say) -> {name: Metric}`` (``options``: every option's value by name, ``say``: a progress line;
    None for a family the command computes itself) and ``options``: the family's own :class:`Option` s, or
    the names of options an earlier family declared (shared ones appear once, where first declared)."""

    group: str
    names: tuple[str, ...]
    compute: Callable[..., dict[str, Metric]] | None
    options: tuple[Option | str, ...] = ()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _batch_gen(seed: int, index: int) -> torch.Generator:
    """The generator of example batch ``index``: seeded from (seed, index), so a batch draws the same numbers
    whichever rank computes it and however many batches came before it."""
    state = np.random.SeedSequence([int(seed) % 2 ** 64, int(index)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))


def _randn_like(t: Tensor, g: torch.Generator) -> Tensor:
    return torch.randn(t.shape, generator=g, dtype=torch.float64).to(device=t.device, dtype=t.dtype)
