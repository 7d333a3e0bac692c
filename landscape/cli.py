"""The ``landscape`` command. Each subcommand lives in ``landscape/commands/<name>.py`` and
exposes ``add_parser(subparsers)`` (which sets ``func``); this module only dispatches and turns
:class:`~landscape.errors.LandscapeError` into one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
import time
import warnings

from . import __version__, parallel
from .commands.common import flag_table
from .errors import LandscapeError, with_flags

COMMANDS = ("surface", "interpolate", "hessian", "sharpness", "track", "train", "plot", "report", "info",
            "export", "view", "demo")


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line (exit 2), like every other error here."""

    argv: list[str] = []  # the command line being parsed (for hints)

    def error(self, message: str):  # noqa: D401
        hint = _negative_value_hint(message, _Parser.argv)
        self.exit(2, f"{self.prog}: error: {message}{hint} (see '{self.prog} --help')\n")


def _negative_value_hint(message: str, argv: list[str]) -> str:
    """``--x -1:1:5``: argparse takes ``-1:1:5`` for a flag and says 'expected one argument'; show the fix."""
    if "expected one argument" not in message:
        return ""
    flag = message.split("argument ", 1)[-1].split(":", 1)[0].split("/")[0].strip()
    for i, a in enumerate(argv[:-1]):
        if a == flag and argv[i + 1].startswith("-"):
            return f"; a value that starts with '-' must be attached with '=': {flag}={argv[i + 1]}"
    return ""


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


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as one line of ours, without the source line Python adds, parameters named as flags."""
    return f"landscape: warning: {parallel.render_message(str(message))}\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _Parser.argv = argv
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "func", None):
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        parser.print_help()
        return 2
    if extra:  # reported by the subcommand, so the hint points at its --help
        _subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(extra)}")
    flags = flag_table(_subparser(parser, args.command))
    warnings.formatwarning = _one_line_warning
    if hasattr(signal, "SIGXFSZ"):
        try:  # over `ulimit -f`, a write fails with EFBIG (one line below) instead of killing the process
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        except ValueError:  # not the main thread
            pass
    # a rank that fails inside the MPI scheduler reports and aborts there, not here: same one line for out of memory
    parallel.describe_failure = lambda e: _oom_message(args, e, aborted=True) if _out_of_memory(e) else None
    parallel.render_message = lambda text: with_flags(text, flags)
    try:
        return int(args.func(args) or 0)
    except LandscapeError as e:
        w = parallel.world()
        if not getattr(e, "quiet", False) and (w.rank == 0 or getattr(e, "rank_specific", False)):
            prefix = f"[rank {w.rank}] " if w.size > 1 and not getattr(e, "on_every_rank", False) else ""
            print(f"landscape {args.command}: error: {prefix}{with_flags(str(e), flags)}", file=sys.stderr,
                  flush=True)
        w.fail(e.exit_code)
        return e.exit_code
    except KeyboardInterrupt as e:
        return _interrupted(args, e)
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS:
            raise
        where = f" {e.filename}" if e.filename else ""
        print(f"landscape {args.command}: error: cannot write{where} ({e.strerror or e}); free some space, raise "
              "the file size limit (ulimit -f) or choose another output path", file=sys.stderr, flush=True)
        return 2
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        print(f"landscape {args.command}: error: {_oom_message(args, e)}", file=sys.stderr, flush=True)
        return 2
    except BrokenPipeError:
        os._exit(0)


_WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _interrupted(args, e: KeyboardInterrupt) -> int:
    """Ctrl-C: one line from rank 0 (what is saved, if anything), exit 130 on every rank. Under MPI the other
    ranks say nothing: the terminal sent the signal to all of them, and rank 0 ends the job."""
    w = parallel.world()
    if w.is_root:
        print(f"landscape {args.command}: {str(e) or 'interrupted'}", file=sys.stderr, flush=True)
        if w.size > 1:
            w.abort(130)
        return 130
    time.sleep(10)  # rank 0 aborts the job meanwhile; leave quietly if it does not
    os._exit(130)


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
    if resume and not os.path.exists(getattr(args, "out", "") or ""):
        resume = " (nothing was saved yet)"  # it failed before the output file was made
    return (f"out of memory ({type(e).__name__}: {first[:160]}); try a smaller {' or '.join(flags) or 'problem'}"
            f"{resume}")


def entry() -> None:  # pragma: no cover - console script wrapper
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
