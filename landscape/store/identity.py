"""What must agree between a result file and a run for the run to resume it, and the refusal that names
the first entry that differs.

Example:
    >>> compare_identity("run.h5", {"--x": [-1, 1, 5]}, {"--x": [-1, 1, 9]})
    Traceback (most recent call last):
    ...
    landscape.errors.ResumeMismatch: run.h5 was made by another run (--x: file has -1:1:5, this run has -1:1:9); \
pass `overwrite` to replace it or choose another `out`
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np

from ..errors import LandscapeError, ResumeMismatch
from ..results import H5_KW, first_line, identity_text, surface_problems
from ..schema import AXES
from .files import check_readable, read_attrs
from .h5io import _json


def surface_identity(config: dict, coords: tuple[np.ndarray, ...], model_fp: str, data_fp: str, dirs_fp: str) -> dict:
    """What must agree between a file and a run for the run to resume it."""
    return {
        "model weights (model_fingerprint)": model_fp,
        "data (data_fingerprint)": data_fp,
        "directions": dirs_fp,
        **{f"--{a}": [float(c[0]), float(c[-1]), len(c)] for a, c in zip(AXES, coords)},
        "grid dimensions": len(coords),
        **{f"--{k.replace('_', '-')}": config.get(k) for k in ("model", "model_args", "loss", "samples", "data",
                                                               "test_data", "curvature_map", "precision")},
    }


#: identity entries older files lack, and the value they were made with
_IDENTITY_DEFAULTS = {"--precision": "fp32"}


def compare_identity(path: str, stored: dict, wanted: dict, seeds: tuple | None = None) -> None:
    """Refuse a file whose identity differs from this run's, naming the first entry that differs.

    ``seeds``: (the file's --seed, this run's); when they differ, a differing data subset or set of directions
    is reported as the seed's doing, which is what the user changed."""
    for key, want in wanted.items():
        have = stored.get(key, _IDENTITY_DEFAULTS.get(key))
        if json.loads(_json(have)) != json.loads(_json(want)):
            if key == "grid dimensions":
                raise ResumeMismatch(f"{path} holds a {have}-D surface and this run asks for a {want}-D grid "
                                     "(`x`, `y`, `z`); give the axes of the run that made it, pass `overwrite` to "
                                     "replace it, or choose another `out`")
            if seeds and seeds[0] is not None and seeds[0] != seeds[1] and key in (
                    "model weights (model_fingerprint)", "data (data_fingerprint)", "directions"):
                raise ResumeMismatch(f"{path} was made by another run (`seed`: file has {seeds[0]}, this run has "
                                     f"{seeds[1]}; the seed picks the `samples` subset, random directions and the "
                                     f"initial weights of a model without `checkpoint`): pass "
                                     f"`seed` {seeds[0]} to resume it, `overwrite` to replace it, or choose another "
                                     "`out`")
            raise ResumeMismatch(f"{path} was made by another run ({key}: file has {identity_text(key, have)}, "
                                 f"this run has {identity_text(key, want)}); pass `overwrite` to replace it or choose "
                                 "another `out`")


def existing_attrs(path: str, kind: str, noun: str) -> dict | None:
    """Root attributes of an existing, readable result file of ``kind``; None if ``path`` does not exist."""
    if not os.path.exists(path):
        return None
    check_readable(path)
    attrs = read_attrs(path)
    if attrs.get("kind") != kind:
        raise LandscapeError(f"{path} holds a {attrs.get('kind')!r} result, not {noun}; "
                             "choose another `out` or pass `overwrite`")
    return attrs


def peek_surface(path: str) -> dict | None:
    """Config and identity of an existing landscape surface file, or None if ``path`` does not exist."""
    attrs = existing_attrs(path, "surface", "a surface")
    if attrs is None:
        return None
    try:
        out = {"config": json.loads(attrs.get("config", "{}")), "identity": json.loads(attrs.get("identity", "{}"))}
    except (TypeError, ValueError) as e:
        raise LandscapeError(f"{path} has an unreadable config/identity attribute ({first_line(e)}); it is corrupted: "
                             "inspect it with 'landscape info' or pass `overwrite` to recompute it") from None
    try:
        with h5py.File(path, "r", **H5_KW) as f:
            _read_everything(f)
            problem = surface_problems(f)
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as e:
        problem = f"part of it cannot be read ({first_line(e).strip(chr(39))})"
    if problem:
        raise LandscapeError(f"{path} is corrupted: {problem}; inspect it with 'landscape info' or pass `overwrite` "
                             "to recompute it")
    return out


def _read_everything(f: h5py.File) -> None:
    """Open every object and read every dataset and attribute: damaged metadata raises here, not mid-run."""
    def visit(name, obj):
        dict(obj.attrs)
        if isinstance(obj, h5py.Dataset):
            obj[()]

    dict(f.attrs)
    f.visititems(visit)

