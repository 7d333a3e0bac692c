"""The picture options shared by ``plot``, ``report`` and ``view``, on every kind they apply to, checked on
the drawn artists (colormaps, norms, limits, levels, view angles, sizes, titles) and on rendered pixels;
refused by name on the kinds they mean nothing to. The notebook API (``landscape.plot.figure``,
``landscape.open``) and the mesh exports (STL/OBJ/PLY/.vtu read back with meshio, .vts decoded) too.
"""

from __future__ import annotations

import base64
import os
import warnings
import xml.etree.ElementTree as ET

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

import landscape  # noqa: E402
from landscape.errors import LandscapeError  # noqa: E402
from landscape.plot import APPLIES, KINDS, available_kinds, figure  # noqa: E402
from landscape.plot.report import report_figure  # noqa: E402
from landscape.plot.surface import Options  # noqa: E402
from landscape.plot.vtk import export  # noqa: E402
from landscape.results import open_result  # noqa: E402
from tests.test_results import X7, Y5, quad, write_ours  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("opts")
    two = write_ours(str(d / "two.h5"), ndim=2, paths=True, curvature=True, trajectory=True, curvature_maps=True)
    track = open_result(two)
    steps = np.arange(0, 100, 10)
    track.track = {"attrs": {"lr": 1.0, "top_k": 1}, "step": steps, "done": np.ones(len(steps), np.uint8),
                   "lambda_max": 2.0 - np.exp(-steps / 30.0), "train_loss": np.exp(-steps / 50.0)}
    return {"two": open_result(two), "one": open_result(write_ours(str(d / "one.h5"), ndim=1, curvature_maps=True)),
            "vol": open_result(write_ours(str(d / "vol.h5"), ndim=3)), "track": track}


def _result_for(files, kind):
    return files["vol"] if kind == "volume" else files["track"] if kind == "track" else files["two"]


def _main_ax(fig, kind):
    if kind == "surface3d":
        return next(a for a in fig.axes if a.name == "3d")
    return fig.axes[0]


def _mappables(fig):
    """Every colour-mapped artist of the figure (contour sets, meshes), colorbars left out."""
    out = []
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        out += [c for c in ax.collections if c.get_array() is not None and hasattr(c, "cmap")
                and c.get_cmap().name != "autumn"]  # trajectory markers keep their own order colours
    return out


def _contour_set(fig):
    from matplotlib.contour import ContourSet

    return next(c for ax in fig.axes for c in [*ax.collections, *getattr(ax, "_children", [])]
                if isinstance(c, ContourSet))


COLOUR_KINDS = APPLIES["cmap"]


def _render(fig) -> np.ndarray:
    """RGB pixels (0-255) of the figure drawn by Agg (our figures are made without pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(float)


# ---------------------------------------------------------------------------- every option, every kind
@pytest.mark.parametrize("kind", COLOUR_KINDS)
def test_cmap(files, kind):
    r = _result_for(files, kind)
    fig = figure(r, kind, cmap="magma")
    if kind == "surface3d":  # facecolours computed per cell: each one is a colour of magma's table
        poly = _main_ax(fig, kind).collections[0]
        faces = poly.get_facecolor()[:, :3]
        table = colormaps["magma"](np.linspace(0, 1, 256))[:, :3]
        dist = np.abs(faces[:, None, :] - table[None]).sum(-1).min(1)
        assert faces.shape[0] > 10 and dist.max() < 0.02
        viridis = colormaps["viridis"](np.linspace(0, 1, 256))[:, :3]
        assert np.abs(faces[:, None, :] - viridis[None]).sum(-1).min(1).max() > 0.05
    else:
        maps = _mappables(fig)
        assert maps and all(m.get_cmap().name == "magma" for m in maps), [m.get_cmap().name for m in maps]


def test_cmap_pixels(files):
    """A grey colormap renders grey cells; viridis does not (pixels, not only artists)."""
    r = files["two"]
    for cmap, grey in (("gray", True), (None, False)):
        fig = figure(r, "heatmap", cmap=cmap)
        ax = fig.axes[0]
        buf = _render(fig)
        px, py = ax.transData.transform((X7[1], Y5[1]))
        rgb = buf[buf.shape[0] - int(round(py)), int(round(px))]
        assert (np.ptp(rgb) < 3) == grey, rgb


@pytest.mark.parametrize("kind", APPLIES["vmin"])
def test_vmin_vmax(files, kind):
    r = _result_for(files, kind)
    fig = figure(r, kind, vmin=0.3, vmax=0.9)
    ax = _main_ax(fig, kind)
    if kind in ("line", "path"):
        assert ax.get_ylim() == pytest.approx((0.3, 0.9))
    elif kind == "surface3d":
        assert ax.get_zlim() == pytest.approx((0.3, 0.9))
    else:
        maps = _mappables(fig)
        assert maps and all((m.norm.vmin, m.norm.vmax) == pytest.approx((0.3, 0.9)) for m in maps)


@pytest.mark.parametrize("kind", APPLIES["levels"])
def test_levels(files, kind):
    fig = figure(files["two"], kind, levels=6, vmin=0.2, vmax=1.2)
    np.testing.assert_allclose(_contour_set(fig).levels, np.linspace(0.2, 1.2, 6))


@pytest.mark.parametrize("kind", APPLIES["log"])
def test_log(files, kind):
    r = _result_for(files, kind)
    fig = figure(r, kind, log=True)
    ax = _main_ax(fig, kind)
    if kind in ("line", "path"):
        assert ax.get_yscale() == "log"
    elif kind == "surface3d":  # 3D axes have no log scale: the height is log10 of the loss
        z = r.surfaces["train_loss"]
        assert ax.get_zlim() == pytest.approx((np.log10(z.min()), np.log10(z.max())))
        assert "log₁₀" in ax.get_zlabel()
    else:
        maps = _mappables(fig)
        assert maps and all(isinstance(m.norm, LogNorm) for m in maps)


def test_elev_azim(files):
    ax = _main_ax(figure(files["two"], "surface3d", elev=55, azim=20), "surface3d")
    assert (ax.elev, ax.azim) == (55, 20)
    ax = _main_ax(figure(files["two"], "surface3d"), "surface3d")
    assert (ax.elev, ax.azim) == (30, -60)


@pytest.mark.parametrize("kind", KINDS)
def test_figsize_and_title_on_every_kind(files, kind):
    r = files["one"] if kind == "curvature" else _result_for(files, kind)
    assert kind in available_kinds(r)
    fig = figure(r, kind, figsize=(7.5, 3.5), title="my landscape")
    assert tuple(fig.get_size_inches()) == (7.5, 3.5)
    assert fig.get_suptitle() == "my landscape"
    assert _render(fig).shape[:2] == (round(3.5 * fig.dpi), round(7.5 * fig.dpi))


@pytest.mark.parametrize("option,value", [("cmap", "magma"), ("vmin", 0.1), ("vmax", 2.0), ("levels", 5),
                                          ("log", True), ("elev", 10.0), ("azim", 5.0)])
def test_refused_by_name_where_meaningless(files, option, value):
    for kind in KINDS:
        if kind in APPLIES[option]:
            continue
        r = files["one"] if kind == "curvature" else _result_for(files, kind)
        with pytest.raises(LandscapeError, match=f"`{option}` does not apply to --kind {kind}"):
            figure(r, kind, **{option: value})


def test_notebook_api(files, tmp_path):
    r = landscape.open(files["two"].path)
    assert type(r).__name__ == "Result" and r.shape == (7, 5)
    fig = landscape.plot.figure(r, "contour", cmap="magma")
    assert isinstance(fig, matplotlib.figure.Figure)
    fig.savefig(tmp_path / "nb.png")
    assert os.path.getsize(tmp_path / "nb.png") > 1000
    fig = landscape.plot.figure(files["two"].path, "path", path="interpolation")  # a file name works too
    assert fig.axes[0].get_xlabel().startswith("α")
    with pytest.raises(LandscapeError, match="unknown plot option"):
        landscape.plot.figure(r, "contour", colour="red")
    with pytest.raises(LandscapeError, match="is not available"):
        landscape.plot.figure(r, "volume")


# ---------------------------------------------------------------------------- legends, aspect, report
def _overlap(fig, legend, ax) -> float:
    _render(fig)
    lb, ab = legend.get_window_extent(), ax.get_window_extent()
    w = max(0.0, min(lb.x1, ab.x1) - max(lb.x0, ab.x0))
    h = max(0.0, min(lb.y1, ab.y1) - max(lb.y0, ab.y0))
    return w * h


@pytest.mark.parametrize("kind", ["line", "path", "density", "trajectory"])
def test_legends_do_not_cover_the_data(files, kind):
    fig = figure(_result_for(files, kind), kind)
    ax = fig.axes[0]
    assert ax.get_legend() is not None and _overlap(fig, ax.get_legend(), ax) == 0.0


def test_equal_aspect_for_pca_and_plane(files, tmp_path):
    fig = figure(files["two"], "trajectory")  # PCA directions: one unit on both axes
    assert fig.axes[0].get_aspect() == 1.0
    fig = figure(files["two"], "contour")
    assert fig.axes[0].get_aspect() == 1.0
    wide = write_ours(str(tmp_path / "wide.h5"), ndim=2)  # random directions, x range twice the y range
    import h5py

    with h5py.File(wide, "r+") as f:
        del f["coords/y"]
        f["coords/y"] = Y5 / 2  # ratio 4:1: a free aspect for random directions
    assert figure(open_result(wide), "contour").axes[0].get_aspect() == "auto"
    with h5py.File(wide, "r+") as f:
        f["directions/x"].attrs["kind"] = "plane"
        f["directions/y"].attrs["kind"] = "plane"
    assert figure(open_result(wide), "contour").axes[0].get_aspect() == 1.0


def test_report_options_and_layout(files, tmp_path):
    r = files["two"]
    fig = report_figure(r, Options(cmap="magma", elev=50, azim=15, figsize=(14, 11), title="T"))
    assert tuple(fig.get_size_inches()) == (14, 11) and fig.get_suptitle() == "T"
    three_d = [a for a in fig.axes if a.name == "3d"]
    assert three_d and (three_d[0].elev, three_d[0].azim) == (50, 15)
    assert all(m.get_cmap().name == "magma" for m in _mappables(fig) if m.axes.name != "3d")
    # only the panels the file has: a path-only file gives one panel and no empty axes
    p = open_result(write_ours(str(tmp_path / "p.h5"), ndim=0, paths=True))
    fig = report_figure(p)
    assert len([a for a in fig.axes if a.get_visible()]) == 2  # the path and its accuracy twin
    with pytest.raises(LandscapeError, match="`elev` does not apply"):
        report_figure(p, Options(elev=10))
    # full metric parameters: nothing cut
    m = open_result(write_ours(str(tmp_path / "m.h5"), ndim=0, metrics=True))
    table = next(ax.tables[0] for ax in report_figure(m).axes if ax.tables)
    texts = [c.get_text().get_text() for c in table.get_celld().values()]
    assert "etas=[0.05, 0.2, 0.4]" in texts and not any("…" in t for t in texts)


def test_commands_share_the_options(files, run_cli, tmp_path, monkeypatch):
    two = files["two"].path
    code, out, err = run_cli("plot", two, "--kind", "line", "--cmap", "magma", "--out-dir", tmp_path)
    assert code == 2 and "--cmap does not apply to --kind line" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli("plot", files["one"].path, "--elev", "20", "--out-dir", tmp_path)  # kind all, 1D
    assert code == 2 and "--elev does not apply" in err
    code, out, _ = run_cli("plot", two, "--elev", "20", "--cmap", "magma", "--dpi", "30", "--out-dir", tmp_path)
    assert code == 0 and len(out.split()) == len(available_kinds(files["two"]))  # applied where they fit
    code, _, err = run_cli("plot", two, "--figsize", "big", "--out-dir", tmp_path)
    assert code == 2 and "--figsize 'big'" in err
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code, out, err = run_cli("plot", two, "--kind", "heatmap", "--show", "--dpi", "30", "--out-dir", tmp_path)
    assert code == 0 and "--show: no display here" in err and out.strip().endswith("heatmap.png")
    code, out, err = run_cli("report", two, "--cmap", "magma", "--figsize", "12,12", "--dpi", "20",
                             "--out", str(tmp_path / "rep"))
    assert code == 0
    import matplotlib.image as mpimg

    assert mpimg.imread(str(tmp_path / "rep.png")).shape[:2] == (240, 240)


# ---------------------------------------------------------------------------- mesh exports
def _vts_arrays(path: str) -> dict[str, np.ndarray]:
    """Decode a binary .vts (UInt64 byte-count header + little-endian data, base64)."""
    dtypes = {"Float64": "<f8", "UInt8": "u1"}
    out = {}
    for da in ET.parse(path).getroot().iter("DataArray"):
        raw = base64.b64decode(da.text)
        n = int(np.frombuffer(raw[:8], "<u8")[0])
        a = np.frombuffer(raw[8:8 + n], dtypes[da.get("type")])
        out[da.get("Name") or "Points"] = a.reshape(-1, 3) if da.get("NumberOfComponents") == "3" else a
    return out


def test_vts_matches_hdf5(files, tmp_path):
    r = files["two"]
    path = export(r, "vts", str(tmp_path / "s.vts"))
    a = _vts_arrays(path)
    z = r.surfaces["train_loss"]
    X, Y = np.meshgrid(X7, Y5, indexing="ij")
    pts = a["Points"]
    np.testing.assert_array_equal(pts[:, 0], X.T.ravel())  # x fastest, as VTK orders points
    np.testing.assert_array_equal(pts[:, 1], Y.T.ravel())
    np.testing.assert_array_equal(pts[:, 2], z.T.ravel())
    np.testing.assert_array_equal(a["test_loss"], r.surfaces["test_loss"].T.ravel())
    root = ET.parse(path).getroot()
    assert root.get("type") == "StructuredGrid" and root.find("StructuredGrid").get("WholeExtent") == "0 6 0 4 0 0"
    v = files["vol"]
    a3 = _vts_arrays(export(v, "vts", str(tmp_path / "v.vts")))
    np.testing.assert_array_equal(a3["train_loss"], v.surfaces["train_loss"].T.ravel())


def test_stl_obj_ply_vtu_read_back_with_meshio(files, tmp_path):
    meshio = pytest.importorskip("meshio")
    r = files["two"]
    z = quad(X7, Y5)
    for fmt in ("stl", "obj", "ply", "vtu"):
        path = export(r, fmt, str(tmp_path / f"s.{fmt}"))
        m = meshio.read(path)
        pts = m.points
        # every vertex sits on the surface: its height is the file's value at its (x, y)
        i = np.abs(pts[:, :1] - X7[None, :]).argmin(1)
        j = np.abs(pts[:, 1:2] - Y5[None, :]).argmin(1)
        np.testing.assert_allclose(pts[:, 0], X7[i], atol=1e-6)
        np.testing.assert_allclose(pts[:, 1], Y5[j], atol=1e-6)
        np.testing.assert_allclose(pts[:, 2], z[i, j], rtol=1e-6)  # STL stores float32
        assert len(np.unique(i * 5 + j)) == 35  # every grid point is a vertex
        if fmt == "vtu":
            assert m.cells[0].type == "quad" and len(m.cells[0].data) == 6 * 4
            np.testing.assert_array_equal(m.point_data["train_acc"], r.surfaces["train_acc"].T.ravel())
        else:
            assert m.cells[0].type == "triangle" and len(m.cells[0].data) == 2 * 6 * 4
    # holes: cells with a point not computed are left out of STL; log height
    holes = open_result(write_ours(str(tmp_path / "h.h5"), ndim=2, holes=True))
    m = meshio.read(export(holes, "stl", str(tmp_path / "h.stl"), log=True))
    assert len(m.cells[0].data) < 48 and np.nanmax(m.points[:, 2]) <= np.log10(np.nanmax(z)) + 1e-6
    v = files["vol"]
    m = meshio.read(export(v, "vtu", str(tmp_path / "v.vtu")))
    assert m.cells[0].type == "hexahedron" and len(m.cells[0].data) == 6 * 4 * 2
    np.testing.assert_array_equal(m.point_data["train_loss"], v.surfaces["train_loss"].T.ravel())
    with pytest.raises(LandscapeError, match="needs a 2D surface"):
        export(v, "stl", str(tmp_path / "v.stl"))
    with pytest.raises(LandscapeError, match="needs a 2D surface"):
        export(files["one"], "obj", str(tmp_path / "o.obj"))
