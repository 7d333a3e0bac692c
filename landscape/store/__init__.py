"""Writing result files (layout: :mod:`landscape.schema`), resuming them, and refusing the wrong one.

Why a file is valid at every moment, even under ``kill -9``:

* it is built complete -- every dataset allocated, NaN-filled -- in memory, written to a temporary file
  ``FILE.tmp-PID`` and hard-linked to its path, an atomic "create if absent": the path never holds a
  half-made file, and of two runs racing on the same new path exactly one gets it (the other is refused,
  it never writes into the winner's file) (:mod:`~landscape.store.files`);
* afterwards a run only overwrites raw bytes of those pre-allocated datasets, which never touches
  HDF5 metadata; a flush writes the values first and the ``done`` mask last, so a point is marked
  done only once its values are on disk (:mod:`~landscape.store.run_store`, :mod:`~landscape.store.raw`);
* every flush writes through the descriptor the run locked (the file it created or resumed), never
  through the path: a file put there by someone else meanwhile is never written to
  (:mod:`~landscape.store.lock`).

The modules, one concept each: ``lock`` (the writer's lock), ``files`` (atomic creation, free space,
temporaries), ``h5io`` (attributes, named tensors, sample indices), ``raw`` (where a point's bytes lie,
point writes), ``run_store`` (a run's file while it is filled), ``identity`` (resume or refuse),
``provenance`` (adding results to an existing file), ``directions_file`` (directions read back).
"""

from __future__ import annotations

from ..results import H5_KW, surface_problems
from ..results import first_line as _first_line
from .directions_file import read_directions
from .files import (
    atomic_create,
    check_output_path,
    check_readable,
    check_writable_folder,
    make_output_folder,
    read_attrs,
    refuse_foreign,
)
from .h5io import _json, base_attrs, read_named, replace_group, set_attrs, write_named, write_samples
from .identity import compare_identity, existing_attrs, peek_surface, surface_identity
from .lock import Locked, WriterLock, close_h5
from .provenance import check_provenance, provenance, update_file
from .raw import CHUNK_ELEMENTS, CHUNK_MIN_POINTS, RawDataset, chunk_shape, write_points
from .run_store import GridStore, _RunStore, create_surface_file

__all__ = [
    "_first_line", "_json", "_RunStore", "atomic_create", "base_attrs", "check_output_path", "check_provenance",
    "check_readable", "check_writable_folder", "CHUNK_ELEMENTS", "CHUNK_MIN_POINTS", "chunk_shape", "close_h5",
    "compare_identity", "create_surface_file", "existing_attrs", "GridStore", "H5_KW", "Locked",
    "make_output_folder", "peek_surface", "provenance", "RawDataset", "read_attrs", "read_directions",
    "read_named", "refuse_foreign", "replace_group", "set_attrs", "surface_identity", "surface_problems",
    "update_file", "write_named", "write_points", "write_samples", "WriterLock",
]
