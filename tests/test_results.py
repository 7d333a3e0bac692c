"""Reading result files: ours (schema.py) and Li et al.'s, orientation, partial files, bad files, ``info``.

The ``write_*`` helpers build synthetic files with h5py directly, following :mod:`landscape.schema`
(not through :mod:`landscape.store`), so the reader is checked against the documented layout; the plot
tests reuse them.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from landscape.errors import LandscapeError
from landscape.results import describe, open_result

X7 = np.linspace(-1.0, 1.0, 7)
Y5 = np.linspace(-0.5, 0.5, 5)
LAYERS = ["layers.0", "layers.1", "head"]


def quad(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Z[i, j] = x[i]² + 3 y[j]² + 0.1: not symmetric in x ↔ y, so a swapped axis shows."""
    return x[:, None] ** 2 + 3.0 * y[None, :] ** 2 + 0.1


def _root_attrs(f: h5py.File, kind: str = "surface", model: str = "zoo:mlp") -> None:
    f.attrs.update({
        "format": "landscape", "format_version": 1, "landscape_version": "0.1.0", "torch_version": "2.13.0",
        "created": "2025-01-02T03:04:05", "command": "landscape surface --model zoo:mlp --x=-1:1:7",
        "config": json.dumps({"model": model, "data": "zoo:digits", "loss": "cross_entropy", "seed": 0}),
        "model_fingerprint": "a" * 64, "data_fingerprint": "b" * 64, "kind": kind,
    })


def _directions(f: h5py.File, axes: str, kind: str = "random") -> None:
    for a in axes:
        g = f.create_group(f"directions/{a}")
        g.create_dataset("layers.0.weight", data=np.ones((3, 2), np.float32))
        g.attrs.update({"kind": kind, "norm": "filter", "ignore": "biasbn", "dir_type": "weights", "seed": 0})


def write_ours(path: str, ndim: int = 2, holes: bool = False, paths: bool = False, curvature: bool = False,
               metrics: bool = False, layerwise: bool = False, trajectory: bool = False,
               curvature_maps: bool = False, inf: bool = False) -> str:
    """A landscape file: 1D (x = X7), 2D (7×5, Z = x² + 3y² + 0.1) or 3D (7×5×3, + z²), with optional NaN
    holes (not computed), an infinite value, an interpolation path, curvature, metrics, layerwise, a PCA
    trajectory and curvature maps."""
    with h5py.File(path, "w") as f:
        _root_attrs(f)
        if ndim:
            coords = [X7, Y5, np.linspace(-0.2, 0.2, 3)][:ndim]
            for a, c in zip("xyz", coords):
                f.create_dataset(f"coords/{a}", data=c)
            _directions(f, "xyz"[:ndim], "pca" if trajectory else "random")
            if ndim == 1:
                loss = X7 ** 2 + 0.1
            elif ndim == 2:
                loss = quad(X7, Y5)
            else:
                loss = quad(X7, Y5)[:, :, None] + coords[2][None, None, :] ** 2
            done = np.ones(loss.shape, np.uint8)
            loss = loss.copy()
            if holes:
                flat = done.reshape(-1)
                flat[-3:] = 0  # the last points not computed yet
                loss.reshape(-1)[-3:] = np.nan
            if inf:
                loss.reshape(-1)[0] = np.inf
            f.create_dataset("surfaces/train_loss", data=loss)
            f.create_dataset("surfaces/test_loss", data=np.where(done, loss * 1.1, np.nan))
            f.create_dataset("surfaces/train_acc", data=np.where(done, 1.0 / (1.0 + loss), np.nan))
            f.create_dataset("surfaces/done", data=done)
            if curvature_maps:
                lmax = 2.0 + loss
                lmin = np.where(done, 0.5 - loss, np.nan)
                f.create_dataset("surfaces/train_lambda_max", data=lmax)
                f.create_dataset("surfaces/train_lambda_min", data=lmin)
                f.create_dataset("surfaces/train_convexity", data=np.abs(lmin / lmax))
        if paths:
            alpha = np.linspace(-0.5, 1.5, 21)
            g = f.create_group("paths/interpolation")
            g.create_dataset("alpha", data=alpha)
            bump = 0.3 * np.exp(-((alpha - 0.5) / 0.08) ** 2)
            g.create_dataset("train_loss", data=2.0 * (1 - alpha) ** 2 + 0.05 + bump)
            g.create_dataset("test_loss", data=2.1 * (1 - alpha) ** 2 + 0.1 + bump)
            g.create_dataset("train_acc", data=np.clip(alpha, 0, 1))
            g.create_dataset("done", data=np.ones(alpha.shape, np.uint8))
            g.attrs.update({"bumps": json.dumps([[0.3, 0.5, 0.29]]), "n_bumps": 1, "max_bump": 0.29,
                            "monotonic": False, "tolerance": 1e-3, "distance": 12.5, "relative_distance": 0.8,
                            "barrier": 0.05, "bn_reestimated": False})
        if trajectory:
            t = np.stack([np.linspace(0.9, 0.0, 6), 0.3 * np.sin(np.linspace(0, 3, 6))], axis=1)
            ds = f.create_dataset("trajectory/coords", data=t)
            f["trajectory"].attrs["explained_variance"] = np.array([0.81, 0.12])
            f["trajectory"].attrs["checkpoints"] = json.dumps([f"ckpt_{i}.pt" for i in range(6)])
            del ds
        if curvature:
            ev = f.create_dataset("curvature/eigenvalues", data=np.array([40.0, 12.0, 5.0]))
            ev.attrs.update({"method": "lanczos", "tol": 1e-3, "iterations": 30, "matvecs": 30, "seed": 0})
            f.create_dataset("curvature/smallest", data=-0.7)
            tr = f.create_dataset("curvature/trace", data=120.0)
            tr.attrs.update({"stderr": 4.5, "method": "hutch++", "matvecs": 30, "seed": 0})
            grid = np.linspace(-2, 45, 200)
            vals = 0.9 * np.exp(-grid ** 2 / 0.5) / 1.25 + 1e-3 * np.exp(-(grid - 40) ** 2 / 0.5)
            f.create_dataset("curvature/density/grid", data=grid)
            f.create_dataset("curvature/density/values", data=vals)
            f["curvature/density"].attrs.update({"runs": 3, "steps": 40, "sigma": 0.5})
        if metrics:
            m = f.create_dataset("metrics/lambda_max", data=40.0)
            m.attrs.update({"method": "lanczos", "steps": 30})
            m = f.create_dataset("metrics/eps_sharpness", data=1.25)
            m.attrs.update({"eps": 1e-3, "steps": 10})
            m = f.create_dataset("metrics/loss_variation", data=np.array([0.1, 0.2, 0.3]))
            m.attrs.update({"etas": json.dumps([0.05, 0.2, 0.4])})
            m = f.create_dataset("metrics/loss_along_gradient", data=np.arange(8.0))
            m.attrs.update({"of": "loss_variation"})
        if layerwise:
            for q, v in {"sigma_x_lambda_max": [10.0, 1.0, 0.1], "sigma_delta_lambda_max": [1e-3, 1e-2, 1e-1],
                         "kron_kappa_p90": [1e3, 1e4, np.inf], "stable_rank": [2.0, 3.0, 1.5]}.items():
                ds = f.create_dataset(f"layerwise/{q}", data=np.asarray(v))
                ds.attrs["layers"] = json.dumps(LAYERS)
                ds.attrs["fisher"] = "empirical"
    return path


def write_li(path: str, x: np.ndarray = X7, y: np.ndarray | None = Y5, declared: str = "nxny",
             unfilled: int = 0) -> str:
    """A Li et al. file: surfaces filled in meshgrid order (flat buffer runs over x fastest), as their
    ``plot_surface.py`` does, in an array declared (nx, ny) ('nxny', their code) or (ny, nx) ('nynx');
    ``unfilled`` last points left at -1."""
    with h5py.File(path, "w") as f:
        f["xcoordinates"] = x
        f["dir_file"] = "model.h5_weights_xignore=biasbn_xnorm=filter.h5"
        if y is None:
            loss = x ** 2 + 0.1
            acc = 100.0 / (1.0 + loss)
            arrays = {"train_loss": loss, "train_acc": acc, "test_loss": loss * 1.1, "test_acc": acc * 0.9}
        else:
            f["ycoordinates"] = y
            xm, ym = np.meshgrid(x, y)  # (ny, nx)
            flat = (xm ** 2 + 3.0 * ym ** 2 + 0.1).ravel()
            shape = (len(x), len(y)) if declared == "nxny" else (len(y), len(x))
            loss = flat.reshape(shape)
            arrays = {"train_loss": loss, "train_acc": 100.0 / (1.0 + loss), "test_loss": loss * 1.1}
        for k, v in arrays.items():
            v = np.array(v, dtype=np.float64)
            if unfilled:
                v.reshape(-1)[-unfilled:] = -1.0
            f[k] = v
    return path


# ---------------------------------------------------------------------------- ours
def test_read_2d_orientation_and_metadata(tmp_path):
    r = open_result(write_ours(str(tmp_path / "r.h5"), ndim=2, paths=True, curvature=True, metrics=True,
                               layerwise=True, trajectory=True))
    assert (r.format, r.kind, r.ndim, r.shape) == ("landscape", "surface", 2, (7, 5))
    np.testing.assert_allclose(r.coords["x"], X7)
    np.testing.assert_allclose(r.surfaces["train_loss"], quad(X7, Y5))
    assert r.surfaces["train_loss"][6, 0] == pytest.approx(1.0 + 0.75 + 0.1)  # (x=1, y=-0.5)
    assert r.done.all() and r.done.shape == (7, 5)
    assert r.config["model"] == "zoo:mlp" and r.attrs["format_version"] == 1
    assert r.directions_meta["x"]["norm"] == "filter" and r.directions_meta["y"]["kind"] == "pca"
    assert r.paths["interpolation"]["bumps"] == [[0.3, 0.5, 0.29]]
    assert r.paths["interpolation"]["monotonic"] is False
    assert r.trajectory["coords"].shape == (6, 2)
    np.testing.assert_allclose(r.trajectory["explained_variance"], [0.81, 0.12])
    assert r.curvature["eigenvalues"].tolist() == [40.0, 12.0, 5.0]
    assert r.curvature["trace"] == 120.0 and r.curvature["trace_stderr"] == 4.5
    assert r.curvature["density"]["attrs"]["runs"] == 3
    assert r.metrics["eps_sharpness"] == (1.25, {"eps": 1e-3, "steps": 10})
    assert r.metrics["loss_variation"][1]["etas"] == [0.05, 0.2, 0.4]
    assert r.layerwise["layers"] == LAYERS and r.layerwise["sigma_x_lambda_max"].tolist() == [10.0, 1.0, 0.1]
    assert r.center_index() == (3, 2)
    assert "PC1 (81.0% of variance)" == r.axis_label("x")
    title = r.title()
    assert "zoo:mlp" in title and "pca directions" in title and "7×5 grid" in title


def test_not_done_points_are_nan(tmp_path):
    path = write_ours(str(tmp_path / "r.h5"), ndim=2, holes=True)
    with h5py.File(path, "r+") as f:  # a value written but its done flag not yet set: not a result
        d = f["surfaces/done"][()]
        d[0, 0] = 0
        f["surfaces/done"][...] = d
    r = open_result(path)
    z = r.surfaces["train_loss"]
    assert np.isnan(z[0, 0]) and np.isnan(z.reshape(-1)[-3:]).all() and int(np.isfinite(z).sum()) == 35 - 4
    assert int(r.done.sum()) == 31


def test_read_1d_3d_and_metrics_only(tmp_path):
    r1 = open_result(write_ours(str(tmp_path / "a.h5"), ndim=1))
    assert r1.ndim == 1 and r1.shape == (7,)
    r3 = open_result(write_ours(str(tmp_path / "b.h5"), ndim=3))
    assert r3.shape == (7, 5, 3)
    assert r3.surfaces["train_loss"][1, 2, 0] == pytest.approx(X7[1] ** 2 + 3 * Y5[2] ** 2 + 0.1 + 0.04)
    r0 = open_result(write_ours(str(tmp_path / "c.h5"), ndim=0, metrics=True))
    assert r0.ndim == 0 and not r0.surfaces and r0.default_surface() is None and "eps_sharpness" in r0.metrics


def test_file_being_written_can_be_read(tmp_path):
    """A writer holding the file open (h5py, locking off, as store.py does) does not block a reader."""
    path = write_ours(str(tmp_path / "r.h5"), ndim=2)
    with h5py.File(path, "r+", locking=False):
        assert open_result(path).shape == (7, 5)


# ---------------------------------------------------------------------------- Li et al.
@pytest.mark.parametrize("declared", ["nxny", "nynx"])
def test_li_2d_is_transposed(tmp_path, declared):
    r = open_result(write_li(str(tmp_path / "li.h5"), declared=declared))
    assert (r.format, r.ndim, r.shape) == ("li2018", 2, (7, 5))
    z = r.surfaces["train_loss"]
    for i in range(7):
        for j in range(5):
            assert z[i, j] == pytest.approx(X7[i] ** 2 + 3 * Y5[j] ** 2 + 0.1)
    assert set(r.surfaces) == {"train_loss", "train_acc", "test_loss"}
    assert r.done.all() and "Li et al." in r.title()


def test_li_square_and_unfilled(tmp_path):
    x = np.linspace(-1, 1, 4)
    y = np.linspace(-2, 2, 4)
    r = open_result(write_li(str(tmp_path / "li.h5"), x=x, y=y, unfilled=2))
    z = r.surfaces["train_loss"]
    assert z[1, 3] == pytest.approx(x[1] ** 2 + 3 * y[3] ** 2 + 0.1)
    # the last two meshgrid points are (x[2], y[3]) and (x[3], y[3]): never computed
    assert np.isnan(z[2, 3]) and np.isnan(z[3, 3]) and int(r.done.sum()) == 14


def test_li_1d(tmp_path):
    r = open_result(write_li(str(tmp_path / "li1.h5"), y=None))
    assert r.ndim == 1 and set(r.surfaces) == {"train_loss", "train_acc", "test_loss", "test_acc"}
    np.testing.assert_allclose(r.surfaces["train_loss"], X7 ** 2 + 0.1)
    assert "dir_file" in r.attrs and "meshgrid" in describe(r)


# ---------------------------------------------------------------------------- bad files
def test_missing_file(tmp_path):
    with pytest.raises(LandscapeError, match="does not exist"):
        open_result(str(tmp_path / "nope.h5"))


def test_not_hdf5(tmp_path):
    p = tmp_path / "notes.h5"
    p.write_text("hello\n")
    with pytest.raises(LandscapeError, match="not an HDF5 file") as e:
        open_result(str(p))
    assert "\n" not in str(e.value) and "--overwrite" in str(e.value)  # a file cut to 1 byte looks like this


def test_empty_and_folder(tmp_path):
    p = tmp_path / "empty.h5"
    p.write_bytes(b"")
    with pytest.raises(LandscapeError, match="empty"):
        open_result(str(p))
    with pytest.raises(LandscapeError, match="folder"):
        open_result(str(tmp_path))


def test_neither_format(tmp_path):
    p = str(tmp_path / "other.h5")
    with h5py.File(p, "w") as f:
        f["weights"] = np.zeros(3)
    with pytest.raises(LandscapeError, match="neither a landscape result file.*weights"):
        open_result(p)


def test_truncated_file(tmp_path):
    src = write_ours(str(tmp_path / "r.h5"), ndim=2, curvature=True, metrics=True)
    data = open(src, "rb").read()
    bad = tmp_path / "cut.h5"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(LandscapeError) as e:
        open_result(str(bad))
    msg = str(e.value)
    assert "\n" not in msg and ("landscape info" in msg or "--overwrite" in msg or "HDF5" in msg)


def test_inconsistent_shapes(tmp_path):
    p = write_ours(str(tmp_path / "r.h5"), ndim=2)
    with h5py.File(p, "r+") as f:
        del f["surfaces/test_loss"]
        f["surfaces/test_loss"] = np.zeros((5, 7))
    with pytest.raises(LandscapeError, match="test_loss has shape"):
        open_result(p)


@pytest.mark.parametrize("name,value,why", [("surfaces/done", 7, "only 0 and 1"),
                                            ("surfaces/train_loss", -3.0, "no run writes"),
                                            ("surfaces/train_acc", 1.5, "no run writes"),
                                            ("coords/x", np.nan, "finite increasing")])
def test_values_no_run_writes_are_refused(tmp_path, name, value, why):
    """Garbage over a dataset (landscape.store.surface_problems): one line suggesting --overwrite."""
    p = write_ours(str(tmp_path / "r.h5"), ndim=2, holes=True)
    with h5py.File(p, "r+") as f:
        v = f[name][()]
        v.reshape(-1)[1] = value
        f[name][...] = v
    with pytest.raises(LandscapeError, match=why) as e:
        open_result(p)
    assert "\n" not in str(e.value) and "damaged" in str(e.value) and "--overwrite" in str(e.value)


def test_coordinates_other_than_the_recorded_grid_are_refused(tmp_path):
    """Garbage can leave a finite increasing axis; a run's file records its grid, and the axis must be that grid."""
    p = write_ours(str(tmp_path / "r.h5"), ndim=2)
    with h5py.File(p, "r+") as f:
        f.attrs["identity"] = json.dumps({"--x": [float(X7[0]), float(X7[-1]), len(X7)],
                                          "--y": [float(Y5[0]), float(Y5[-1]), len(Y5)]})
    open_result(p)  # the recorded grid: fine
    with h5py.File(p, "r+") as f:
        x = f["coords/x"][()]
        x[1] += 1e-3  # still finite and increasing (a draw of garbage once was, over the whole axis)
        f["coords/x"][...] = x
    with pytest.raises(LandscapeError, match="does not hold the grid the file records") as e:
        open_result(p)
    assert "\n" not in str(e.value) and "--overwrite" in str(e.value)


def test_newer_format_refused(tmp_path):
    p = write_ours(str(tmp_path / "r.h5"), ndim=1)
    with h5py.File(p, "r+") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(LandscapeError, match="upgrade"):
        open_result(p)


# ---------------------------------------------------------------------------- describe / info
def test_describe_complete_file(tmp_path):
    r = open_result(write_ours(str(tmp_path / "r.h5"), ndim=2, holes=True, paths=True, curvature=True,
                               metrics=True, layerwise=True))
    text = describe(r)
    assert "format: landscape, format_version 1, kind surface" in text
    assert "landscape surface --model zoo:mlp" in text
    assert "model=zoo:mlp" in text and "aaaaaaaaaaaa…" in text
    assert "kind=random" in text and "norm=filter" in text and "ignore=biasbn" in text and "seed=0" in text
    assert "7 × 5 = 35 points" in text and "32/35 points done" in text
    assert "train_loss: 32/35 finite, min 0.1" in text
    assert "path interpolation: 21/21" in text and "monotonic=False" in text
    assert "top 3 eigenvalues 40, 12, 5" in text and "trace 120 ± 4.5" in text
    assert "eps_sharpness" in text and "layerwise: 3 layers" in text
    assert "not in this file" not in text


def test_describe_lists_missing_and_nonfinite(tmp_path):
    r = open_result(write_ours(str(tmp_path / "r.h5"), ndim=1, inf=True))
    text = describe(r)
    assert "1 inf" in text
    for missing in ("interpolation path", "curvature", "metrics", "layer-wise"):
        assert missing in text


def test_info_command(tmp_path, run_cli):
    p = write_ours(str(tmp_path / "r.h5"), ndim=2)
    code, out, err = run_cli("info", p)
    assert code == 0 and "35/35 points done" in out and err == ""


@pytest.mark.parametrize("make", ["missing", "text"])
def test_info_bad_file_exit_2(tmp_path, run_cli, make):
    p = tmp_path / "x.h5"
    if make == "text":
        p.write_text("not hdf5")
    code, out, err = run_cli("info", str(p))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("landscape info: error:") and "Traceback" not in err


def test_info_li_file(tmp_path, run_cli):
    code, out, _ = run_cli("info", write_li(str(tmp_path / "li.h5")))
    assert code == 0 and "Li et al." in out and "7 × 5" in out


def test_plane_models(tmp_path):
    p = write_ours(str(tmp_path / "plane.h5"), ndim=2)
    with h5py.File(p, "r+") as f:
        ds = f.create_dataset("plane/coords", data=np.array([[0.0, 0.0], [1.0, 0.0], [0.3, 1.0]]))
        ds.attrs["labels"] = json.dumps(["A", "B", "C"])
    r = open_result(p)
    assert r.plane["labels"] == ["A", "B", "C"] and r.plane["coords"].shape == (3, 2)
    assert "plane through three models: A=(0, 0), B=(1, 0), C=(0.3, 1)" in describe(r)


def test_open_result_is_public_api():
    import landscape

    assert landscape.open_result is open_result
    assert landscape.results.__name__ == "landscape.results"  # the module (a package since issue 15), not a name
