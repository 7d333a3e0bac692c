"""``landscape plot FILE.h5``: pictures of a result file (surfaces, paths, spectra, trajectories,
curvature maps), written next to the input by default, one path per line on stdout."""

from __future__ import annotations

import os

from ..errors import LandscapeError
from ..parallel import world
from ..plot import FORMATS, available_kinds, figure, fitting, kind_names, plot_all, plot_kind
from ..results import open_result
from ..store import make_output_folder
from .common import add_plot_options, check_writable_folder, plot_options, positive_int, show_figures
from .report import print_warnings


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="draw a result file: contours, heatmaps, 3D surfaces, lines, paths, spectra",
                       description="Draw a result file; writes FILE_<surface>_<kind>.<format> next to the input "
                                   "(or in --out-dir) and prints each path written.")
    p.add_argument("file", metavar="FILE.h5", help="result file (landscape's or Li et al.'s)")
    p.add_argument("--kind", default="all", choices=("all", *kind_names()),
                   help="what to draw (default: all, every kind the file can give)")
    p.add_argument("--surface", metavar="NAME", help="surface to draw (default: train_loss, else the first loss)")
    p.add_argument("--format", default="png", choices=FORMATS, help="picture format (default: png)")
    p.add_argument("--dpi", type=positive_int("--dpi"), default=150, help="resolution of PNGs (default: 150)")
    p.add_argument("--out-dir", metavar="DIR", help="folder for the pictures (default: the input file's folder)")
    add_plot_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if not world().is_root:  # under mpirun only rank 0 draws
        return 0
    opts = plot_options(args)
    result = open_result(args.file)
    out_dir = args.out_dir or os.path.dirname(args.file)  # relative in, relative out: outputs/r20_..._contour.png
    if args.out_dir:
        make_output_folder(out_dir, "--out-dir", "the pictures")
    where = "--out-dir" if args.out_dir else "the input file's folder (choose another with --out-dir)"
    check_writable_folder(out_dir or ".", where)
    with print_warnings("plot"):
        if args.kind == "all":
            if not available_kinds(result):
                raise LandscapeError(f"{args.file} holds nothing to plot yet; see 'landscape info {args.file}'")
            paths = plot_all(result, out_dir, args.format, args.surface, opts)
        else:
            paths = plot_kind(result, args.kind, out_dir, args.format, args.surface, opts)
    for path in paths:
        print(path, flush=True)
    if args.show:
        kinds = available_kinds(result) if args.kind == "all" else [args.kind]
        with print_warnings("plot"):
            show_figures([figure(result, k, args.surface, **_figure_options(k, opts, args.kind == "all"))
                          for k in kinds], "plot")
    return 0


def _figure_options(kind: str, opts, every: bool) -> dict:
    """``figure``'s keywords: with ``--kind all``, only the options ``kind`` can use."""
    return {k: v for k, v in vars(fitting(kind, opts) if every else opts).items() if k != "dpi"}
