"""``landscape plot FILE.h5``: pictures of a result file (surfaces, paths, spectra, trajectories,
curvature maps), written next to the input by default, one path per line on stdout."""

from __future__ import annotations

import os

from ..errors import LandscapeError
from .common import positive_int
from .report import print_warnings


def add_parser(sub) -> None:
    from ..plot import FORMATS, KINDS

    p = sub.add_parser("plot", help="draw a result file: contours, heatmaps, 3D surfaces, lines, paths, spectra",
                       description="Draw a result file; writes FILE_<surface>_<kind>.<format> next to the input "
                                   "(or in --out-dir) and prints each path written.")
    p.add_argument("file", metavar="FILE.h5", help="result file (landscape's or Li et al.'s)")
    p.add_argument("--kind", default="all", choices=("all", *KINDS),
                   help="what to draw (default: all, every kind the file can give)")
    p.add_argument("--surface", metavar="NAME", help="surface to draw (default: train_loss, else the first loss)")
    p.add_argument("--log", action="store_true", help="logarithmic colour / value scale for losses")
    p.add_argument("--vmin", type=float, help="lower end of the colour scale and contour levels")
    p.add_argument("--vmax", type=float,
                   help="upper end of the colour scale and contour levels (e.g. 10, as Li et al.)")
    p.add_argument("--levels", type=positive_int("--levels"), default=30, metavar="N",
                   help="number of contour levels (default: 30)")
    p.add_argument("--format", default="png", choices=FORMATS, help="picture format (default: png)")
    p.add_argument("--dpi", type=positive_int("--dpi"), default=150, help="resolution of PNGs (default: 150)")
    p.add_argument("--out-dir", metavar="DIR", help="folder for the pictures (default: the input file's folder)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..parallel import world
    from ..plot import Options, available_kinds, plot_all, plot_kind
    from ..results import open_result
    from ..store import make_output_folder
    from .common import check_writable_folder

    if not world().is_root:  # under mpirun only rank 0 draws
        return 0
    if args.vmin is not None and args.vmax is not None and args.vmin >= args.vmax:
        raise LandscapeError(f"--vmin {args.vmin:g} must be below --vmax {args.vmax:g}")
    if args.log and args.vmin is not None and args.vmin <= 0:
        raise LandscapeError(f"--log needs a positive --vmin (got {args.vmin:g})")
    result = open_result(args.file)
    out_dir = args.out_dir or os.path.dirname(args.file)  # relative in, relative out: outputs/r20_..._contour.png
    if args.out_dir:
        make_output_folder(out_dir, "--out-dir", "the pictures")
    where = "--out-dir" if args.out_dir else "the input file's folder (choose another with --out-dir)"
    check_writable_folder(out_dir or ".", where)
    opts = Options(log=args.log, vmin=args.vmin, vmax=args.vmax, levels=args.levels, dpi=args.dpi)
    with print_warnings("plot"):
        if args.kind == "all":
            if not available_kinds(result):
                raise LandscapeError(f"{args.file} holds nothing to plot yet; see 'landscape info {args.file}'")
            paths = plot_all(result, out_dir, args.format, args.surface, opts)
        else:
            paths = plot_kind(result, args.kind, out_dir, args.format, args.surface, opts)
    for path in paths:
        print(path, flush=True)
    return 0
