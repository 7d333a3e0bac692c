"""Extending: a new plot kind is one module (``available`` + ``figure``) plus one registry line.

A toy kind (a histogram of the surface's values) is registered here the way README's "A plot kind" shows,
then drawn through the library (``landscape.plot.figure``, ``plot_kind``) and the command line
(``landscape plot --kind histogram``, ``--kind all``), with the options it does not list refused by name.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import landscape.plot  # noqa: E402
from landscape.errors import LandscapeError  # noqa: E402
from landscape.plot import PLOT_KINDS, PlotKind, register_plot_kind  # noqa: E402
from landscape.plot.common import new_figure  # noqa: E402
from landscape.results import Result, open_result  # noqa: E402
from tests.test_results import write_ours  # noqa: E402


# ---------------------------------------------------------------------------- the toy kind's "module"
def available(result: Result) -> bool:
    return result.ndim >= 1 and any(result.has_values(n) for n in result.surfaces)


def figure(result: Result, opts, surface: str | None, path: str | None):
    name = surface or result.default_surface()
    z = np.asarray(result.surfaces[name], dtype=float)
    fig = new_figure(*(opts.figsize or (5.0, 4.0)))
    ax = fig.add_subplot()
    ax.hist(z[np.isfinite(z)], bins=10, log=opts.log)
    ax.set_xlabel(name)
    return fig


@pytest.fixture
def histogram():
    before = dict(PLOT_KINDS)
    kind = register_plot_kind(PlotKind("histogram", available, figure, options=("log",), on_grid=True))
    yield kind
    PLOT_KINDS.clear()
    PLOT_KINDS.update(before)


def _counts(fig) -> float:
    return sum(p.get_height() for p in fig.axes[0].patches)


def test_a_registered_kind_is_drawn_by_the_library(histogram, tmp_path):
    r = open_result(write_ours(str(tmp_path / "two.h5"), ndim=2))
    assert "histogram" in landscape.plot.KINDS and "histogram" in landscape.plot.available_kinds(r)
    assert landscape.plot.APPLIES["log"][-1] == "histogram" and "histogram" not in landscape.plot.APPLIES["cmap"]
    fig = landscape.plot.figure(r, "histogram", surface="test_loss", log=True)
    assert fig.axes[0].get_xlabel() == "test_loss" and fig.axes[0].get_yscale() == "log"
    assert _counts(fig) == np.isfinite(r.surfaces["test_loss"]).sum()  # every computed point counted once
    with pytest.raises(LandscapeError, match="`cmap` does not apply to --kind histogram"):
        landscape.plot.figure(r, "histogram", cmap="magma")
    (p,) = landscape.plot.plot_kind(r, "histogram", str(tmp_path / "out"))
    assert p == str(tmp_path / "out" / "two_train_loss_histogram.png") and os.path.getsize(p) > 1000
    one = open_result(write_ours(str(tmp_path / "zero.h5"), ndim=0, paths=True))  # no surface: not available
    with pytest.raises(LandscapeError, match="`kind` histogram is not available"):
        landscape.plot.figure(one, "histogram")


def test_a_registered_kind_is_a_choice_of_landscape_plot(histogram, tmp_path, run_cli):
    two = write_ours(str(tmp_path / "two.h5"), ndim=2)
    code, out, err = run_cli("plot", two, "--kind", "histogram", "--log", "--out-dir", tmp_path / "a")
    assert code == 0 and out.split() == [str(tmp_path / "a" / "two_train_loss_histogram.png")], err
    code, out, err = run_cli("plot", two, "--kind", "histogram", "--cmap", "magma", "--out-dir", tmp_path)
    assert code == 2 and "--cmap does not apply to --kind histogram" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli("plot", two, "--out-dir", tmp_path / "all")  # --kind all draws it with the others
    assert code == 0 and str(tmp_path / "all" / "two_train_loss_histogram.png") in out.split()


def test_without_registration_the_kind_is_unknown(tmp_path, run_cli):
    two = write_ours(str(tmp_path / "two.h5"), ndim=2)
    assert "histogram" not in landscape.plot.KINDS
    code, _, err = run_cli("plot", two, "--kind", "histogram")
    assert code == 2 and "invalid choice: 'histogram'" in err
