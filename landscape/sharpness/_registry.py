"""The registry of sharpness metrics: every family, its metric names and its options, in table order.

A new metric is one module that defines a :class:`~landscape.sharpness._base.Family` and one line here (or one
:func:`register_metric` call): its names join ``--metrics`` and :func:`compute_metrics`, and its options become
keywords of :func:`compute_metrics` and flags of ``landscape sharpness``.

Example:
    >>> parse_metrics("eps,gradient_path")
    ['eps_sharpness', 'loss_variation', 'gradient_predictiveness', 'beta_smoothness']
    >>> [o.name for o in options()][:3]
    ['lr', 'lanczos_steps', 'tol']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import LandscapeError
from ..problem import Problem
from . import adaptive, curvature, directional, eps, flatness, gradient_path, layers
from ._base import Family, Metric, Option

#: every family by group name, in table (and --help) order
FAMILIES: dict[str, Family] = {}
#: group name -> its metric names (``all`` is every one of them)
GROUPS: dict[str, tuple[str, ...]] = {}


def register_metric(family: Family) -> Family:
    """Add (or replace) a metric family: its group, names and options join :func:`parse_metrics`,
    :func:`compute_metrics` and ``landscape sharpness``."""
    taken = {n: g for g, f in FAMILIES.items() if g != family.group for n in f.names}
    clash = [n for n in (family.group, *family.names) if n in taken or n in FAMILIES and n != family.group]
    if clash:
        raise LandscapeError(f"metric family {family.group!r}: the name {clash[0]!r} is taken")
    declared = {o.name: o for f in FAMILIES.values() for o in f.options if isinstance(o, Option)}
    for o in family.options:
        if isinstance(o, str) and o not in declared:
            raise LandscapeError(f"metric family {family.group!r}: option {o!r} is declared by no family before it")
    FAMILIES[family.group] = family
    GROUPS[family.group] = tuple(family.names)
    return family


def unregister_metric(group: str) -> None:
    """Remove a family registered with :func:`register_metric` (a test's toy metric, for instance)."""
    FAMILIES.pop(group, None)
    GROUPS.pop(group, None)


for _family in (curvature.FAMILY, eps.FAMILY, adaptive.WORST, adaptive.AVERAGE, flatness.FAMILY,
                gradient_path.FAMILY, directional.FAMILY, layers.FAMILY):
    register_metric(_family)


def all_metrics() -> tuple[str, ...]:
    """Every metric name, in table order."""
    return tuple(n for names in GROUPS.values() for n in names)


def options() -> list[Option]:
    """Every family's options, each once, in the order the families declare them."""
    out: dict[str, Option] = {}
    for f in FAMILIES.values():
        for o in f.options:
            if isinstance(o, Option) and o.name not in out:
                out[o.name] = o
    return list(out.values())


def parse_metrics(text: str | Sequence[str]) -> list[str]:
    """``all``, group names (curvature, eps, worst, average, flatness, gradient_path, directional,
    layerwise) and metric names, comma separated → ordered unique metric names."""
    names_all = all_metrics()
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    out: list[str] = []
    for it in items:
        names = names_all if it == "all" else GROUPS.get(it, (it,) if it in names_all else None)
        if names is None:
            raise LandscapeError(f"`metrics`: unknown metric {it!r}; choose all, a group "
                                 f"({', '.join(GROUPS)}) or a name ({', '.join(names_all)})")
        out.extend(n for n in names if n not in out)
    if not out:
        raise LandscapeError(f"`metrics` {text!r} names no metric; choose all, a group ({', '.join(GROUPS)}) or a "
                             f"name ({', '.join(names_all)})")
    return out


def compute_metrics(problem: Problem, metrics: str | Sequence[str] = "all", *, seed: int = 0,
                    progress: Callable[[str], None] | None = None, world=None, **kwargs) -> dict[str, Metric]:
    """Every requested metric (names as in :func:`parse_metrics`; ``layerwise`` is skipped here, see
    :func:`landscape.layerwise.layerwise`). ``eos_ratio`` is computed only when ``lr`` is given.

    Keywords: ``seed`` and every option of the registered families (:func:`options`), with their defaults:
    ``lr`` (None), ``lanczos_steps`` (100), ``tol`` (1e-4), ``trace_matvecs`` (30), ``eps`` (1e-3),
    ``eps_steps`` (10), ``eps_starts`` (3), ``rho`` (None: per kind), ``m`` (128), ``max_examples`` (1024),
    ``apgd_steps`` (20), ``avg_samples`` (10), ``flat_target`` (None), ``flat_threshold`` (0.1),
    ``flat_samples`` (10), ``flat_iters`` (20), ``etas`` (None: 8 values in [0.05, 0.4]), ``direction``
    (None: −g) and ``direction_label``. ``progress``: called with a short line before each family.

    ``world`` (a :class:`~landscape.parallel.World` or any object with ``rank``, ``size`` and
    ``allreduce_sum``): every rank computes its share (data batches i on rank i % size, example batches of
    worst-/average-case sharpness j on rank j % size) and gets the same results as one process, up to the
    order of float64 additions. Collective: every rank must call it with the same arguments."""
    known = {o.name: o.default for o in options() if o.library}
    unknown = [k for k in kwargs if k not in known]
    if unknown:
        raise TypeError(f"compute_metrics() got an unexpected keyword argument {unknown[0]!r}")
    values = {**known, **kwargs, "seed": seed}
    names = parse_metrics(metrics)
    say = progress or (lambda s: None)
    out: dict[str, Metric] = {}
    for family in FAMILIES.values():
        wanted = [n for n in family.names if n in names]
        if wanted and family.compute is not None:
            out.update(family.compute(problem, wanted, values, world, say))
    return out
