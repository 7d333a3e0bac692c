"""Small HDF5 records every result file shares: root attributes, JSON attributes, named tensors and the
indices of a ``samples`` subset.

Example:
    >>> _json({"b": 1, "a": (1, 2)})
    '{"a": [1, 2], "b": 1}'
"""

from __future__ import annotations

import datetime as _dt
import json

import h5py
import numpy as np
import torch

from .. import __version__
from ..params import Named
from ..schema import FORMAT, FORMAT_VERSION, SPLITS


def _json(obj) -> str:
    def default(o):
        if isinstance(o, np.ndarray | torch.Tensor):
            return f"<array {tuple(o.shape)}>"
        if isinstance(o, np.generic):
            return o.item()
        return str(o)

    return json.dumps(obj, sort_keys=True, default=default)


def base_attrs(command: str, config: dict, model_fingerprint: str, data_fingerprint: str, kind: str) -> dict:
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "landscape_version": __version__,
        "torch_version": str(torch.__version__), "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": command, "config": _json(config), "model_fingerprint": model_fingerprint,
        "data_fingerprint": data_fingerprint, "kind": kind,
    }


def write_named(group: h5py.Group, named: Named, attrs: dict | None = None) -> None:
    for k, v in named.items():
        group.create_dataset(k, data=v.detach().to("cpu", torch.float32).numpy())
    for k, v in (attrs or {}).items():
        if v is not None:
            group.attrs[k] = v if isinstance(v, str | int | float | bool | np.ndarray) else _json(v)


def read_named(group: h5py.Group, device=None) -> Named:
    return {k: torch.from_numpy(np.asarray(group[k][()])).to(device) for k in group.keys()}


def write_samples(f: h5py.File, info: dict) -> None:
    """``/samples/<split>``: the indices of the examples a ``--samples`` run evaluates (none if it uses all)."""
    for split in SPLITS:
        idx = info.get(f"{split}_indices")
        total = info.get(f"{split}_total")
        if idx is None or total is None or len(idx) == total:
            continue
        ds = f.create_dataset(f"samples/{split}", data=np.asarray(idx, dtype=np.int64))
        ds.attrs["of"] = int(total)
        ds.attrs["seed"] = int(info.get("seed") or 0)


def replace_group(parent: h5py.Group, name: str) -> h5py.Group:
    if name in parent:
        del parent[name]
    return parent.create_group(name, track_order=True)


def set_attrs(obj, attrs: dict) -> None:
    for k, v in attrs.items():
        if v is None:
            continue
        obj.attrs[k] = v if isinstance(v, str | int | float | bool | np.ndarray | np.generic) else _json(v)
