"""User-facing errors.

Anything a user can cause (a bad argument, a missing file, a mismatched checkpoint) raises
:class:`LandscapeError` with a one-line message that says what was wrong and how to fix it.

Library code names the *parameters* it was given, in backticks (```batch_size` must be positive``), and
never a command-line flag: the library does not know how it was called. The command line turns each
backticked name that is one of the command's options into that flag (:func:`with_flags`), prints the
line without a traceback and exits with status 2.

Example:
    >>> with_flags("`batch_size` must be positive; `seed` too", {"batch_size": "--batch-size"})
    '--batch-size must be positive; `seed` too'
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_PARAMETER = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


class LandscapeError(Exception):
    """A one-line, user-facing error (exit status 2, no traceback)."""

    exit_code = 2


class ResumeMismatch(LandscapeError):
    """An existing output file was made by a different run and cannot be resumed."""


def with_flags(message: str, flags: Mapping[str, str]) -> str:
    """``message`` with every backticked parameter name that ``flags`` maps replaced by its flag; names
    without a flag keep their backticks."""
    return _PARAMETER.sub(lambda m: flags.get(m.group(1), m.group(0)), message)
