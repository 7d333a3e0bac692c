"""Directions stored in a result file (``directions`` given as ``FILE.h5``), read back as named tensors and
checked against the model (:mod:`landscape.directions.file` makes them :class:`~landscape.directions.Directions`)."""

from __future__ import annotations

import os

import h5py
import numpy as np

from ..errors import LandscapeError
from ..params import Named
from ..results import H5_KW, first_line
from ..schema import AXES
from .h5io import read_named


def read_directions(path: str, model_tensors: Named,
                    ndim: int | None = None) -> tuple[Named, list[Named], str, list[dict]]:
    """``(center, vectors, dir_type, meta)`` of the directions stored in a result file, checked against the
    model (``model_tensors``: its tensors of the directions' type, which become the centre)."""
    if not os.path.isfile(path):
        raise LandscapeError(f"`directions`: {path!r} does not exist")
    try:
        with h5py.File(path, "r", **H5_KW) as f:
            if "directions" not in f:
                raise LandscapeError(f"`directions`: {path} holds no /directions group (was it made by landscape?)")
            axes = [a for a in AXES if a in f["directions"]]
            vectors, meta = [], []
            for a in axes:
                g = f["directions"][a]
                vectors.append(read_named(g))
                meta.append({k: (v.item() if isinstance(v, np.generic) else v) for k, v in g.attrs.items()})
            dir_type = meta[0].get("dir_type", "weights") if meta else "weights"
    except (OSError, KeyError, RuntimeError, ValueError) as e:
        raise LandscapeError(f"`directions`: {path} cannot be read as HDF5 ({first_line(e)}); it may be truncated "
                             "or corrupted: inspect it with 'landscape info'") from None
    if ndim is not None and len(vectors) < ndim:
        raise LandscapeError(f"`directions`: {path} has {len(vectors)} direction(s); this grid needs {ndim}")
    vectors = vectors[:ndim] if ndim else vectors
    for vec in vectors:
        missing = [k for k in model_tensors if k not in vec]
        extra = [k for k in vec if k not in model_tensors]
        shapes = [k for k in vec if k in model_tensors and tuple(vec[k].shape) != tuple(model_tensors[k].shape)]
        if missing or extra or shapes:
            what = (f"missing {missing[:2]}" if missing else f"unexpected {extra[:2]}" if extra
                    else f"shape of {shapes[:2]} differs")
            raise LandscapeError(f"`directions`: {path} was made for another model ({what}); "
                                 "use directions made with the same `model` and `model_args`")
    center = {k: v.detach().clone() for k, v in model_tensors.items()}
    dev = next(iter(center.values())).device
    vectors = [{k: v[k].to(device=dev, dtype=center[k].dtype) for k in center} for v in vectors]
    for m in meta:
        m["source"] = path
    return center, vectors, dir_type, meta[: len(vectors)]

