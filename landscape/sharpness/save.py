"""Sharpness metrics (and a layer-wise result) into an HDF5 file: /metrics/<name> and /layerwise/<quantity>.

Example:
    >>> import os, tempfile, h5py
    >>> from landscape.sharpness._base import Metric
    >>> path = os.path.join(tempfile.mkdtemp(), "s.h5")
    >>> save_results(path, {"trace": Metric("trace", 12.5, {"stderr": 0.5})})
    'created'
    >>> with h5py.File(path) as f:
    ...     float(f["metrics/trace"][()]), float(f["metrics/trace"].attrs["stderr"])
    (12.5, 0.5)
"""

from __future__ import annotations

import numpy as np

from ..store import base_attrs, set_attrs, update_file
from ._base import Metric


def write_groups(f, metrics: dict[str, Metric] | None = None, layer=None) -> None:
    """Write /metrics/<name> (and extras) and /layerwise/<quantity> into an open h5py file, replacing
    datasets of the same name."""
    def put(path: str, data, attrs: dict) -> None:
        if path in f:
            del f[path]
        ds = f.create_dataset(path, data=np.asarray(data, dtype=np.float64))
        set_attrs(ds, attrs)

    for name, met in (metrics or {}).items():
        put(f"metrics/{name}", met.value, met.params)
        for ename, (arr, eattrs) in met.extras.items():
            put(f"metrics/{ename}", arr, {**eattrs, "of": name})
    if layer is not None:
        layer.write(f)


def save_results(path: str, metrics: dict[str, Metric] | None = None, layer=None, *, command: str = "",
                 config: dict | None = None, model_fingerprint: str = "", data_fingerprint: str = "",
                 provenance: dict | None = None) -> str:
    """Store metrics (and a :class:`landscape.layerwise.LayerwiseResult`) in ``path``.

    An existing landscape file (e.g. a surface) gets /metrics and /layerwise added in place (under the
    writer lock; datasets of the same name are replaced) -- if it was made from the same model, data, loss
    and samples (``provenance``, see :func:`landscape.store.check_provenance`); otherwise a new
    ``kind="sharpness"`` file is created atomically. Returns ``"added"`` or ``"created"``.
    """
    attrs = base_attrs(command, config or {}, model_fingerprint, data_fingerprint, kind="sharpness")
    parts = " and ".join((["/metrics"] if metrics else []) + (["/layerwise"] if layer is not None else [])) or "metrics"
    target = update_file(path, "sharpness", attrs, provenance=provenance, adding=parts, need=_size(metrics, layer))
    with target as f:
        write_groups(f, metrics, layer)
        if not target.created:
            f.attrs["metrics_command"] = command
    return "created" if target.created else "added"


def _size(metrics: dict[str, Metric] | None, layer) -> int:
    """About how many bytes :func:`write_groups` adds (for the free-space check)."""
    n = sum(8 * (np.size(m.value) + sum(np.size(a) for a, _ in m.extras.values())) for m in (metrics or {}).values())
    return n + (1 << 16) * (1 if layer is not None else 0)
