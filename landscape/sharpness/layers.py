"""The layer-wise part of ``landscape sharpness`` (:mod:`landscape.layerwise`): its registry entry and options.

It has no ``compute`` here: K-FAC conditioning uses no collectives, so the command computes it on rank 0
alone (:func:`landscape.layerwise.layerwise`), after the other metrics.

Example:
    >>> parse_percentiles("50,90")
    [50.0, 90.0]
"""

from __future__ import annotations

from ..errors import LandscapeError
from ..layerwise import PERCENTILES
from ._base import Family, Option


def parse_percentiles(text: str) -> list[float]:
    """``P,...``: percentiles in (0, 100] for the condition numbers κ_p."""
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
        if not vals or any(not 0 < v <= 100 for v in vals):
            raise ValueError
        return vals
    except ValueError:
        raise LandscapeError(f"`percentiles` {text!r}: give numbers in (0, 100], e.g. 50,90") from None


FAMILY = Family("layerwise", ("layerwise",), None, (
    Option("fisher", "empirical", "choice", "layer-wise K-FAC factors with data labels or labels sampled from the "
           "model", choices=("empirical", "true")),
    Option("percentiles", PERCENTILES, "str", "percentile condition numbers κ_p", "P,...", cli_default="50,90",
           parse=parse_percentiles),
))
