"""The choice of K, the points one forward pass evaluates, and :func:`make_evaluator`, which applies it.

``points_per_batch`` = ``"auto"`` caps K by memory (stacked weights + activations vs. free memory), then
times K = 1, 4, 16, 64 on the first ~1,024 samples and keeps the fastest (K = 1, the per-point path, for
compute-bound models such as conv nets on a CPU); the probe is bounded by what it can save
(:func:`landscape.autotune.probe_budget`). An integer forces K. Before any batched evaluator is used, two
points are run both ways (:func:`_check_batched`): models vmap cannot run (``.item()`` in ``forward``,
data-dependent control flow, random ops) or that give different numbers fall back to the per-point path
with a one-line notice.

Example:
    >>> from landscape.problem import make_problem
    >>> from landscape.directions import make_random_directions
    >>> p = make_problem("zoo:mlp", data="zoo:synthetic", samples=64, device="cpu")
    >>> type(make_evaluator(p, make_random_directions(p.model, 2, seed=0), 1)).__name__
    'PointEvaluator'
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import torch

from .. import autotune
from ..autotune import free_memory, module_output_bytes
from ..directions._base import Directions
from ..errors import LandscapeError
from ..problem import Batch, Problem
from ._base import Evaluator
from .batched import BatchedEvaluator
from .device import autocast, notice, sync
from .groups import Group, make_groups
from .point import PointEvaluator

#: samples the auto-K probe evaluates (the first batches of the training split, at least one)
PROBE_ROWS = 1024
#: most grid points one vmap call evaluates when K is chosen automatically
MAX_AUTO_K = 64
#: share of the free memory the stacked weights and activations of one group may take
MEMORY_SHARE = 0.25


def activation_bytes(problem: Problem, batch_size: int | None = None) -> int:
    """Rough peak activation memory of one forward pass over a batch (sum of all module outputs)."""
    n = batch_size or max(len(b[0]) for b in problem.batches)
    return module_output_bytes(problem.model, problem.batches[0][0][:2]) * n


def max_points_per_batch(problem: Problem, batched: BatchedEvaluator, cap: int = MAX_AUTO_K) -> int:
    """The largest K whose stacked weights and activations fit in a share of the free memory."""
    elem = next(iter(batched._center.values())).element_size() if batched.moving else 4
    per_point = batched.param_numel * elem + activation_bytes(problem)
    budget = MEMORY_SHARE * free_memory(problem.device)
    return int(max(1, min(cap, budget // max(1, per_point))))


def _time_per_point(run: Callable[[], object], k: int, device: torch.device, reps: int = 3,
                    max_reps: int = 15, seconds: float = 0.1) -> float:
    """Fastest of at least ``reps`` timed runs (more, up to ``max_reps``, while they take under ``seconds``)."""
    run()  # warm-up (allocations, vmap/compile set-up)
    times: list[float] = []
    while len(times) < reps or (len(times) < max_reps and sum(times) < seconds):
        sync(device)
        t = time.perf_counter()
        run()
        sync(device)
        times.append(time.perf_counter() - t)
    return min(times) / k  # other processes only ever add time: on a shared VM one run can take twice another


def choose_points_per_batch(problem: Problem, per_point: PointEvaluator, batched: BatchedEvaluator,
                            k_max: int, budget_s: float = 3.0, t1: float | None = None) -> tuple[int, dict[int, float]]:
    """Time K = 1, 4, 16, 64 (≤ ``k_max``, which is tried too) on the first training batches; the fastest K.

    Each K is timed as the fastest of 3-15 runs after a warm-up (cheap runs are repeated more: the
    same call varies up to 2× on a shared VM). Batched must beat K = 1 by 10 %, a
    larger K the best so far by 5 %; growing K stops after two K in a row that do not, after a
    K ≥ 16 that is 20 % slower, or when the next probe would take the total past ``budget_s``
    seconds (compute-bound models stay at K = 1). ``t1``: seconds per point of K = 1 already measured on
    the same rows (:func:`~landscape.autotune.probe_budget`), not timed again. Returns
    ``(K, {K: seconds per point})``.
    """
    batch, batch_k = _prepared(per_point, batched, make_groups(problem, _probe_rows(per_point)))
    dev = problem.device
    nd = per_point.directions.ndim
    t0 = time.perf_counter()
    times: dict[int, float] = {}

    def time_per_point() -> float:
        try:
            per_point.move_to([0.0] * nd)
            return _time_per_point(lambda: per_point.accumulate(batch)[0]
                                   .cpu(), 1, dev, seconds=window)
        finally:
            per_point.restore()

    window = min(0.1, budget_s / 10)  # repeats of one K stop after this long (the whole probe within budget_s)
    times[1] = time_per_point() if t1 is None else t1
    best = 1
    candidates = sorted({k for k in (4, 16, 64) if k < k_max} | ({k_max} if k_max > 1 else set()))
    misses = 0
    k_before = batched.k
    try:
        for k in candidates:
            # the next probe costs about 4 runs of K points; skip it if that would overrun the budget
            if time.perf_counter() - t0 + 4 * k * times[best] > budget_s:
                break
            batched.k = k  # (the row chunks depend on K)
            coeffs = torch.zeros((k, nd), dtype=torch.float64, device=dev)
            times[k] = _time_per_point(lambda c=coeffs: batched.run_group(c, batch_k)[0].cpu(), k, dev,
                                       seconds=window)
            if times[k] < (0.9 if best == 1 else 0.95) * times[best]:
                best, misses = k, 0
            else:
                misses += 1
                if misses == 2 or (k >= 16 and times[k] > 1.2 * times[best]):
                    break
        if best > 1 and time.perf_counter() - t0 + 4 * times[1] <= budget_s:
            # K = 1 once more: load that came and went during the probe then hits both alike
            times[1] = min(times[1], time_per_point())
            if not times[best] < 0.9 * times[1]:
                best = 1
    finally:
        batched.k = k_before
        batched.release()
    return best, times


def _probe_rows(per_point: PointEvaluator) -> list[Batch]:
    """The first batches of the first split, about ``PROBE_ROWS`` samples (joined as a run joins them)."""
    probe, rows = [], 0
    for b in per_point.batches[per_point.splits[0]]:
        if rows >= PROBE_ROWS:
            break
        probe.append(b)
        rows += len(b[0])
    return probe


def _prepared(per_point: PointEvaluator, batched: BatchedEvaluator, raw: list[Group]) -> tuple[list, list]:
    """``raw`` groups as each path runs them (prepared once when they share the fold)."""
    mine = per_point.prepare(raw)
    return mine, mine if batched.fold is per_point.fold else batched.prepare(raw)


#: the batched and per-point paths agree when their summed losses differ by at most this share of the loss
#: plus a logit error of this size relative to the largest |logit| (per sample; see :func:`_check_batched`)
AGREE_RTOL = {"fp32": 1e-5, "fp64": 1e-12, "bf16": 5e-2, "fp16": 5e-2}


def _check_batched(per_point: PointEvaluator, batched: BatchedEvaluator) -> str | None:
    r"""Run two points both ways on a few samples; why the batched path is unusable, or None.

    Like with like: both paths' losses come from the same stable kernel (:mod:`landscape.kernels`), so
    they differ only by the rounding of their forward passes, whose matrix products add in different
    orders. With δ = r·(1 + max|z|) the logits' allowed rounding (r = :data:`AGREE_RTOL`, z the
    per-point outputs on the n probe samples), a cross-entropy moves by |Δℓ| ≤ 2δ(1 − p_t) + δ² ≤
    2δℓ + δ² (relative, also at a minimum) and a squared error by 2|f − t|δ + δ², so the tolerance is
    (r + 2δ)|L| + nδ² for the cross-entropy and r|L| + nδ(2(1 + max|z|) + δ) otherwise. Rounding at
    a trained minimum passes (the old test compared two imprecise losses and failed there); a model that
    vmap evaluates differently (random ops, batch statistics, in-place state) gives differences of the
    size of the loss itself and fails.
    """
    problem = per_point.problem
    split = per_point.splits[0]
    x, y = per_point.batches[split][0]
    few, few_k = _prepared(per_point, batched, make_groups(problem, [(x[:4], y[:4])]))
    nd = per_point.directions.ndim
    g = torch.Generator().manual_seed(0)
    coeffs = (torch.rand((2, nd), generator=g, dtype=torch.float64) - 0.5) * 0.2
    try:
        got, _, _ = batched.run_group(coeffs.to(problem.device), few_k)
    except Exception as e:  # noqa: BLE001 - vmap refuses many things; all mean "use per-point"
        first = str(e).splitlines()[0] if str(e) else ""
        return f"vmap cannot batch this model ({type(e).__name__}: {first[:150]})"
    finally:
        batched.release()
    want, scale = [], 0.0
    try:
        for c in coeffs.tolist():
            per_point.move_to(c)
            want.append(per_point.accumulate(few)[0])
            with torch.inference_mode(), autocast(problem.device, per_point.precision):
                for xs, *_ in few:
                    scale = max([scale] + [float(per_point.forward(xb).float().abs().max()) for xb in xs])
    finally:
        per_point.restore()
    want_np, got_np = torch.stack(want).cpu().numpy(), got.cpu().numpy()
    r = AGREE_RTOL.get(per_point.precision, 1e-5)
    n = sum(len(yb) for _, yb, _ in few)
    delta = r * (1.0 + scale)  # the logits' rounding error allowed
    if problem.loss == "cross_entropy":  # |Δℓ| ≤ 2δ(1 − p_t) + δ² ≤ 2δℓ + δ²: relative, also at the minimum
        tol = (r + 2 * delta) * np.abs(want_np) + n * delta ** 2
    else:  # |Δ(f − t)²| ≤ 2|f − t|δ + δ²
        tol = r * np.abs(want_np) + n * delta * (2 * (1.0 + scale) + delta)
    with np.errstate(invalid="ignore"):
        agree = (got_np == want_np) | (np.isnan(got_np) & np.isnan(want_np)) | (np.abs(got_np - want_np) <= tol)
    if not agree.all():
        return (f"the batched path's summed losses {got_np} differ from the per-point path's {want_np} by more "
                f"than float rounding (tolerance {tol.max():.2g}): this model computes differently under vmap "
                "(random ops, batch statistics or in-place state in forward)")
    return None


def make_evaluator(problem: Problem, directions: Directions, points_per_batch: str | int = "auto", *,
                   precision: str = "fp32", compile: bool = False, splits: list[str] | None = None,
                   verbose: bool = True, n_points: int | None = None) -> Evaluator:
    """The fastest evaluator for ``problem``: :class:`BatchedEvaluator` or :class:`PointEvaluator`.

    ``points_per_batch``: ``"auto"`` (memory cap, then a short timing probe), or K ≥ 1 (1 = per
    point). Models vmap cannot evaluate, or evaluates differently, fall back to per-point with a
    one-line notice. ``LANDSCAPE_POINTS_PER_BATCH`` in the environment overrides ``auto``. ``auto`` is
    bounded by what it can save (:func:`~landscape.autotune.probe_budget`): no probe when a point's fixed
    cost is under 2 % of its time, and at most 5 % of the estimated run over ``n_points`` points (set-up,
    check and timings together).
    """
    auto = str(points_per_batch).strip().lower() == "auto"
    if auto and os.environ.get("LANDSCAPE_POINTS_PER_BATCH"):
        points_per_batch, auto = os.environ["LANDSCAPE_POINTS_PER_BATCH"], False
    if not auto:
        try:
            k = int(points_per_batch)
            if k < 1:
                raise ValueError
        except ValueError:
            raise LandscapeError(f"`points_per_batch`={points_per_batch!r}: use auto or a positive integer") from None
    per_point = PointEvaluator(problem, directions, splits, precision=precision, compile=compile)
    if not auto and k == 1:
        return per_point
    problem = per_point.problem  # (with precision="fp64": its float64 copy)
    budget = t1 = None
    start = time.perf_counter()
    if auto:
        if n_points is not None and autotune.PROBE_SHARE * n_points < 16:
            return per_point  # timing K = 4 costs ~16 points: more than the run's share, whatever a point costs
        try:
            probe = per_point.prepare(make_groups(problem, _probe_rows(per_point)))
            budget, t1, _ = autotune.probe_budget(per_point, n_points, probe)
        except Exception:  # noqa: BLE001 - inputs the probe cannot cut to 2 rows: time K as before
            budget, t1 = autotune.PROBE_BUDGET_S, None
        if t1 is not None and 4 * 4 * t1 > budget:  # not even K = 4 could be timed within what the probe may cost
            return per_point
    batched = BatchedEvaluator(problem, directions, 1 if auto else k, splits, precision=precision, compile=compile,
                               share=per_point)
    why = _check_batched(per_point, batched)
    if why is not None:
        if verbose:
            notice(f"evaluating one grid point at a time: {why} (`points_per_batch` 1 skips this check)")
        return per_point
    if auto:
        k_max = max_points_per_batch(problem, batched)
        left = budget - (time.perf_counter() - start)  # the budget covers the set-up and check above too
        k, _ = choose_points_per_batch(problem, per_point, batched, k_max, left, t1) if k_max > 1 else (1, {})
        if k == 1:
            return per_point
        batched.k = k
    return batched
