"""``landscape report FILE.h5``: one summary figure (PNG and PDF) of everything the file holds."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from .common import check_output_path, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="one figure: surfaces, path, spectrum, per-layer conditioning, metrics table")
    p.add_argument("file", metavar="FILE.h5", help="result file")
    p.add_argument("--out", metavar="PATH", help="output name; .png and .pdf are written (default: FILE_report)")
    p.add_argument("--log", action="store_true", help="logarithmic scale for the loss surfaces")
    p.add_argument("--dpi", type=positive_int("--dpi"), default=150, help="resolution of the PNG (default: 150)")
    p.add_argument("--track", metavar="TRACK.h5",
                   help="a 'landscape track' file to show beside FILE's surfaces (a /track inside FILE is shown too)")
    p.set_defaults(func=run)


@contextmanager
def print_warnings(command: str) -> Iterator[None]:
    """Plotting warnings (NaN masked, ...) as one line each on stderr, not Python's two-line format."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            yield
        finally:
            seen = set()
            for w in caught:
                text = str(w.message).splitlines()[0]
                if issubclass(w.category, UserWarning) and text not in seen:
                    seen.add(text)
                    print(f"landscape {command}: warning: {text}", file=sys.stderr, flush=True)


def run(args) -> int:
    from ..parallel import world
    from ..plot.report import make_report
    from ..plot.surface import Options
    from ..results import open_result

    if not world().is_root:
        return 0
    check_output_path(args.out, file_name=False)  # --out is a name stem: .png and .pdf are added
    result = open_result(args.file)
    if getattr(args, "track", None):
        from ..errors import LandscapeError

        try:
            other = open_result(args.track)
        except LandscapeError as e:
            raise LandscapeError(f"--track: {e}") from None
        if not other.track:
            raise LandscapeError(f"--track: {args.track} holds no /track; make it with 'landscape track ... --out "
                                 f"{args.track}'")
        result.track = other.track
    with print_warnings("report"):
        paths = make_report(result, args.out, Options(log=args.log, dpi=args.dpi))
    for path in paths:
        print(path, flush=True)
    return 0
