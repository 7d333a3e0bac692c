"""``landscape view FILE.h5``: one self-contained interactive HTML page of everything the file holds
(rotatable surfaces, contours with hover values, volume slices with sliders, paths, spectra, tracks,
metrics); opens offline in any browser."""

from __future__ import annotations

from ..errors import LandscapeError
from ..parallel import world
from ..plot.html import write_page
from ..results import open_result
from .common import add_plot_options, check_output_path, open_in_browser, plot_options
from .report import print_warnings


def add_parser(sub) -> None:
    p = sub.add_parser("view", help="one interactive HTML page of a result file (turn, zoom, slice, hover)",
                       description="Write FILE.html (or --out): an interactive page of every part of the file, "
                                   "with plotly.js inlined so it opens without a network. Needs the [html] extra.")
    p.add_argument("file", metavar="FILE.h5", help="result file (landscape's or Li et al.'s)")
    p.add_argument("--out", metavar="FILE.html", help="the page to write (default: FILE.html beside the input)")
    add_plot_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if not world().is_root:
        return 0
    check_output_path(args.out, example="page.html")
    if args.out and not args.out.lower().endswith((".html", ".htm")):
        raise LandscapeError(f"--out {args.out!r}: the page is HTML; give a name ending in .html")
    opts = plot_options(args, dpi=150)
    result = open_result(args.file)
    with print_warnings("view"):
        path = write_page(result, args.out, opts)
    print(path, flush=True)
    if args.show:
        open_in_browser(path, "view")
    return 0
