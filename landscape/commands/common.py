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
    g.add_argument("--batch-size", type=positive_int("--batch-size"), default=512, metavar="B")
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


def problem_from_args(args, world=None):
    from ..problem import make_problem

    local_rank = world.local_rank if world is not None else 0
    return make_problem(
        args.model, data=args.data, checkpoint=getattr(args, "checkpoint", None), model_args=args.model_args,
        loss=args.loss, samples=args.samples, seed=args.seed, batch_size=args.batch_size, device=args.device,
        test_data=getattr(args, "test_data", None), unsafe_load=args.unsafe_load, local_rank=local_rank,
        target_key=args.target_key, output_key=args.output_key, shift_labels=args.shift_labels,
        data_on_device=args.data_on_device, strip_prefix=args.strip_prefix,
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
