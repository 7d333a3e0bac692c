"""One file, one model on one data set: what a result added to an existing file must share with it, and
:class:`update_file`, which adds groups under the writer lock."""

from __future__ import annotations

import json
import os

import h5py

from ..errors import LandscapeError, ResumeMismatch
from ..results import first_line
from .files import atomic_create, check_readable, ensure_space, read_attrs
from .lock import WriterLock, close_h5


def provenance(model_fingerprint: str, data_fingerprint: str, loss: str | None, samples: int | None,
               seed: int | None) -> dict:
    """What a result added to an existing file must share with it: the identity a resume checks."""
    return {"model_fingerprint": model_fingerprint, "data_fingerprint": data_fingerprint, "loss": loss,
            "samples": samples, "seed": seed}


def check_provenance(path: str, wanted: dict, adding: str) -> None:
    """Refuse to add ``adding`` (``/curvature``, ``/metrics``) to ``path`` if the file was made from another model
    (weights), data, loss or ``--samples`` subset: one file must describe one model on one data set."""
    attrs = read_attrs(path)
    try:
        config = json.loads(attrs.get("config", "{}"))
    except (TypeError, ValueError):
        config = {}
    config = config if isinstance(config, dict) else {}
    stored_seed = config.get("sample_seed", config.get("seed"))

    def refuse(what: str, have, want, hint: str) -> None:
        raise ResumeMismatch(f"{path} was made with another {what} (file has {have}, this run has {want}); adding "
                             f"{adding} would mix two runs in one file: {hint}")

    other = "choose another `out`"
    if "loss" in config and config["loss"] is not None and config["loss"] != wanted["loss"]:
        refuse("`loss`", config["loss"], wanted["loss"], f"pass `loss` {config['loss']} or {other}")
    if "samples" in config and config["samples"] != wanted["samples"]:
        refuse("`samples`", config["samples"] or "all", wanted["samples"] or "all",
               f"pass the same `samples` or {other}")
    fp = attrs.get("model_fingerprint")
    seed_differs = stored_seed is not None and stored_seed != wanted["seed"]
    if fp and wanted["model_fingerprint"] and fp != wanted["model_fingerprint"]:
        if seed_differs and not config.get("checkpoint"):
            refuse("`seed` (it initialises a model given without `checkpoint`)", stored_seed, wanted["seed"],
                   f"pass `seed` {stored_seed} or {other}")
        refuse("model (weights fingerprint)", fp[:10] + "…", wanted["model_fingerprint"][:10] + "…",
               f"pass the same `model`, `model_args` and `checkpoint` as the run that made it, or {other}")
    dfp = attrs.get("data_fingerprint")
    if dfp and wanted["data_fingerprint"] and dfp != wanted["data_fingerprint"]:
        if wanted["samples"] and seed_differs:
            refuse("`seed` (it picks the `samples` subset)", stored_seed, wanted["seed"],
                   f"pass `seed` {stored_seed} or {other}")
        data = config.get("data", config.get("train_data"))
        refuse("`data` (data fingerprint)", f"{data} {dfp[:10]}…" if data else dfp[:10] + "…",
               wanted["data_fingerprint"][:10] + "…", f"pass the same `data` and `samples` or {other}")


class update_file:  # noqa: N801 - used as a context manager, reads like a function
    """``with update_file(path, kind, attrs) as f:`` add groups to a result file.

    An existing landscape file (a surface, say) is opened in place under the writer lock, so
    metrics and curvature can sit beside the surfaces they describe -- if it was made from the same
    model, data, loss and samples (``provenance``, checked with :func:`check_provenance`) and its folder
    has room for ``need`` more bytes; otherwise a new file of ``kind`` is created atomically with
    ``attrs`` as its root attributes. Writes go through the locked descriptor.
    """

    def __init__(self, path: str, kind: str, attrs: dict, provenance: dict | None = None, adding: str = "",
                 need: int = 0):
        self.path, self.kind, self.attrs = path, kind, attrs
        self.provenance, self.adding, self.need = provenance, adding or "results", need
        self._lock: WriterLock | None = None
        self._file: h5py.File | None = None
        self.created = False

    def __enter__(self) -> h5py.File:
        if not os.path.exists(self.path):
            self._lock = atomic_create(self.path, lambda f: f.attrs.update(self.attrs), keep_lock=True)
            self.created = True
        else:
            check_readable(self.path)
            self._lock = WriterLock(self.path)
        try:
            if not self.created and self.provenance is not None:
                check_provenance(self.path, self.provenance, self.adding)
            ensure_space(self.path, self.need, os.path.getsize(self.path) + self.need)
            self._file = self._lock.h5("r+")
        except BaseException:
            self._lock.release()
            raise
        return self._file

    def __exit__(self, *exc) -> None:
        try:
            if self._file is not None:
                close_h5(self._file)
        except OSError as e:
            if exc[0] is None:
                raise LandscapeError(f"writing {self.path} failed ({first_line(e)}); free some space or choose "
                                     "another `out`") from None
        finally:
            if self._lock is not None:
                self._lock.release()

