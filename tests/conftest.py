"""Shared fixtures: tiny problems that run in milliseconds on a CPU."""

from __future__ import annotations

import os
import sys

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture
def tiny_problem():
    from landscape.problem import make_problem

    return make_problem("zoo:mlp", data="zoo:synthetic", samples=96, batch_size=40, device="cpu",
                        model_args={"width": 8, "depth": 1})


@pytest.fixture
def run_cli(capsys):
    """Run ``landscape ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from landscape.cli import main

    def run(*args: str):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny tensors: faster, and immune to OpenMP spin-waits on a busy
    machine. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
