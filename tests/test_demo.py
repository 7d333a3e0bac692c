"""`landscape demo --fast` end to end: every step a newcomer sees, into a temporary folder."""

import h5py
import matplotlib.image as mpimg


def test_demo_fast(run_cli, tmp_path):
    out = tmp_path / "demo"
    code, stdout, err = run_cli("demo", "--fast", "--out", out)
    assert code == 0, err
    assert "demo done" in stdout
    assert "one grid point at a time" not in err and "cannot batch" not in err  # a trained MLP gets batched
    for name in ("init.pt", "final.pt", "surface_1d.h5", "surface_2d.h5", "interpolation.h5", "trajectory.h5",
                 "surface_2d_report.png", "surface_2d_report.pdf", "surface_1d_line.png",
                 "surface_2d_train_loss_contour.png", "interpolation_path_interpolation.png",
                 "trajectory_train_loss_trajectory.png"):
        assert (out / name).exists(), name
    assert len(list(out.glob("ckpt_*.pt"))) >= 2
    page = (out / "surface_2d.html").read_text(encoding="utf-8")  # the interactive page, self-contained
    assert "<script src" not in page and '"surface3d"' in page and "id=metrics" in page
    from landscape.plot.browser import find_browser

    if find_browser() is not None:  # the page's screenshot, where a headless chromium is installed
        shot = mpimg.imread(out / "surface_2d_page.png")
        assert shot.shape[0] > 1500 and shot[..., :3].std() > 0.05
    img = mpimg.imread(out / "surface_2d_report.png")
    assert img.shape[0] > 500 and img.shape[1] > 500 and img.std() > 0
    with h5py.File(out / "surface_2d.h5", "r") as f:
        assert f["surfaces/done"][()].all()
        assert {"curvature", "metrics", "layerwise"} <= set(f)
        # trained weights sit near the minimum of the plane
        z = f["surfaces/train_loss"][()]
        assert z[z.shape[0] // 2, z.shape[1] // 2] < z.mean()
