"""Issue 8, part 4: every malformed flag value gives exit status 2 and one line naming flag, value and what is accepted.

The cases live in ``bad_inputs.json`` (data, so a new flag gets a row, not new code). A row whose
subcommand is not registered (yet) is skipped. ``test_every_flag_has_a_row`` fails when a
subcommand grows a value-taking flag without a row.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "bad_inputs.json"), encoding="utf-8") as _f:
    TABLE = json.load(_f)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from landscape.cli import build_parser

    parser = build_parser()
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


SUB = _subparsers()
CASES = [(cmd, i) for i, row in enumerate(TABLE["rows"]) for cmd in row["cmds"]]


def _flags_of(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def _merge(base: list[str], args: list[str], sub: argparse.ArgumentParser) -> list[str]:
    """``base`` without the options ``args`` sets (with their values), then ``args``."""
    nargs = {o: a.nargs for a in sub._actions for o in a.option_strings}
    drop = _flags_of(args)
    out, i = [], 0
    while i < len(base):
        tok = base[i]
        flag = tok.split("=", 1)[0]
        n = nargs.get(flag)
        width = 1 if "=" in tok or n == 0 else (n if isinstance(n, int) else 1) + 1
        if flag not in drop:
            out += base[i:i + width]
        i += width
    return [*args, *out] if args and not args[0].startswith("--") else [*out, *args]


def _fill(text: str, files: dict, tmp: str) -> str:
    return text.format(tmp=tmp, **files)


class _Timeout(Exception):
    pass


def _run(argv: list[str], seconds: int = 120) -> tuple[object, str, str]:
    from landscape.cli import main

    def alarm(*_):
        raise _Timeout

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code
            except _Timeout:
                code = "accepted: still running after the time limit"
            except BaseException as e:  # noqa: BLE001 - a traceback is the failure being tested for
                import traceback

                traceback.print_exc()
                code = f"raised {type(e).__name__}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("cmd,i", CASES, ids=[f"{c}-{i}-{TABLE['rows'][i]['flag']}" for c, i in CASES])
def test_bad_input(cmd, i, fault_files, tmp_path):
    row = TABLE["rows"][i]
    if cmd not in SUB:
        pytest.skip(f"landscape {cmd} is not registered yet")
    if row.get("known_defect"):
        pytest.xfail(row["known_defect"])
    tmp = str(tmp_path)
    args = [_fill(a, fault_files, tmp) for a in row["args"]]
    base = [_fill(a, fault_files, tmp) for a in TABLE["bases"].get(cmd, [])]
    argv = [cmd, *_merge(base, args, SUB[cmd])]
    code, out, err = _run(argv)
    shown = f"landscape {' '.join(argv)}\nexit: {code}\nstderr:\n{err}"
    assert "Traceback" not in err, shown
    assert code == 2, shown
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, shown
    line = lines[0].lower()
    names = row.get("names", row["flag"])
    value = _fill(row["value"], fault_files, tmp)
    for want in [names, value, *row["accepts"]]:
        assert want.lower() in line, f"{want!r} missing from the error line\n{shown}"
    warnings = [ln for ln in err.splitlines() if ln.strip() and "error:" not in ln and not ln.startswith(
        f"landscape {cmd}: ")]
    assert not warnings, f"more than one line about the error\n{shown}"


def test_every_flag_has_a_row():
    """New flags get rows: every value-taking option of every registered subcommand appears in the table."""
    covered = {(c, r["flag"]) for r in TABLE["rows"] for c in r["cmds"]}
    exempt = set(TABLE["not_malformable"]["flags"])
    missing = []
    for cmd, sub in SUB.items():
        for a in sub._actions:
            if a.nargs == 0 or isinstance(a, argparse._HelpAction):
                continue
            flag = a.option_strings[0] if a.option_strings else a.dest
            if (cmd, flag) not in covered and f"{cmd} {flag}" not in exempt:
                missing.append(f"{cmd} {flag}")
    assert not missing, f"flags without a row in tests/faults/bad_inputs.json: {missing}"
