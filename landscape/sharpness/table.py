"""The plain-text table ``landscape sharpness`` prints: metric, value, the main parameters.

Example:
    >>> from landscape.sharpness._base import Metric
    >>> print(format_table({"trace": Metric("trace", 12.5, {"stderr": 0.5})}))
    metric  value  parameters
    ------  -----  ----------
    trace    12.5  stderr=0.5
"""

from __future__ import annotations

import math

import numpy as np

from ._base import Metric


def format_value(v) -> str:
    if np.size(v) != 1:
        return f"<array {np.shape(v)}>"
    x = float(np.asarray(v).reshape(-1)[0])
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.6g}"


def format_table(metrics: dict[str, Metric]) -> str:
    """A plain-text table: metric, value, the main parameters."""
    keys = ("rho", "p", "eps", "m", "steps", "starts", "lr", "target", "threshold", "direction", "stderr", "backend",
            "residual")
    rows = []
    for name, met in metrics.items():
        prm = ", ".join(f"{k}={format_value(met.params[k]) if not isinstance(met.params[k], str) else met.params[k]}"
                        for k in keys if k in met.params and met.params[k] is not None)
        if met.params.get("lower_bound"):
            prm = "lower bound of the maximum, " + prm
        if met.params.get("converged") is False:
            prm += ", NOT converged (raise --lanczos-steps)"
        rows.append((name, format_value(met.value), prm))
    w0 = max([len("metric")] + [len(r[0]) for r in rows])
    w1 = max([len("value")] + [len(r[1]) for r in rows])
    lines = [f"{'metric':<{w0}}  {'value':>{w1}}  parameters", f"{'-' * w0}  {'-' * w1}  {'-' * 10}"]
    lines += [f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows]
    return "\n".join(lines)
