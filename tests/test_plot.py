"""Pictures and exports from synthetic result files (built in test_results.py, following schema.py).

Checks: every kind writes a PNG of the expected pixel size; heatmaps and filled contours put x on the
horizontal axis and Z[i, j] at (x[i], y[j]) (by sampling rendered pixels); NaN is masked with one
warning; the report renders whatever subset a file holds; VTK/csv/npz hold the values in the documented
order; user errors come out as one line and exit status 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from landscape.errors import LandscapeError  # noqa: E402
from landscape.paths.analysis import find_bumps  # noqa: E402
from landscape.plot import available_kinds, plot_all, plot_kind  # noqa: E402
from landscape.plot.common import new_figure  # noqa: E402
from landscape.plot.report import make_report, metric_rows, report_paths  # noqa: E402
from landscape.plot.surface import Options, draw_contour, draw_heatmap, volume_slices  # noqa: E402
from landscape.plot.vtk import export, write_vtk  # noqa: E402
from landscape.results import open_result  # noqa: E402
from tests.test_results import X7, Y5, quad, write_li, write_ours  # noqa: E402

DPI = 40
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: figure size in inches of each kind for a 2D file with three curvature maps
SIZES = {"contour": (6.0, 5.0), "contourf": (6.0, 5.0), "heatmap": (6.0, 5.0), "surface3d": (6.5, 5.5),
         "line": (6.0, 4.0), "path": (6.0, 4.6), "density": (6.0, 4.6), "trajectory": (6.0, 5.0),
         "curvature": (4.6 * 3, 4.2)}


@pytest.fixture(autouse=True)
def _quiet_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _png_ok(path: str, size_in: tuple[float, float] | None = None) -> np.ndarray:
    assert os.path.isfile(path) and os.path.getsize(path) > 1000, path
    img = mpimg.imread(path)
    if size_in is not None:
        w, h = size_in
        assert img.shape[:2] == (round(h * DPI), round(w * DPI)), (path, img.shape)
    assert img[..., :3].std() > 0.01  # not a blank canvas
    return img


# ---------------------------------------------------------------------------- every kind
def test_every_kind_of_a_full_2d_file(tmp_path):
    r = open_result(write_ours(str(tmp_path / "r20.h5"), ndim=2, holes=True, paths=True, curvature=True,
                               trajectory=True, curvature_maps=True))
    kinds = available_kinds(r)
    assert kinds == ["contour", "contourf", "heatmap", "surface3d", "line", "path", "density", "trajectory",
                     "curvature"]
    paths = plot_all(r, str(tmp_path / "out"), opts=Options(dpi=DPI))
    names = [os.path.basename(p) for p in paths]
    assert names == ["r20_train_loss_contour.png", "r20_train_loss_contourf.png", "r20_train_loss_heatmap.png",
                     "r20_train_loss_surface3d.png", "r20_train_loss_line.png", "r20_path_interpolation.png",
                     "r20_density.png", "r20_train_loss_trajectory.png", "r20_curvature.png"]
    for kind, path in zip(kinds, paths):
        _png_ok(path, SIZES[kind])


def test_1d_and_3d_kinds(tmp_path):
    r1 = open_result(write_ours(str(tmp_path / "one.h5"), ndim=1, curvature_maps=True))
    assert available_kinds(r1) == ["line", "curvature"]
    for p in plot_all(r1, str(tmp_path), opts=Options(dpi=DPI)):
        _png_ok(p, (6.0, 4.0))
    r3 = open_result(write_ours(str(tmp_path / "vol.h5"), ndim=3))
    assert available_kinds(r3) == ["line", "volume"]
    (vol,) = plot_kind(r3, "volume", str(tmp_path), opts=Options(dpi=DPI))
    _png_ok(vol, (3.2 * 3 + 1.0, 2.9 + 0.6))
    assert volume_slices(3) == [0, 1, 2] and volume_slices(21) == [0, 2, 5, 8, 10, 12, 15, 18, 20]


def test_options_and_formats(tmp_path):
    r = open_result(write_ours(str(tmp_path / "r.h5"), ndim=2))
    (p,) = plot_kind(r, "contour", str(tmp_path), surface="test_loss",
                     opts=Options(log=True, vmin=0.2, vmax=1.5, levels=7, dpi=DPI))
    assert p.endswith("r_test_loss_contour.png")
    _png_ok(p, SIZES["contour"])
    for fmt in ("pdf", "svg"):
        (q,) = plot_kind(r, "heatmap", str(tmp_path), fmt=fmt, opts=Options(dpi=DPI))
        assert q.endswith(f".{fmt}") and os.path.getsize(q) > 1000
    fig = new_figure(4, 4)
    cs = draw_contour(fig.add_subplot(), r, "train_loss", Options(levels=5, vmin=0.5, vmax=1.0))
    np.testing.assert_allclose(cs.levels, np.linspace(0.5, 1.0, 5))


def test_li_file_plots(tmp_path):
    r = open_result(write_li(str(tmp_path / "li.h5")))
    (p,) = plot_kind(r, "heatmap", str(tmp_path), opts=Options(dpi=DPI))
    _png_ok(p, SIZES["heatmap"])
    fig = new_figure(5, 4)
    mesh = draw_heatmap(fig.add_subplot(), r, "train_loss")
    np.testing.assert_allclose(mesh.get_array().reshape(5, 7), quad(X7, Y5).T)


def test_plane_models_marked(tmp_path):
    p = write_ours(str(tmp_path / "plane.h5"), ndim=2)
    with h5py.File(p, "r+") as f:
        ds = f.create_dataset("plane/coords", data=np.array([[0.0, 0.0], [1.0, 0.0], [0.3, 0.5]]))
        ds.attrs["labels"] = '["A", "B", "C"]'
    fig = new_figure(5, 4)
    ax = fig.add_subplot()
    draw_contour(ax, open_result(p), "train_loss", colorbar=False)
    assert {t.get_text() for t in ax.texts} >= {"A", "B", "C"}


# ---------------------------------------------------------------------------- orientation
def _render(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3] / 255.0


def _pixel(buf: np.ndarray, ax, x: float, y: float) -> np.ndarray:
    """RGB (0..1) of the rendered figure ``buf`` at data point (x, y)."""
    px, py = ax.transData.transform((x, y))
    return buf[buf.shape[0] - int(round(py)), int(round(px))]


def _orientation_file(tmp_path) -> str:
    """7×5 grid with Z[i, j] = 10 i + j: every cell a different value, so any transposition shows."""
    path = write_ours(str(tmp_path / "o.h5"), ndim=2)
    z = 10.0 * np.arange(7)[:, None] + np.arange(5)[None, :]
    with h5py.File(path, "r+") as f:
        f["surfaces/train_loss"][...] = z
    return path


def test_heatmap_orientation(tmp_path):
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    r = open_result(_orientation_file(tmp_path))
    z = r.surfaces["train_loss"]
    fig = new_figure(6, 4, layout=None)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    mesh = draw_heatmap(ax, r, "train_loss", colorbar=False)
    # what matplotlib gets: rows along y, columns along x
    np.testing.assert_array_equal(mesh.get_array().reshape(5, 7), z.T)
    assert ax.get_xlabel().startswith("α") and ax.get_ylabel().startswith("β")
    cmap, lo, hi = colormaps["viridis"], z.min(), z.max()
    buf = _render(fig)
    for i in range(7):
        for j in range(5):
            want = np.asarray(cmap((z[i, j] - lo) / (hi - lo)))[:3]
            got = _pixel(buf, ax, X7[i], Y5[j])
            assert np.abs(got - want).max() < 0.03, (i, j, got, want)


def test_filled_contour_orientation(tmp_path):
    """Z = x² + 3y² + 0.1 on x ∈ [-1, 1], y ∈ [-0.5, 0.5]: (1, 0) is higher than (0, 0.5)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    r = open_result(write_ours(str(tmp_path / "q.h5"), ndim=2))
    fig = new_figure(6, 4, layout=None)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cs = draw_contour(ax, r, "train_loss", Options(levels=40), filled=True, colorbar=False)
    buf = _render(fig)

    def value(x, y):  # invert the colour through the contour set's colours
        rgb = _pixel(buf, ax, x, y)
        colors = cs.cmap(cs.norm(0.5 * (cs.levels[:-1] + cs.levels[1:])))[:, :3]
        k = int(np.argmin(np.abs(colors - rgb).sum(axis=1)))
        return 0.5 * (cs.levels[k] + cs.levels[k + 1])

    assert value(0.95, 0.0) == pytest.approx(0.95 ** 2 + 0.1, abs=0.06)
    assert value(0.0, 0.45) == pytest.approx(3 * 0.45 ** 2 + 0.1, abs=0.06)
    assert value(0.0, 0.0) < 0.15


# ---------------------------------------------------------------------------- NaN / inf
def test_nonfinite_masked_and_warned_once(tmp_path):
    r = open_result(write_ours(str(tmp_path / "nan.h5"), ndim=2, holes=True, inf=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = new_figure(5, 4)
        mesh = draw_heatmap(fig.add_subplot(), r, "train_loss")
        draw_contour(fig.add_subplot(), r, "train_loss")
    msgs = [str(w.message) for w in caught if "left blank" in str(w.message)]
    assert len(msgs) == 1 and "3 not computed yet" in msgs[0] and "1 infinite" in msgs[0]
    mask = np.ma.getmaskarray(mesh.get_array()).reshape(5, 7)  # rows = y
    assert mask[0, 0] and mask[2:, 6].all() and mask.sum() == 4  # (x[0], y[0]) inf; (x[6], y[2:]) not done


def test_plot_command_prints_one_line_warning(tmp_path, run_cli):
    p = write_ours(str(tmp_path / "w.h5"), ndim=2, holes=True)
    code, out, err = run_cli("plot", p, "--kind", "heatmap", "--surface", "test_loss", "--dpi", DPI)
    assert code == 0 and out.strip().endswith("w_test_loss_heatmap.png")
    assert err.count("warning:") == 1 and "3 not computed yet" in err and "Traceback" not in err


# ---------------------------------------------------------------------------- report
@pytest.mark.parametrize("contents", [
    dict(ndim=2, holes=True, paths=True, curvature=True, metrics=True, layerwise=True, trajectory=True,
         curvature_maps=True),
    dict(ndim=1),
    dict(ndim=0, metrics=True, layerwise=True),
    dict(ndim=0, paths=True, curvature=True),
    dict(ndim=3, metrics=True),
])
def test_report_with_any_subset(tmp_path, contents):
    path = write_ours(str(tmp_path / "rep.h5"), **contents)
    (png,) = make_report(open_result(path), opts=Options(dpi=DPI), formats=("png",))
    assert png == str(tmp_path / "rep_report.png")
    _png_ok(png)


def test_report_nothing_and_table(tmp_path):
    p = str(tmp_path / "empty.h5")
    with h5py.File(p, "w") as f:
        f.attrs.update({"format": "landscape", "format_version": 1, "kind": "sharpness"})
    with pytest.raises(LandscapeError, match="nothing to report"):
        make_report(open_result(p))
    rows = metric_rows(open_result(write_ours(str(tmp_path / "m.h5"), ndim=0, metrics=True)))
    assert [r[0] for r in rows] == ["eps_sharpness", "lambda_max", "loss_variation"]  # extras ('of') left out
    assert rows[0][1] == "1.25" and rows[0][2] == "eps=0.001, steps=10"


def test_report_command(tmp_path, run_cli):
    p = write_ours(str(tmp_path / "c.h5"), ndim=1, metrics=True)
    code, out, err = run_cli("report", p, "--out", str(tmp_path / "sub_report.png"), "--dpi", DPI)
    assert code == 0 and out.split() == [str(tmp_path / "sub_report.png"), str(tmp_path / "sub_report.pdf")]
    _png_ok(str(tmp_path / "sub_report.png"))
    assert report_paths("outputs/r20.h5") == ["outputs/r20_report.png", "outputs/r20_report.pdf"]
    assert open(tmp_path / "sub_report.pdf", "rb").read(4) == b"%PDF"


# ---------------------------------------------------------------------------- exports
def _vtk_tokens(path: str) -> list[str]:
    return open(path).read().split()


def _after(tokens: list[str], key: str, n: int) -> list[float]:
    i = tokens.index(key)
    return [float(t) for t in tokens[i + 1: i + 1 + n]]


def test_vtk_2d_structured_grid(tmp_path):
    r = open_result(write_ours(str(tmp_path / "v.h5"), ndim=2, holes=True))
    path = write_vtk(r, str(tmp_path / "v.vtk"))
    text = open(path).read()
    assert text.startswith("# vtk DataFile Version 3.0\n") and "\nASCII\nDATASET STRUCTURED_GRID\n" in text
    assert "DIMENSIONS 7 5 1" in text and "POINT_DATA 35" in text
    tok = _vtk_tokens(path)
    assert tok[tok.index("POINTS") + 1] == "35"
    pts = np.array(_after(tok, "double", 35 * 3)).reshape(35, 3)  # first "double" is the POINTS type
    z = r.surfaces["train_loss"]
    for k in range(35):
        i, j = k % 7, k // 7  # x fastest
        assert pts[k, 0] == pytest.approx(X7[i]) and pts[k, 1] == pytest.approx(Y5[j])
        if np.isfinite(z[i, j]):
            assert pts[k, 2] == pytest.approx(z[i, j])
    i0 = tok.index("train_loss")
    vals = np.array([float(t) for t in tok[i0 + 5: i0 + 5 + 35]])  # SCALARS train_loss double 1 LOOKUP_TABLE default
    np.testing.assert_allclose(vals, z.T.reshape(-1), equal_nan=True)
    assert np.isnan(vals).sum() == 3


def test_vtk_3d_structured_points_and_rectilinear(tmp_path):
    path = write_ours(str(tmp_path / "v3.h5"), ndim=3)
    r = open_result(path)
    out = write_vtk(r, str(tmp_path / "v3.vtk"))
    tok = _vtk_tokens(out)
    assert "STRUCTURED_POINTS" in tok and _after(tok, "DIMENSIONS", 3) == [7, 5, 3]
    assert _after(tok, "ORIGIN", 3) == pytest.approx([-1.0, -0.5, -0.2])
    assert _after(tok, "SPACING", 3) == pytest.approx([1 / 3, 0.25, 0.2])
    i0 = tok.index("train_loss")
    vals = np.array([float(t) for t in tok[i0 + 5: i0 + 5 + 105]])
    np.testing.assert_allclose(vals, r.surfaces["train_loss"].transpose(2, 1, 0).reshape(-1))
    with h5py.File(path, "r+") as f:
        f["coords/z"][...] = [-0.2, 0.0, 0.5]
    tok = _vtk_tokens(write_vtk(open_result(path), str(tmp_path / "v3r.vtk")))
    assert "RECTILINEAR_GRID" in tok and _after(tok, "Z_COORDINATES", 1) == [3]


def test_vtk_of_1d_is_an_error(tmp_path):
    with pytest.raises(LandscapeError, match="2D or 3D"):
        write_vtk(open_result(write_ours(str(tmp_path / "a.h5"), ndim=1)), str(tmp_path / "a.vtk"))


def test_csv_and_npz_round_trip(tmp_path):
    r = open_result(write_ours(str(tmp_path / "e.h5"), ndim=2, holes=True, paths=True, curvature=True, metrics=True,
                               layerwise=True))
    csv_path = export(r, "csv")
    assert csv_path == str(tmp_path / "e.csv")
    table = np.genfromtxt(csv_path, delimiter=",", names=True)
    assert table.dtype.names == ("x", "y", "train_loss", "test_loss", "train_acc", "done")
    assert len(table) == 35
    for row in table:
        i, j = int(np.argmin(np.abs(X7 - row["x"]))), int(np.argmin(np.abs(Y5 - row["y"])))
        want = r.surfaces["train_loss"][i, j]
        assert (np.isnan(want) and np.isnan(row["train_loss"])) or row["train_loss"] == pytest.approx(want)
        assert row["done"] == r.done[i, j]
    npz = export(r, "npz", str(tmp_path / "e.npz"))
    with np.load(npz, allow_pickle=False) as d:
        np.testing.assert_array_equal(d["x"], X7)
        np.testing.assert_array_equal(d["train_loss"], r.surfaces["train_loss"])
        np.testing.assert_array_equal(d["done"], r.done)
        np.testing.assert_array_equal(d["paths/interpolation/alpha"], r.paths["interpolation"]["alpha"])
        assert d["curvature/eigenvalues"].tolist() == [40.0, 12.0, 5.0] and float(d["metrics/eps_sharpness"]) == 1.25
        assert d["layerwise/layers"].tolist() == ["layers.0", "layers.1", "head"]
        assert '"model": "zoo:mlp"' in str(d["config"])


def test_csv_of_a_path_file(tmp_path):
    r = open_result(write_ours(str(tmp_path / "p.h5"), ndim=0, paths=True))
    table = np.genfromtxt(export(r, "csv"), delimiter=",", names=True)
    assert table.dtype.names[0] == "alpha" and len(table) == 21 and "train_loss" in table.dtype.names


def test_export_command(tmp_path, run_cli):
    p = write_ours(str(tmp_path / "x.h5"), ndim=2)
    code, out, _ = run_cli("export", p, "--format", "vtk", "--out", str(tmp_path / "y.vtk"), "--log")
    assert code == 0 and out.strip() == str(tmp_path / "y.vtk")
    code, out, err = run_cli("export", p, "--format", "csv", "--log")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "vtk, vts, vtu, stl, obj and ply only" in err


# ---------------------------------------------------------------------------- paths
def test_find_bumps():
    alpha = np.linspace(0, 1, 11)
    loss = np.array([5, 4, 3, 3.5, 2, 1.5, 1.0, 0.8, 1.2, 0.5, 0.4])
    bumps = find_bumps(alpha, loss, tol=1e-3)
    assert [round(b[1], 2) for b in bumps] == [0.3, 0.8]
    assert bumps[0][2] == pytest.approx(0.5) and bumps[1][2] == pytest.approx(0.4)
    assert find_bumps(alpha, np.linspace(1, 0, 11)) == []


# ---------------------------------------------------------------------------- command line
def test_plot_command_default_all(tmp_path, run_cli):
    p = write_ours(str(tmp_path / "r20.h5"), ndim=1)
    code, out, err = run_cli("plot", p, "--dpi", DPI)
    assert code == 0 and out.split() == [str(tmp_path / "r20_line.png")] and err == ""
    code, out, _ = run_cli("plot", p, "--dpi", DPI, "--out-dir", str(tmp_path / "figs"), "--format", "svg")
    assert code == 0 and out.split() == [str(tmp_path / "figs" / "r20_line.svg")]


@pytest.mark.parametrize("ndim,args,needle", [
    (1, ["--kind", "contour"], "it can give: line"),
    (2, ["--kind", "volume"], "it can give: contour, contourf, heatmap, surface3d, line"),
    (2, ["--kind", "density"], "not available"),
    (2, ["--kind", "heatmap", "--surface", "bogus"], "train_loss"),
    (2, ["--vmin", "2", "--vmax", "1"], "--vmin"),
])
def test_plot_command_user_errors(tmp_path, run_cli, ndim, args, needle):
    p = write_ours(str(tmp_path / "r.h5"), ndim=ndim)
    code, out, err = run_cli("plot", p, *args)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("landscape plot: error:")
    assert needle in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("what", ["missing", "text", "neither"])
def test_plot_command_bad_files(tmp_path, run_cli, what):
    p = tmp_path / "bad.h5"
    if what == "text":
        p.write_text("loss,acc\n1,2\n")
    elif what == "neither":
        with h5py.File(p, "w") as f:
            f["w"] = np.zeros(2)
    code, out, err = run_cli("plot", str(p))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and str(p) in err


def test_plot_errors_raise_landscape_error(tmp_path):
    r = open_result(write_ours(str(tmp_path / "r.h5"), ndim=2))
    with pytest.raises(LandscapeError, match="can give"):
        plot_kind(r, "path", str(tmp_path))
    with pytest.raises(LandscapeError):
        open_result(str(tmp_path / "missing.h5"))


def test_no_pyplot_figures_left(tmp_path):
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    r = open_result(write_ours(str(tmp_path / "r.h5"), ndim=2))
    plot_kind(r, "contourf", str(tmp_path), opts=Options(dpi=DPI))
    assert len(plt.get_fignums()) == before


def test_script_entry_point(tmp_path):
    p = write_ours(str(tmp_path / "s.h5"), ndim=2)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "plot.py"), p, "--kind", "heatmap",
                           "--dpi", str(DPI)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "s_train_loss_heatmap.png")
