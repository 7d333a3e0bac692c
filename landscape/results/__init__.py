"""A read-only, in-memory view of a result file, for ``plot``, ``report``, ``info`` and ``export``.

* :mod:`~landscape.results.reader`: :func:`open_result` reads ours and Li et al.'s layouts into a :class:`Result`;
* :mod:`~landscape.results.checks`: what no run writes (damaged files are refused in one line);
* :mod:`~landscape.results.labels`: how names and values read on axes and legends;
* :mod:`~landscape.results.describe`: the text of ``landscape info``.
"""

from __future__ import annotations

from .checks import first_line, identity_text, surface_problems
from .describe import describe
from .labels import LABELS, label_of, param_text
from .reader import H5_KW, LI_FORMAT, Result, open_result

__all__ = ["H5_KW", "LABELS", "LI_FORMAT", "Result", "describe", "first_line", "identity_text", "label_of",
           "open_result", "param_text", "surface_problems"]
