"""Fixtures of the fault-injection suite (see README.md in this folder for what is tried and why)."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="session")
def fault_files(tmp_path_factory) -> dict[str, str]:
    """Files the bad-input rows refer to: checkpoints, result files, a text file posing as HDF5, ..."""
    from landscape.paths import __name__ as _  # noqa: F401 - fail early if paths are missing
    from landscape.problem import load_model, make_problem
    from landscape.surface import SurfaceSpec, run_surface

    d = tmp_path_factory.mktemp("fault_files")
    files = {"missing": str(d / "does_not_exist")}
    files["ckpt"] = str(d / "mlp_w8.pt")
    torch.save(load_model("zoo:mlp", "width=8,depth=1").state_dict(), files["ckpt"])
    files["other_ckpt"] = str(d / "mlp_w16.pt")
    torch.save(load_model("zoo:mlp", "width=16,depth=1").state_dict(), files["other_ckpt"])
    for key, name in (("textfile", "notes.txt"), ("textfile_h5", "notes.h5")):
        files[key] = str(d / name)
        with open(files[key], "w") as f:
            f.write("this is not a checkpoint nor an HDF5 file\n")
    files["empty_h5"] = str(d / "empty.h5")
    open(files["empty_h5"], "w").close()
    p8 = make_problem("zoo:mlp", data="zoo:synthetic", samples=32, device="cpu", model_args="width=8,depth=1")
    p16 = make_problem("zoo:mlp", data="zoo:synthetic", samples=32, device="cpu", model_args="width=16,depth=1")
    for key, prob, spec in (("result", p8, SurfaceSpec(x="-1:1:3", y="-1:1:3")),
                            ("result1d", p8, SurfaceSpec(x="-1:1:5")),
                            ("other_result", p16, SurfaceSpec(x="-1:1:3", y="-1:1:3"))):
        files[key] = str(d / f"{key}.h5")
        run_surface(p8 if prob is p8 else prob, spec, files[key], progress=False)
    files["path_result"] = str(d / "path.h5")
    from landscape.cli import main

    code = main(["interpolate", "--model", "zoo:mlp", "--model-args", "width=8,depth=1", "--data", "zoo:synthetic",
                 "--samples", "32", "--from", files["ckpt"], "--to", files["ckpt"], "--alpha=0:1:3", "--out",
                 files["path_result"], "--no-progress"])
    assert code == 0 and os.path.exists(files["path_result"])
    return files
