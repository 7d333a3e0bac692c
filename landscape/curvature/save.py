"""Curvature results into an HDF5 file: what ``landscape hessian`` stores, as a library function.

Layout: ``/curvature`` for the Hessian (``/curvature/ggn`` and ``/curvature/fisher`` beside it for the other
operators), holding ``eigenvalues`` (with the residuals, products and the ``converged`` flag as attributes),
``smallest``, ``eigenvectors/<i>/<parameter>``, ``trace`` (with its standard error) and ``density/{grid,
values}``. A new file is created atomically; an existing landscape file of the same model, data, loss and
samples (``provenance``, see :func:`landscape.store.check_provenance`) gets the group added in place.

Example:
    >>> import os, tempfile, h5py, torch
    >>> from landscape.curvature import hessian_eigenpairs
    >>> eig = hessian_eigenpairs(torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)), k=1)
    >>> path = os.path.join(tempfile.mkdtemp(), "h.h5")
    >>> save_curvature(path, eig)
    '/curvature'
    >>> with h5py.File(path) as f:
    ...     f["curvature/eigenvalues"][()].round(6).tolist()
    [3.0]
"""

from __future__ import annotations

import numpy as np
import torch

from ..store import base_attrs, replace_group, set_attrs, update_file, write_named


def _operator_group(f, operator: str):
    """/curvature for the Hessian (as always); /curvature/ggn or /curvature/fisher beside it for the others."""
    root = f.require_group("curvature")
    if operator == "hessian":
        return root
    g = root.require_group(operator)
    g.attrs["operator"] = operator
    return g


def _size(eig, density) -> int:
    """About how many bytes :func:`save_curvature` adds (for the free-space check)."""
    vectors = sum(sum(int(t.numel()) for t in v.values()) if isinstance(v, dict) else int(v.numel())
                  for v in (getattr(eig, "eigenvectors", None) or []))
    grid = len(density.grid) if density is not None else 0
    return 8 * vectors + 8 * (2 * grid + 3000)


def save_curvature(path: str, eig=None, trace=None, density=None, *, operator: str = "hessian",
                   save_vectors: bool = True, command: str = "", config: dict | None = None,
                   model_fingerprint: str = "", data_fingerprint: str = "", provenance: dict | None = None) -> str:
    """Store an :class:`~landscape.curvature.EigenResult` (``eig``), a :class:`~landscape.curvature.TraceResult`
    (``trace``) and a :class:`~landscape.curvature.DensityResult` (``density``) of the operator named
    ``operator`` in ``path`` (see the module docstring); each of them may be None. ``save_vectors``: also the
    eigenvectors, when ``eig`` holds them (parameter-shaped, as the operators of a Problem give them).
    Datasets of the same name in the group are replaced.
    Returns the group's name (``/curvature``, ``/curvature/ggn`` ...).
    """
    attrs = base_attrs(command, config or {}, model_fingerprint, data_fingerprint, kind="hessian")
    with update_file(path, "hessian", attrs, adding="/curvature", need=_size(eig if save_vectors else None, density),
                     provenance=provenance) as f:
        root = _operator_group(f, operator)
        for name in ("eigenvalues", "smallest", "eigenvectors", "trace"):
            if name in root:
                del root[name]
        if eig is not None:
            ds = root.create_dataset("eigenvalues", data=np.asarray(eig.eigenvalues, dtype=np.float64))
            set_attrs(ds, eig.to_attrs())
            smallest = getattr(eig, "smallest", None)
            if smallest is not None:
                root.create_dataset("smallest", data=np.float64(smallest))
            if save_vectors and getattr(eig, "eigenvectors", None):
                vecs = replace_group(root, "eigenvectors")
                for i, v in enumerate(eig.eigenvectors):
                    if isinstance(v, dict):  # parameter-shaped (a Problem's operator)
                        write_named(vecs.create_group(str(i)), v)
                    else:  # a flat vector (an explicit matrix)
                        vecs.create_dataset(str(i), data=v.detach().to("cpu", torch.float64).numpy())
        if trace is not None:
            ds = root.create_dataset("trace", data=np.float64(trace.estimate))
            set_attrs(ds, {**trace.to_attrs(), "stderr": float(trace.stderr)})
        if density is not None:
            g = replace_group(root, "density")
            g.create_dataset("grid", data=np.asarray(density.grid, dtype=np.float64))
            g.create_dataset("values", data=np.asarray(density.density, dtype=np.float64))
            set_attrs(g, density.to_attrs())
        return root.name
