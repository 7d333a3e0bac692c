"""User code named by a spec: ``package.module:callable`` or ``path/to/file.py:callable``, with ``key=value``
arguments.

These specs are the one place where user code runs (the import itself). The current folder is on the import
path (as with ``python -m``), so ``mymods:Net`` works in the folder that holds ``mymods.py``.

Example:
    >>> parse_kwargs("depth=3,width=64,bn=true,act=relu")
    {'depth': 3, 'width': 64, 'bn': True, 'act': 'relu'}
    >>> import_callable("math:sqrt", "`model`")(4.0)
    2.0
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable

from .errors import LandscapeError

__all__ = ["import_callable", "parse_kwargs"]


def parse_kwargs(text: str | None) -> dict:
    """``"depth=3,width=64,bn=true,act=relu"`` → ``{'depth': 3, 'width': 64, 'bn': True, ...}``."""
    out: dict = {}
    if not text:
        return out
    for item in text.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise LandscapeError(f"`model_args`: {item!r} is not key=value (example: depth=3,bn=true)")
        key, value = (s.strip() for s in item.split("=", 1))
        out[key] = _literal(value)
    return out


def _literal(v: str):
    low = v.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low == "none":
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def _import_file(path: str, what: str):
    """Import ``path/to/file.py`` as a module named after the file (its folder joins the import path)."""
    if not os.path.isfile(path):
        raise LandscapeError(f"{what}: file {path!r} does not exist")
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so that the file's own sibling imports work
    name = os.path.splitext(os.path.basename(path))[0]
    key = f"_landscape_user_{name}_{hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:8]}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    if spec is None or spec.loader is None:
        raise LandscapeError(f"{what}: cannot import {path!r} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure is the user's to fix
        del sys.modules[key]
        raise LandscapeError(f"{what}: importing {path!r} failed ({type(e).__name__}: {e})") from e
    return module


def import_callable(spec: str, what: str) -> Callable:
    """Resolve ``package.module:callable`` or ``path/to/file.py:callable`` (runs user code: the import itself).

    The current folder is on the import path (as with ``python -m``), so ``mymods:Net`` works in the
    folder that holds ``mymods.py``.
    """
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr:
        raise LandscapeError(f"{what}: {spec!r} is not 'zoo:NAME', 'package.module:callable' or "
                             "'path/to/file.py:callable'")
    if mod_name.endswith(".py") or os.sep in mod_name or "/" in mod_name:
        module = _import_file(mod_name, what)
    else:
        cwd = os.getcwd()
        if cwd not in sys.path and "" not in sys.path:
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(mod_name)
        except Exception as e:  # noqa: BLE001 - any import failure is the user's to fix
            raise LandscapeError(f"{what}: cannot import module {mod_name!r} ({type(e).__name__}: {e})") from e
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise LandscapeError(f"{what}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise LandscapeError(f"{what}: {spec!r} is not callable")
    return obj
