"""Option groups shared by subcommands, and turning parsed options into objects."""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys

from ..errors import LandscapeError


def number(flag: str, convert: type = int, *, minimum: float = 0, strict: bool = True):
    """An argparse ``type``: a finite ``convert`` (int or float) above ``minimum`` (``strict``) or from it.

    Errors name the flag and the value: ``--steps 'x' is not an integer``, ``--lr must be a positive
    number, got -1``.
    """
    noun = "an integer" if convert is int else "a number"
    need = (f"a positive {noun[noun.index(' ') + 1:]}" if strict and minimum == 0
            else f"{'more than' if strict else 'at least'} {minimum:g}")

    def parse(text: str):
        try:
            v = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} {text!r} is not {noun}") from None
        if not (math.isfinite(v) and (v > minimum if strict else v >= minimum)):
            raise argparse.ArgumentTypeError(f"{flag} must be {need}, got {text}")
        return v

    return parse


def positive_int(flag: str):
    return number(flag, int)


def positive_float(flag: str):
    return number(flag, float)


def add_problem_args(p: argparse.ArgumentParser, checkpoint: bool = True, data_required: bool = True) -> None:
    """``--model --model-args --checkpoint --data --test-data --loss --samples --batch-size
    --seed --device --unsafe-load``."""
    g = p.add_argument_group("model and data")
    g.add_argument("--model", required=True, metavar="SPEC",
                   help="zoo:NAME (mlp, cnn, resnet20, resnet56, resnet110, vgg9, ...) or package.module:callable")
    g.add_argument("--model-args", default="", metavar="K=V,...",
                   help="keyword arguments for the model constructor, e.g. depth=4,width=64,bn=true")
    if checkpoint:
        g.add_argument("--checkpoint", metavar="FILE",
                       help="state_dict (.pt/.pth, loaded with weights_only=True) or .safetensors")
    g.add_argument("--data", required=data_required, metavar="SPEC",
                   help="zoo:digits[:train|test], zoo:synthetic, torchvision:CLASS:ROOT or package.module:callable")
    g.add_argument("--test-data", metavar="SPEC", help="a second split evaluated beside --data (test_loss, test_acc)")
    g.add_argument("--loss", default="cross_entropy", choices=("cross_entropy", "mse"))
    g.add_argument("--samples", type=positive_int("--samples"), metavar="N",
                   help="evaluate on a fixed, seeded subset of N examples (default: all)")
    g.add_argument("--batch-size", type=positive_int("--batch-size"), metavar="B",
                   help="evaluation batch (default: from memory: all samples in one batch when their activations "
                        "fit in 128 MiB on a CPU, 1 GiB on a GPU, else equal batches that do; at least one batch "
                        "per rank for hessian and sharpness, which share the batches among ranks)")
    g.add_argument("--seed", type=int, default=0, help="seed for directions, sampling and estimators (default 0)")
    g.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help="auto: cuda:(local_rank %% n_gpus) when CUDA is available, else CPU")
    g.add_argument("--unsafe-load", action="store_true",
                   help="allow checkpoints that unpickle arbitrary code (only for files you trust)")


def problem_from_args(args, world=None, shard_batches: bool = False):
    """The Problem of the parsed options; ``shard_batches``: the ranks of ``world`` share the batches (at least
    one each when the batch size is chosen automatically)."""
    from ..problem import make_problem

    local_rank = world.local_rank if world is not None else 0
    shards = world.size if shard_batches and world is not None else 1
    return make_problem(
        args.model, data=args.data, checkpoint=getattr(args, "checkpoint", None), model_args=args.model_args,
        loss=args.loss, samples=args.samples, seed=args.seed, batch_size=args.batch_size, device=args.device,
        test_data=getattr(args, "test_data", None), unsafe_load=args.unsafe_load, local_rank=local_rank,
        shards=shards,
    )


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [os.path.basename(sys.argv[0]), *sys.argv[1:]])


def check_output_path(path: str | None, flag: str = "--out", example: str | None = "run.h5",
                      file_name: bool = True) -> None:
    """An output path given with ``flag``: its folder must exist and, with ``file_name``, it must not itself be
    a folder (the message then suggests ``path/example``). Nothing to check without a path."""
    if not path:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise LandscapeError(f"{flag}: folder {folder!r} does not exist (create it first or choose another path)")
    if file_name and os.path.isdir(path):
        such = f" such as {os.path.join(path, example)}" if example else ""
        raise LandscapeError(f"{flag}: {path!r} is a folder; give a file name{such}")


def figsize(text: str) -> tuple[float, float]:
    """``--figsize W,H`` (inches, also ``WxH``)."""
    parts = text.replace("x", ",").split(",")
    try:
        w, h = (float(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--figsize {text!r}: give width,height in inches, e.g. 8,6") from None
    if not (0 < w <= 100 and 0 < h <= 100):
        raise argparse.ArgumentTypeError(f"--figsize {text!r}: width and height must be in (0, 100] inches")
    return w, h


def add_plot_options(p: argparse.ArgumentParser) -> None:
    """The picture options shared by ``plot``, ``report`` and ``view``; each is refused by name for a kind
    of picture it means nothing to."""
    g = p.add_argument_group("picture options (shared by plot, report and view)")
    g.add_argument("--log", action="store_true", help="logarithmic colour / value scale for losses")
    g.add_argument("--vmin", type=float, help="lower end of the colour scale (2D) or value axis (1D)")
    g.add_argument("--vmax", type=float,
                   help="upper end of the colour scale (2D) or value axis (1D), e.g. 10 as Li et al.")
    g.add_argument("--levels", type=positive_int("--levels"), metavar="N",
                   help="number of contour levels (default: 30)")
    g.add_argument("--cmap", metavar="NAME", help="matplotlib colormap (default: viridis; RdBu_r for λmin)")
    g.add_argument("--figsize", type=figsize, metavar="W,H", help="figure size in inches (default: per kind)")
    g.add_argument("--title", help="title instead of the one made from the file (model, directions, grid)")
    g.add_argument("--elev", type=float, metavar="DEG", help="3D views: elevation angle (default: 30)")
    g.add_argument("--azim", type=float, metavar="DEG", help="3D views: azimuth angle (default: -60)")
    g.add_argument("--show", action="store_true",
                   help="also open the result in a window (plot, report) or the web browser (view) when there is "
                        "a display; without one, says so and only writes the files")


def plot_options(args, dpi: int | None = None):
    """The :class:`~landscape.plot.surface.Options` of the parsed picture flags (after checking them)."""
    from ..plot.surface import Options

    if args.vmin is not None and args.vmax is not None and args.vmin >= args.vmax:
        raise LandscapeError(f"--vmin {args.vmin:g} must be below --vmax {args.vmax:g}")
    if args.log and args.vmin is not None and args.vmin <= 0:
        raise LandscapeError(f"--log needs a positive --vmin (got {args.vmin:g})")
    if args.cmap is not None:
        import matplotlib

        if args.cmap not in matplotlib.colormaps:
            raise LandscapeError(f"--cmap {args.cmap!r} is not a matplotlib colormap (try viridis, magma, cividis, "
                                 "RdBu_r, ...)")
    return Options(log=args.log, vmin=args.vmin, vmax=args.vmax, levels=args.levels or 30,
                   dpi=dpi or getattr(args, "dpi", 150), cmap=args.cmap, figsize=args.figsize, title=args.title,
                   elev=args.elev, azim=args.azim)


def has_display() -> bool:
    """Whether a window can be opened: macOS and Windows always; elsewhere an X11 or Wayland display."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def show_figures(figs: list, command: str) -> None:
    """``--show``: the figures in windows through pyplot's interactive backend, or one line saying why not."""
    if not has_display():
        print(f"landscape {command}: --show: no display here (DISPLAY is not set); the files above were written",
              file=sys.stderr, flush=True)
        return
    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib import _pylab_helpers

    backend = matplotlib.get_backend().lower()
    if backend in ("agg", "pdf", "svg", "ps", "cairo", "template") or "inline" in backend:
        print(f"landscape {command}: --show: matplotlib's backend {backend!r} cannot open windows (unset "
              "MPLBACKEND or install a GUI toolkit such as tkinter); the files above were written",
              file=sys.stderr, flush=True)
        return
    canvas = plt._get_backend_mod().FigureCanvas
    for i, fig in enumerate(figs, start=1):  # our figures are made without pyplot: give each a window
        _pylab_helpers.Gcf._set_new_active_manager(canvas.new_manager(fig, i))
    plt.show()


def open_in_browser(path: str, command: str) -> None:
    """``--show`` for a page: the system's web browser, or one line saying why not."""
    import webbrowser

    if not has_display():
        print(f"landscape {command}: --show: no display here (DISPLAY is not set); open {path} in a browser",
              file=sys.stderr, flush=True)
        return
    webbrowser.open("file://" + os.path.abspath(path))
