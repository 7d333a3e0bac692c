"""``landscape train``: train a model with SGD or Adam and save init, final and periodic checkpoints.

The files (``init.pt``, ``final.pt``, ``ckpt_00000.pt``, ...) are plain ``state_dict``s that
``--checkpoint``, ``interpolate --from/--to`` and ``surface --directions pca --trajectory`` read.
"""

from __future__ import annotations

import argparse
import os

from ..parallel import world
from ..train import train
from .common import add_checkpoint_prefix_arg, add_loss_args, number, positive_float, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model (SGD/Adam) and save init.pt, final.pt and ckpt_*.pt",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="zoo:mlp", metavar="SPEC",
                   help="zoo:NAME, package.module:callable or path/to/file.py:callable")
    g.add_argument("--model-args", default="", metavar="K=V,...", help="e.g. width=32,depth=2,bn=true")
    g.add_argument("--data", default="zoo:digits", metavar="SPEC",
                   help="zoo:digits[:train|test], zoo:synthetic, zoo:chars, torchvision:CLASS:ROOT or "
                        "package.module:callable; batches may be tensors, (inputs..., target) tuples or dicts")
    add_loss_args(g)
    g.add_argument("--samples", type=positive_int("--samples"), metavar="N", help="train on a seeded subset")
    g.add_argument("--init", metavar="PT", help="start from these weights instead of the seeded initialization")
    add_checkpoint_prefix_arg(g)
    o = p.add_argument_group("optimization")
    o.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    o.add_argument("--lr", type=positive_float("--lr"), default=0.1)
    o.add_argument("--momentum", type=number("--momentum", float, strict=False), default=0.9,
                   help="SGD momentum (ignored by Adam)")
    o.add_argument("--weight-decay", type=number("--weight-decay", float, strict=False), default=0.0)
    o.add_argument("--epochs", type=number("--epochs", strict=False), default=10)
    o.add_argument("--steps", type=number("--steps", strict=False), metavar="N",
                   help="optimizer steps (overrides --epochs)")
    o.add_argument("--batch-size", type=positive_int("--batch-size"), default=64)
    o.add_argument("--seed", type=int, default=0, help="initialization and mini-batch order")
    o.add_argument("--device", default="cpu", metavar="cpu|cuda|cuda:N|auto")
    s = p.add_argument_group("output")
    s.add_argument("--out-dir", default=os.path.join("outputs", "train"), metavar="DIR")
    s.add_argument("--save-every", type=number("--save-every", strict=False), default=0, metavar="STEPS",
                   help="also save ckpt_STEP.pt every STEPS optimizer steps (and at steps 0 and the last); 0: none")
    s.add_argument("--quiet", action="store_true", help="only the last line")
    p.set_defaults(func=run)


def run(args) -> int:
    w = world()

    def go():
        if not w.is_root:
            return None  # one training run, whatever the launcher
        return train(args.model, args.data, model_args=args.model_args, optimizer=args.optimizer, lr=args.lr,
                     momentum=args.momentum, weight_decay=args.weight_decay, epochs=args.epochs, steps=args.steps,
                     batch_size=args.batch_size, seed=args.seed, out_dir=args.out_dir, save_every=args.save_every,
                     loss=args.loss, samples=args.samples, device=args.device, init=args.init,
                     target_key=args.target_key, output_key=args.output_key, shift_labels=args.shift_labels,
                     strip_prefix=args.strip_prefix,
                     log=None if args.quiet else lambda m: print(m, flush=True))

    res = w.collective(go)
    if w.is_root and args.quiet:
        print(f"{res.final}: loss {res.final_loss:.4f}, accuracy {res.final_acc:.3f} after {res.steps} steps")
    return 0
