"""``landscape demo``: train a small MLP on scikit-learn's digits, then draw its landscape.

Every step runs a subcommand as a user would type it (its own parser, then its ``run``), so the demo
doubles as an end-to-end check of the tool.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

from .. import parallel
from ..errors import LandscapeError, with_flags
from ..plot.browser import find_browser, missing_reason, screenshot
from ..store import make_output_folder
from . import hessian, interpolate, plot, report, sharpness, surface, track, train, view
from .common import flag_table

#: the subcommands the demo runs
_STEPS = {m.__name__.rsplit(".", 1)[-1]: m for m in (train, surface, interpolate, plot, hessian, sharpness, report,
                                                      view, track)}


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="train a small MLP on digits and draw its landscape (a few minutes on a laptop)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--fast", action="store_true", help="smaller grids and a shorter training run (under a minute)")
    p.add_argument("--lm", action="store_true",
                   help="a transformer instead: the zoo's tiny causal LM (zoo:tinylm) on characters of the standard "
                        "library's docstrings (zoo:chars); no scikit-learn, no download")
    p.add_argument("--out", default=os.path.join("outputs", "demo"), metavar="DIR", help="folder for everything")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _call(command: str, *argv) -> None:
    """``landscape COMMAND ARGV...``: the subcommand's own parser, then its ``run`` (not through the CLI's
    entry point, which is the demo's caller)."""
    parser = argparse.ArgumentParser(prog="landscape")
    steps = parser.add_subparsers(dest="command")
    _STEPS[command].add_parser(steps)
    args = parser.parse_args([command, *map(str, argv)])
    flags = flag_table(steps.choices[command])  # the step's messages name its flags, as when typed
    shown = parallel.render_message
    parallel.render_message = lambda text: with_flags(text, flags)
    try:
        code = args.func(args)
    except LandscapeError as e:
        raise LandscapeError(f"demo step 'landscape {command}' failed: {with_flags(str(e), flags)}") from None
    finally:
        parallel.render_message = shown
    if code:
        raise LandscapeError(f"demo step 'landscape {command}' failed (exit {code})")


def _surface_2d(model: list, data: list, checkpoint: str, grid: str, seed: int, out: str, quiet: list) -> None:
    """The 2D filter-normalized surface around ``checkpoint`` on ``grid`` × ``grid``, and its pictures."""
    _call("surface", *model, *data, "--checkpoint", checkpoint, f"--x={grid}", f"--y={grid}", "--seed", seed,
          "--out", out, "--overwrite", *quiet)
    _call("plot", out)


def run(args) -> int:
    t0 = time.perf_counter()
    out = args.out
    make_output_folder(out, "--out", "the demo's files")
    if args.lm:
        return _run_lm(args, out, t0)
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise LandscapeError("the demo uses scikit-learn's digits: pip install 'landscape[demo]'") from None
    model = ["--model", "zoo:mlp", "--model-args", "width=32,depth=2"]
    data = ["--data", "zoo:digits"]
    quiet = ["--no-progress"] if not sys.stderr.isatty() else []
    fast = args.fast
    grid2d = "-1:1:15" if fast else "-1:1:41"

    _step("1/7 training an MLP on digits (init.pt, final.pt and checkpoints along the way)")
    _call("train", *model, *data, "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9",
          "--epochs", "8" if fast else "30", "--batch-size", "64", "--save-every", "10" if fast else "25",
          "--seed", args.seed, "--out-dir", out)
    final = os.path.join(out, "final.pt")
    init = os.path.join(out, "init.pt")

    _step("2/7 1D filter-normalized surface around final.pt")
    one = os.path.join(out, "surface_1d.h5")
    _call("surface", *model, *data, "--checkpoint", final, "--x=-1:1:51", "--seed", args.seed, "--out", one,
          "--overwrite", *quiet)
    _call("plot", one)

    _step(f"3/7 2D filter-normalized surface ({grid2d.split(':')[-1]}×{grid2d.split(':')[-1]})")
    two = os.path.join(out, "surface_2d.h5")
    _surface_2d(model, data, final, grid2d, args.seed, two, quiet)

    _step("4/7 linear interpolation init → final")
    mli = os.path.join(out, "interpolation.h5")
    _call("interpolate", *model, *data, "--from", init, "--to", final, "--alpha=-0.5:1.5:41" if fast else
          "--alpha=-0.5:1.5:81", "--out", mli, "--overwrite", *quiet)
    _call("plot", mli, "--kind", "path")

    _step("5/7 the training trajectory over the PCA plane of its checkpoints")
    ckpts = sorted(glob.glob(os.path.join(out, "ckpt_*.pt")))
    if len(ckpts) >= 2:
        pca = os.path.join(out, "trajectory.h5")
        _call("surface", *model, *data, "--checkpoint", final, "--directions", "pca", "--trajectory",
              # PCA coordinates are in weight-space units (unit directions): the trajectory spans
              # about x ∈ [-16.5, 0], y ∈ [-4.6, 2.9] for this run, so the grid covers that box
              os.path.join(out, "ckpt_*.pt"), "--x=-18:4:23" if fast else "--x=-18:4:45",
              "--y=-5:5:11" if fast else "--y=-5:5:21", "--out", pca, "--overwrite", *quiet)
        _call("plot", pca, "--kind", "trajectory")

    _step("6/7 curvature and sharpness at final.pt, and the report")
    _call("hessian", *model, *data, "--checkpoint", final, "--top-k", "3", "--trace", "--density", "--out", two)
    _call("sharpness", *model, *data, "--checkpoint", final, "--metrics", "all", "--lr", "0.1", "--out", two)
    _call("report", two)
    _view_page(two, out)

    _step("7/7 edge of stability: full-batch gradient descent at η = 1, tracked checkpoint by checkpoint")
    eos = os.path.join(out, "eos")
    tanh = ["--model", "zoo:mlp", "--model-args", "width=32,depth=2,act=tanh", "--loss", "mse", "--samples", "512"]
    # at η = 1 the sharpness λ_max rises to 2/η = 2 within ~150 steps and then hovers there (Cohen et al. 2021)
    _call("train", *tanh, *data, "--optimizer", "sgd", "--momentum", "0", "--lr", "1.0", "--batch-size", "512",
          "--steps", "240" if fast else "400", "--save-every", "20", "--seed", args.seed, "--out-dir", eos, "--quiet")
    track = os.path.join(out, "eos_track.h5")
    _call("track", *tanh, *data, "--batch-size", "512", "--checkpoints", os.path.join(eos, "ckpt_*.pt"), "--lr",
          "1.0", "--metrics", "eigen", "--top-k", "1", "--max-iter", "20", "--seed", args.seed, "--out", track,
          "--overwrite", *(["--no-progress"] if quiet else []))
    _call("plot", track, "--kind", "track")
    print(f"\ndemo done in {time.perf_counter() - t0:.0f} s; pictures and HDF5 files are in {out}/")
    return 0


def _view_page(result: str, out: str) -> None:
    """The interactive page of the 2D surface file (when plotly is installed) and, where a headless chromium
    is available, a screenshot of it."""
    try:
        import plotly  # noqa: F401
    except ImportError:
        print("(the interactive page needs plotly: pip install 'landscape[html]')", flush=True)
        return
    page = os.path.join(out, "surface_2d.html")
    _call("view", result, "--out", page)
    if find_browser() is None:
        print(f"(no screenshot of the page: {missing_reason()})", flush=True)
        return
    try:
        print(screenshot(page, os.path.join(out, "surface_2d_page.png")), flush=True)
    except Exception as e:  # a screenshot is a nicety: the page itself is written
        print(f"(no screenshot of the page: {str(e).splitlines()[0] if str(e) else type(e).__name__})", flush=True)
    print(f"open it in a browser: file://{os.path.abspath(page)}", flush=True)


def _run_lm(args, out: str, t0: float) -> int:
    """``demo --lm``: train the tiny transformer on characters, then its surfaces, path, curvature and layers."""
    model = ["--model", "zoo:tinylm"]
    data = ["--data", "zoo:chars", "--samples", "128" if args.fast else "1024"]
    quiet = ["--no-progress"] if not sys.stderr.isatty() else []
    grid = "-1:1:7" if args.fast else "-1:1:25"

    _step("1/5 training a tiny causal transformer on characters (Adam)")
    _call("train", *model, *data, "--optimizer", "adam", "--lr", "0.003", "--epochs", "3" if args.fast else "20",
          "--batch-size", "32", "--seed", args.seed, "--out-dir", out)
    final = os.path.join(out, "final.pt")
    init = os.path.join(out, "init.pt")

    _step(f"2/5 2D filter-normalized surface of the token-level loss ({grid.split(':')[-1]}² points)")
    two = os.path.join(out, "lm_surface_2d.h5")
    _surface_2d(model, data, final, grid, args.seed, two, quiet)

    _step("3/5 linear interpolation init → final")
    mli = os.path.join(out, "lm_interpolation.h5")
    _call("interpolate", *model, *data, "--from", init, "--to", final, "--alpha=-0.5:1.5:21", "--out", mli,
          "--overwrite", *quiet)
    _call("plot", mli, "--kind", "path")

    _step("4/5 top Hessian eigenvalues and layer-wise conditioning of the Linear layers inside the blocks")
    _call("hessian", *model, *data, "--checkpoint", final, "--top-k", "3", "--out", two)
    _call("sharpness", *model, *data, "--checkpoint", final, "--metrics", "layerwise", "--out", two)

    _step("5/5 the report")
    _call("report", two)
    print(f"\ndemo --lm done in {time.perf_counter() - t0:.0f} s; pictures and HDF5 files are in {out}/")
    return 0
