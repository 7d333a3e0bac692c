"""The ``landscape`` command. Each subcommand lives in ``landscape/commands/<name>.py`` and
exposes ``add_parser(subparsers)`` (which sets ``func``); this module only dispatches and turns
:class:`~landscape.errors.LandscapeError` into one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .errors import LandscapeError

COMMANDS = ("surface", "interpolate", "hessian", "sharpness", "track", "train", "plot", "report", "info",
            "export", "view", "demo")


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line (exit 2), like every other error here."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="landscape", description="Loss landscapes, paths, curvature and sharpness of PyTorch models.")
    parser.add_argument("--version", action="version", version=f"landscape {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"landscape.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"landscape.commands.{name}":
                continue  # not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from . import parallel

    # a rank that fails inside the MPI scheduler reports and aborts there, not here: same one line for out of memory
    parallel.describe_failure = lambda e: _oom_message(args, e, aborted=True) if _out_of_memory(e) else None
    try:
        return int(args.func(args) or 0)
    except LandscapeError as e:
        from .parallel import world

        w = world()
        if not getattr(e, "quiet", False) and (w.rank == 0 or getattr(e, "rank_specific", False)):
            prefix = f"[rank {w.rank}] " if w.size > 1 and not getattr(e, "on_every_rank", False) else ""
            print(f"landscape {args.command}: error: {prefix}{e}", file=sys.stderr, flush=True)
        w.fail(e.exit_code)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"landscape {args.command}: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        print(f"landscape {args.command}: error: {_oom_message(args, e)}", file=sys.stderr, flush=True)
        return 2
    except BrokenPipeError:
        os._exit(0)


def _out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or "out of memory" in str(e).lower()


def _oom_message(args, e: BaseException, aborted: bool = False) -> str:
    """One line for a batch that did not fit: which flags make the next try smaller. ``aborted``: an MPI job
    ended from inside its scheduler, where only the points of the last flush are on disk."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    flags = [f"--{d.replace('_', '-')}" for d in ("batch_size", "points_per_batch", "samples", "m", "max_examples")
             if hasattr(args, d)]
    saved = "points saved by the last flush are kept" if aborted else "points already computed are saved"
    resume = f" ({saved}: run the command again to resume)" if hasattr(args, "flush_every") else ""
    return (f"out of memory ({type(e).__name__}: {first[:160]}); try a smaller {' or '.join(flags) or 'problem'}"
            f"{resume}")


def entry() -> None:  # pragma: no cover - console script wrapper
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
