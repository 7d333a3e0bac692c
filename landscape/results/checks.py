"""Is a result file what a run could have written? The checks readers and writers both make.

A damaged file (random bytes over a dataset, a truncated copy) must be refused in one line, never
plotted or resumed as if it were data: :func:`surface_problems` names the first value no run writes.

Example:
    >>> identity_text("--x", [-1.0, 1.0, 51]), identity_text("directions", "ab" * 32)
    ('-1:1:51', 'ababababab…')
"""

from __future__ import annotations

import json

import h5py
import numpy as np

from ..schema import AXES


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for one-line errors."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def identity_text(key: str, v) -> str:
    """An identity entry (see :func:`landscape.store.surface_identity`) as a message shows it: a grid axis
    as ``min:max:num``, a fingerprint cut to 10 characters, anything else as JSON."""
    if isinstance(v, list) and len(v) == 3 and key.startswith("--") and len(key) == 3:
        return f"{v[0]:g}:{v[1]:g}:{v[2]}"
    if isinstance(v, str) and len(v) == 64:
        return v[:10] + "…"
    return json.dumps(v)



def surface_problems(f: h5py.File) -> str | None:
    """Why an open surface file cannot have been written by a run (garbage on disk), or None.

    No run writes a done mask other than 0/1, a negative loss (cross-entropy and MSE are sums of
    non-negative terms; NaN and +inf are stored overflows), an accuracy outside [0, 1], or
    coordinates other than the recorded grid (non-increasing ones in files without a record);
    random bytes over a dataset almost surely do one of these.
    Readers (``plot``, ``info``) can call this too.
    """
    if "surfaces" not in f or "done" not in f["surfaces"]:
        return "it has no /surfaces/done mask"
    done_raw = np.asarray(f["surfaces/done"][()])
    bad = ~np.isin(done_raw, (0, 1))
    if bad.any():
        return f"/surfaces/done holds {int(done_raw[bad].reshape(-1)[0])} where only 0 and 1 are written"
    done = done_raw.astype(bool)
    try:  # the grid the run recorded ({"--x": [min, max, num], ...}); files of other tools have none
        identity = json.loads(f.attrs["identity"]) if "identity" in f.attrs else {}
    except (TypeError, ValueError):
        identity = {}
    for a in AXES:
        if f"coords/{a}" in f:
            c = np.asarray(f[f"coords/{a}"][()], dtype=np.float64)
            if not np.all(np.isfinite(c)) or (c.size > 1 and not np.all(np.diff(c) > 0)):
                return f"/coords/{a} is not a finite increasing sequence"
            spec = identity.get(f"--{a}") if isinstance(identity, dict) else None
            if isinstance(spec, list) and len(spec) == 3:  # what every run writes: linspace(min, max, num)
                try:  # (the count first: a damaged record must not make us allocate a huge grid)
                    lo, hi, num = float(spec[0]), float(spec[1]), int(spec[2])
                except (TypeError, ValueError, OverflowError):
                    continue  # an unreadable record: nothing to compare with
                if num != c.size or not np.allclose(c, np.linspace(lo, hi, num), rtol=1e-12, atol=0):
                    grid = identity_text(f"--{a}", [lo, hi, num])
                    return f"/coords/{a} does not hold the grid the file records (--{a} {grid})"
    for name, ds in f["surfaces"].items():
        if name == "done" or not isinstance(ds, h5py.Dataset) or ds.shape != done.shape:
            continue
        v = np.asarray(ds[()], dtype=np.float64)[done]
        if name.endswith("_loss"):
            wrong = (v < -1e-6 * np.maximum(1.0, np.abs(v))) | (v == -np.inf)
        elif name.endswith("_acc"):
            wrong = (v < -1e-9) | (v > 1 + 1e-9)
        else:
            continue
        if wrong.any():
            return f"/surfaces/{name} holds {v[wrong][0]:g} at a done point, a value no run writes"
    return None

