"""``landscape view``: the interactive HTML page, read two ways.

Offline: the figures' JSON embedded in the page holds the file's values, one section per part of the file
(a ``/track`` group included, whatever its layout), and every picture option changes the figure it applies
to. In a real browser (Debian's chromium through selenium, skipped only where chromium is absent; CI
installs it): every plot renders with no JavaScript error, the mesh read back from the live page holds the
file's values, hovering the contour shows the value under the mouse, and the volume's slider changes the
slice shown.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import warnings

import h5py
import numpy as np
import pytest

pytest.importorskip("plotly")

from landscape.errors import LandscapeError  # noqa: E402
from landscape.plot.browser import find_browser, missing_reason  # noqa: E402
from landscape.plot.html import colorscale, page, write_page  # noqa: E402
from landscape.plot.surface import Options  # noqa: E402
from landscape.results import open_result  # noqa: E402
from tests.test_results import X7, Y5, quad, write_li, write_ours  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def figs_of(text: str) -> dict:
    m = re.search(r"const FIGS=(.*?);\nconst CONFIG", text, re.S)
    assert m, "no figure data in the page"
    return json.loads(m.group(1))


def nan_list(a: np.ndarray) -> list:
    """What the page should hold for ``a``: NaN/inf as null."""
    a = np.asarray(a, dtype=float)
    return np.where(np.isfinite(a), a, None).tolist()


def _full(tmp_path, **kw) -> str:
    return write_ours(str(tmp_path / "full.h5"), ndim=2, holes=True, paths=True, curvature=True, metrics=True,
                      layerwise=True, curvature_maps=True, **kw)


def _track(path: str) -> None:
    """A /track group as ``landscape track`` may write it: steps, 1D series, a (steps × grid) density."""
    with h5py.File(path, "r+") as f:
        g = f.create_group("track")
        g["step"] = np.array([0, 10, 20, 30])
        g["lambda_max"] = np.array([1.0, 2.0, 3.5, 3.9])
        g["train_loss"] = np.array([2.0, 1.0, 0.5, 0.4])
        g["density/grid"] = np.linspace(-1, 5, 9)
        g["density/values"] = np.abs(np.random.default_rng(0).normal(size=(4, 9))) + 1e-3
        g["something_else"] = np.zeros((2, 2, 2))


# ---------------------------------------------------------------------------- offline: the page's data
def test_page_holds_every_part_and_the_values(tmp_path):
    path = _full(tmp_path)
    _track(path)
    out = write_page(open_result(path))
    assert out == str(tmp_path / "full.html")
    text = open(out, encoding="utf-8").read()
    assert "<script src" not in text and "plotly.js" in text  # self-contained: the library is inlined
    figs = figs_of(text)
    assert {"surface3d", "contour", "lines", "path-interpolation", "density", "layerwise", "track",
            "track-density-values", "curvature-train_lambda_max"} <= set(figs)
    z = quad(X7, Y5)
    z.reshape(-1)[-3:] = np.nan  # the file's holes: not computed, shown as holes
    mesh = figs["surface3d"]["data"][0]
    assert mesh["x"] == X7.tolist() and mesh["y"] == Y5.tolist()
    assert mesh["z"] == nan_list(z.T)  # rows along y: Z[i, j] at (x[i], y[j])
    # hover data: every surface at each point (train loss, test loss, accuracy, curvature maps)
    assert mesh["customdata"][2][5][0] == pytest.approx(z[5, 2])
    assert mesh["customdata"][2][5][1] == pytest.approx(1.1 * z[5, 2])
    assert "train accuracy" in mesh["hovertemplate"]
    cont = figs["contour"]["data"][0]
    assert cont["type"] == "contour" and cont["z"] == mesh["z"]
    # path: curves, the bump at its peak, the barrier
    names = [t["name"] for t in figs["path-interpolation"]["data"]]
    assert "bumps (peak)" in names and any(n.startswith("barrier = 0.05") for n in names)
    # spectrum on a log axis with the top eigenvalues
    dens = figs["density"]
    assert dens["layout"]["yaxis"]["type"] == "log"
    assert {a["text"] for a in dens["layout"]["annotations"]} >= {"λ1=40", "λ2=12", "λ3=5"}
    # the track: series against the step, the density as a heatmap, the rest listed
    tr = {t["name"]: t for t in figs["track"]["data"]}
    assert tr["lambda_max"]["x"] == [0, 10, 20, 30] and tr["lambda_max"]["y"] == [1.0, 2.0, 3.5, 3.9]
    heat = figs["track-density-values"]["data"][0]
    assert heat["y"] == pytest.approx(np.linspace(-1, 5, 9).tolist()) and len(heat["z"]) == 9
    assert "something_else (2, 2, 2)" in text
    # metrics in full, every parameter
    assert "etas</b> = [0.05, 0.2, 0.4]" in text and "eps_sharpness" in text
    assert "…" not in text.split("id=metrics")[1].split("</table>")[0]


def test_page_of_a_3d_volume_and_of_partial_files(tmp_path):
    r3 = open_result(write_ours(str(tmp_path / "vol.h5"), ndim=3))
    figs = figs_of(page(r3))
    assert {"volume-x", "volume-y", "volume-z", "isosurface", "lines"} <= set(figs)
    vz = figs["volume-z"]
    vol = r3.surfaces["train_loss"]
    k0 = r3.center_index()[2]
    assert vz["layout"]["sliders"][0]["active"] == k0 and vz["data"][0]["z"] == nan_list(vol[:, :, k0].T)
    steps = vz["layout"]["sliders"][0]["steps"]
    assert len(steps) == 3 and steps[2]["args"][0]["z"][0] == nan_list(vol[:, :, 2].T)
    vx = figs["volume-x"]["layout"]["sliders"][0]["steps"]
    assert len(vx) == 7 and vx[6]["args"][0]["z"][0] == nan_list(vol[6, :, :].T)
    r1 = open_result(write_ours(str(tmp_path / "one.h5"), ndim=1))
    lines = {t["name"]: t for t in figs_of(page(r1))["lines"]["data"]}
    assert lines["train loss"]["y"] == nan_list(X7 ** 2 + 0.1) and lines["train accuracy"]["yaxis"] == "y2"
    # a path-only file, a metrics-only file, a Li et al. file: only their parts, no error
    assert set(figs_of(page(open_result(write_ours(str(tmp_path / "p.h5"), ndim=0, paths=True))))) == \
        {"path-interpolation"}
    text = page(open_result(write_ours(str(tmp_path / "m.h5"), ndim=0, metrics=True)))
    assert figs_of(text) == {} and "id=metrics" in text
    li = figs_of(page(open_result(write_li(str(tmp_path / "li.h5")))))
    assert li["surface3d"]["data"][0]["z"] == nan_list(quad(X7, Y5).T)
    empty = str(tmp_path / "empty.h5")
    with h5py.File(empty, "w") as f:
        f.attrs.update({"format": "landscape", "format_version": 1, "kind": "sharpness"})
    with pytest.raises(LandscapeError, match="nothing to show"):
        page(open_result(empty))


def test_page_options(tmp_path):
    r = open_result(write_ours(str(tmp_path / "o.h5"), ndim=2))
    z = quad(X7, Y5)
    base = figs_of(page(r))
    o = figs_of(page(r, Options(cmap="magma", vmin=0.2, vmax=1.0, levels=5, elev=60, azim=10, figsize=(8, 5),
                                title="my title")))
    mesh, cont = o["surface3d"]["data"][0], o["contour"]["data"][0]
    assert mesh["colorscale"] == colorscale("magma") != base["surface3d"]["data"][0]["colorscale"]
    assert (mesh["cmin"], mesh["cmax"]) == (0.2, 1.0) and (cont["zmin"], cont["zmax"]) == (0.2, 1.0)
    assert cont["contours"]["start"] == 0.2 and cont["contours"]["size"] == pytest.approx(0.8 / 4)
    eye = o["surface3d"]["layout"]["scene"]["camera"]["eye"]
    assert math.degrees(math.atan2(eye["z"], math.hypot(eye["x"], eye["y"]))) == pytest.approx(60)
    assert math.degrees(math.atan2(eye["y"], eye["x"])) == pytest.approx(10)
    assert o["contour"]["layout"]["width"] == 8 * 96 and o["contour"]["layout"]["height"] == 5 * 96
    assert o["lines"]["layout"]["yaxis"]["range"] == [0.2, 1.0]  # 1D: the value axis
    assert "<h1>my title</h1>" in page(r, Options(title="my title"))
    lg = figs_of(page(r, Options(log=True)))
    np.testing.assert_allclose(lg["surface3d"]["data"][0]["z"], np.log10(z.T))
    assert lg["lines"]["layout"]["yaxis"]["type"] == "log"


def test_view_and_report_html_commands(tmp_path, run_cli, monkeypatch):
    p = _full(tmp_path)
    code, out, err = run_cli("view", p, "--out", str(tmp_path / "page.html"), "--cmap", "cividis")
    assert code == 0 and out.strip() == str(tmp_path / "page.html") and "Traceback" not in err
    assert figs_of(open(tmp_path / "page.html").read())["contour"]["data"][0]["colorscale"] == colorscale("cividis")
    code, out, err = run_cli("report", p, "--html", "--dpi", 40)
    assert code == 0 and out.split()[-1] == str(tmp_path / "full_report.html")
    assert figs_of(open(tmp_path / "full_report.html").read())["surface3d"]
    code, _, err = run_cli("view", p, "--out", str(tmp_path / "page.png"))
    assert code == 2 and "ending in .html" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("view", p, "--cmap", "nope")
    assert code == 2 and "--cmap 'nope' is not a matplotlib colormap" in err
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code, out, err = run_cli("view", p, "--show")  # no display: one line, the page still written
    assert code == 0 and "--show: no display here" in err and os.path.exists(out.strip())
    code, _, err = run_cli("view", write_ours(str(tmp_path / "path.h5"), ndim=0, paths=True), "--elev", "10")
    assert code == 2 and "--elev does not apply to --kind path" in err


# ---------------------------------------------------------------------------- in a real browser
needs_browser = pytest.mark.skipif(find_browser() is None, reason=f"browser test skipped: {missing_reason()}")


def _errors(d) -> list[str]:
    return [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]


@needs_browser
def test_page_in_a_real_browser(tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    from landscape.plot.browser import headless, wait_rendered

    path = _full(tmp_path, trajectory=True)
    html_file = write_page(open_result(path))
    n_figs = len(figs_of(open(html_file).read()))
    z = open_result(path).surfaces["train_loss"]
    with headless() as d:
        d.get("file://" + html_file)
        assert wait_rendered(d) == n_figs
        assert _errors(d) == []
        # every figure was drawn by plotly (a plot container with its SVG or WebGL layers)
        drawn = d.execute_script("return Object.keys(FIGS).filter(id => document.getElementById(id)"
                                 ".querySelector('.main-svg') !== null).length")
        assert drawn == n_figs
        # the mesh read back from the live page is the file's surface (NaN holes as null)
        live = d.execute_script("return document.getElementById('surface3d').data[0].z")
        assert live == nan_list(z.T)
        assert d.execute_script("return document.getElementById('surface3d')._fullData[0].type") == "surface"
        # hover over grid point (i, j) of the contour: plotly's hover data and the label show Z[i, j]
        i, j = 2, 3
        gd = d.find_element("id", "contour")
        d.execute_script("arguments[0].scrollIntoView({block: 'center'})", gd)
        px = d.execute_script(
            "const gd = document.getElementById('contour'), L = gd._fullLayout;"
            "const r = gd.querySelector('.nsewdrag').getBoundingClientRect(), g = gd.getBoundingClientRect();"
            "return [r.left - g.left + L.xaxis.l2p(arguments[0]), r.top - g.top + L.yaxis.l2p(arguments[1]),"
            " g.width, g.height];", float(X7[i]), float(Y5[j]))
        assert d.execute_script("return document.getElementById('contour')._hoverdata") is None
        ActionChains(d).move_to_element_with_offset(gd, int(px[0] - px[2] / 2), int(px[1] - px[3] / 2)).perform()
        for _ in range(50):
            hover = d.execute_script("const h = document.getElementById('contour')._hoverdata;"
                                     "return h ? h.map(p => [p.curveNumber, p.x, p.y, p.z]) : null")
            if hover:
                break
            time.sleep(0.1)
        assert hover, "hovering the contour showed nothing"
        curve, hx, hy, hz = hover[0]
        assert curve == 0 and (hx, hy) == pytest.approx((X7[i], Y5[j])) and hz == pytest.approx(z[i, j])
        label = d.execute_script("return document.querySelector('#contour .hoverlayer').textContent")
        assert f"train loss = {z[i, j]:.6g}" in label and f"train accuracy = {1 / (1 + z[i, j]):.6g}" in label
        assert _errors(d) == []


@needs_browser
def test_volume_slider_in_a_real_browser(tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    from landscape.plot.browser import headless, wait_rendered

    path = write_ours(str(tmp_path / "vol.h5"), ndim=3)
    r = open_result(path)
    vol = r.surfaces["train_loss"]
    html_file = write_page(r)
    with headless() as d:
        d.get("file://" + html_file)
        wait_rendered(d)
        assert _errors(d) == []
        get = "return document.getElementById('volume-x').data[0].z"
        k0 = r.center_index()[0]
        assert d.execute_script(get) == nan_list(vol[k0].T)
        text = "return document.querySelector('#volume-x .slider-group > text.slider-label').textContent"
        assert d.execute_script(text) == f"x = {X7[k0]:.3g}"
        # drag the slider to its right end, as a user would: the last x slice is shown
        rail = d.find_element("css selector", "#volume-x .slider-rail-touch-rect")
        d.execute_script("arguments[0].scrollIntoView({block: 'center'})", rail)
        w = rail.size["width"]
        ActionChains(d).move_to_element_with_offset(rail, w // 2 - 2, 0).click().perform()
        for _ in range(50):
            if d.execute_script(get) != nan_list(vol[k0].T):
                break
            time.sleep(0.1)
        assert d.execute_script(get) == nan_list(vol[-1].T)
        assert d.execute_script(text) == f"x = {X7[-1]:.3g}"
        assert _errors(d) == []


def test_browser_skip_reason_is_clear():
    """Where the browser test is skipped, the reason names what to install."""
    reason = missing_reason()
    assert "chromium" in reason or "selenium" in reason
    if os.environ.get("CI"):
        assert find_browser() is not None, "CI must install chromium and chromium-driver (.ci/run)"
