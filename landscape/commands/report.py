"""``landscape report FILE.h5``: one summary figure (PNG and PDF) of everything the file holds."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib.image as mpimg
from matplotlib.figure import Figure

from ..errors import LandscapeError
from ..parallel import world
from ..plot.html import write_page
from ..plot.report import make_report
from ..results import open_result
from .common import (
    add_plot_options,
    check_output_path,
    open_in_browser,
    plot_options,
    positive_int,
    show_figures,
)


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="one figure: surfaces, path, spectrum, per-layer conditioning, metrics table")
    p.add_argument("file", metavar="FILE.h5", help="result file")
    p.add_argument("--out", metavar="PATH", help="output name; .png and .pdf are written (default: FILE_report)")
    p.add_argument("--dpi", type=positive_int("--dpi"), default=150, help="resolution of the PNG (default: 150)")
    p.add_argument("--html", action="store_true",
                   help="also write the interactive page of 'landscape view' (FILE_report.html beside the PNG)")
    add_plot_options(p)
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
    if not world().is_root:
        return 0
    check_output_path(args.out, file_name=False)  # --out is a name stem: .png and .pdf are added
    opts = plot_options(args)
    result = open_result(args.file)
    if getattr(args, "track", None):
        try:
            other = open_result(args.track)
        except LandscapeError as e:
            raise LandscapeError(f"--track: {e}") from None
        if not other.track:
            raise LandscapeError(f"--track: {args.track} holds no /track; make it with 'landscape track ... --out "
                                 f"{args.track}'")
        result.track = other.track
    with print_warnings("report"):
        paths = make_report(result, args.out, opts)
        if args.html:
            paths.append(write_page(result, os.path.splitext(paths[0])[0] + ".html", opts))
    for path in paths:
        print(path, flush=True)
    if args.show:
        if args.html:
            open_in_browser(paths[-1], "report")
        else:
            show_figures([_image_figure(paths[0])], "report")
    return 0


def _image_figure(png: str):
    """The saved report PNG in a figure of its own size (the report figure itself is released on saving)."""
    img = mpimg.imread(png)
    fig = Figure(figsize=(img.shape[1] / 100, img.shape[0] / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(img)
    ax.axis("off")
    return fig
