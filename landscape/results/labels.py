"""How result names and parameter values read on axes, legends, colour bars and in ``landscape info``.

Example:
    >>> label_of("test_acc"), param_text(0.123456), param_text([1, 2, 3, 4, 5])
    ('test accuracy', '0.1235', '[1, 2, 3, 4, …]')
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: how a surface name reads on an axis or a colorbar
LABELS = {
    "loss": "loss", "acc": "accuracy", "lambda_max": "λmax (top Hessian eigenvalue)",
    "lambda_min": "λmin (bottom Hessian eigenvalue)", "convexity": "|λmin / λmax|",
}


def label_of(surface: str) -> str:
    """``train_loss`` → ``train loss``; ``test_acc`` → ``test accuracy``."""
    split, _, metric = surface.partition("_")
    return f"{split} {LABELS.get(metric, metric)}" if metric else surface


def param_text(v: Any, width: int = 24) -> str:
    """A parameter value shortened for one line: numbers to 4 significant digits, lists to their first
    few entries, long strings cut."""
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, float | np.floating):
        return f"{float(v):.4g}"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, list | tuple | np.ndarray):
        items = list(np.asarray(v).reshape(-1)) if isinstance(v, np.ndarray) else list(v)
        head = ", ".join(param_text(x, 12) for x in items[:4])
        return f"[{head}{', …' if len(items) > 4 else ''}]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {param_text(x, 12)}" for k, x in list(v.items())[:4]) + \
            (", …}" if len(v) > 4 else "}")
    s = str(v)
    return s if len(s) <= width else s[: width - 1] + "…"

