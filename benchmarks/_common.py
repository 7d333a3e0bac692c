"""Shared by the benchmark scripts (imported as ``_common``: the scripts run as ``python benchmarks/X.py``,
which puts this folder first on ``sys.path``)."""

from __future__ import annotations


def write_section(lines: list[str], readme: str | None = None) -> str:
    """Print a markdown section (``lines`` joined) and, given ``readme`` (``--readme``), append it to that file."""
    text = "\n".join(lines) + "\n"
    print(text)
    if readme:
        with open(readme, "a") as f:
            f.write("\n" + text)
    return text
