"""``landscape info FILE.h5``: what a result file holds, how it was made, and what is missing."""

from __future__ import annotations

from ..parallel import world
from ..results import describe, open_result


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="what a result file holds, how it was made, what is missing")
    p.add_argument("file", metavar="FILE.h5", help="result file (landscape's or Li et al.'s)")
    p.set_defaults(func=run)


def run(args) -> int:
    if not world().is_root:
        return 0
    print(describe(open_result(args.file)), flush=True)
    return 0
