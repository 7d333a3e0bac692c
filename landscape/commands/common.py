"""Option groups shared by subcommands, and turning parsed options into objects."""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import webbrowser

import matplotlib

from ..errors import LandscapeError
from ..plot.options import Options, check_colormap
from ..problem import make_problem
from ..store import check_output_path, check_writable_folder  # noqa: F401 - the commands' own checks


def flag_table(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``{parameter: flag}`` for a (sub)command: each option's destination to its long spelling, so that a
    library message naming a parameter (```batch_size```) reads as the flag the user typed."""
    table = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and action.dest not in ("help", "version"):
            table[action.dest] = longs[0]
    return table


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
                   help="zoo:NAME (mlp, cnn, resnet20, resnet56, resnet110, vgg9, tinylm, ...), "
                        "package.module:callable or path/to/file.py:callable (the current folder is importable)")
    g.add_argument("--model-args", default="", metavar="K=V,...",
                   help="keyword arguments for the model constructor, e.g. depth=4,width=64,bn=true")
    if checkpoint:
        g.add_argument("--checkpoint", metavar="FILE",
                       help="state_dict (.pt/.pth, loaded with weights_only=True) or .safetensors")
    add_checkpoint_prefix_arg(g)
    g.add_argument("--data", required=data_required, metavar="SPEC",
                   help="zoo:digits[:train|test], zoo:synthetic, zoo:chars, torchvision:CLASS:ROOT or "
                        "package.module:callable; batches may be tensors, (inputs..., target) tuples or dicts")
    g.add_argument("--test-data", metavar="SPEC", help="a second split evaluated beside --data (test_loss, test_acc)")
    add_loss_args(g)
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
    g.add_argument("--data-on-device", default="auto", choices=("auto", "always", "never"),
                   help="keep the evaluation data on the device (always), stream it batch by batch from the host "
                        "in a fixed order (never; same numbers, less device memory), or auto: on the device while "
                        "it takes at most half of its free memory (default auto)")


def add_checkpoint_prefix_arg(g) -> None:
    g.add_argument("--strip-prefix", metavar="PREFIX",
                   help="keep only the checkpoint keys starting with PREFIX, without it (Lightning: model.)")


def add_loss_args(g) -> None:
    """``--loss --target-key --output-key --shift-labels`` (shared with ``train``)."""
    g.add_argument("--loss", default="cross_entropy", metavar="NAME|SPEC",
                   help="cross_entropy (default; token-level for (B, L, V) outputs, ignore_index -100), nll, mse, "
                        "huber, bce (binary or multi-label, with logits), or package.module:callable / "
                        "file.py:callable taking (output, target) and returning per-example losses (B,), "
                        "which the tool sums and divides by the example count")
    g.add_argument("--target-key", default="labels", metavar="KEY",
                   help="dict batches: the entry holding the target; the others are passed to the model as "
                        "keyword arguments (default labels)")
    g.add_argument("--output-key", metavar="KEY",
                   help="dict or ModelOutput-like outputs: the entry to use (default logits); tuple outputs: "
                        "an index (default 0)")
    g.add_argument("--shift-labels", action="store_true",
                   help="score sequence position t against target t+1 (causal LMs that do not shift "
                        "themselves, e.g. HuggingFace models given labels)")


def problem_from_args(args, world=None, shard_batches: bool = False):
    """The Problem of the parsed options; ``shard_batches``: the ranks of ``world`` share the batches (at least
    one each when the batch size is chosen automatically)."""
    local_rank = world.local_rank if world is not None else 0
    shards = world.size if shard_batches and world is not None else 1
    return make_problem(
        args.model, data=args.data, checkpoint=getattr(args, "checkpoint", None), model_args=args.model_args,
        loss=args.loss, samples=args.samples, seed=args.seed, batch_size=args.batch_size, device=args.device,
        test_data=getattr(args, "test_data", None), unsafe_load=args.unsafe_load, local_rank=local_rank,
        target_key=args.target_key, output_key=args.output_key, shift_labels=args.shift_labels,
        data_on_device=args.data_on_device, strip_prefix=args.strip_prefix, shards=shards,
    )


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [os.path.basename(sys.argv[0]), *sys.argv[1:]])


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
    if args.vmin is not None and args.vmax is not None and args.vmin >= args.vmax:
        raise LandscapeError(f"--vmin {args.vmin:g} must be below --vmax {args.vmax:g}")
    if args.log and args.vmin is not None and args.vmin <= 0:
        raise LandscapeError(f"--log needs a positive --vmin (got {args.vmin:g})")
    check_colormap(args.cmap)
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
    import matplotlib.pyplot as plt  # (pyplot only here: it picks a GUI backend)
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
    if not has_display():
        print(f"landscape {command}: --show: no display here (DISPLAY is not set); open {path} in a browser",
              file=sys.stderr, flush=True)
        return
    webbrowser.open("file://" + os.path.abspath(path))
