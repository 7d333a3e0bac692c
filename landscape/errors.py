"""User-facing errors.

Anything a user can cause (a bad flag, a missing file, a mismatched checkpoint) raises
:class:`LandscapeError` with a one-line message that says what was wrong and how to fix it.
The command line prints it without a traceback and exits with status 2.
"""

from __future__ import annotations


class LandscapeError(Exception):
    """A one-line, user-facing error (exit status 2, no traceback)."""

    exit_code = 2


class ResumeMismatch(LandscapeError):
    """An existing output file was made by a different run and cannot be resumed."""
