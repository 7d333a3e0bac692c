"""README "Extending — a direction kind": a toy kind registered with one line runs through the library API and
through ``landscape surface --directions axis`` (in-process), and matches a brute-force evaluation."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from landscape import params as P
from landscape.directions import DIRECTION_KINDS, Directions, register_direction
from landscape.problem import make_problem
from landscape.surface import SurfaceSpec, run_surface


def axis(problem, spec, ndim):
    """Direction i: the unit vector along the i-th entry of the flattened weights."""
    theta = P.clone(P.select(problem.model, spec.dir_type))
    vectors = []
    for i in range(ndim):
        flat = torch.zeros(sum(v.numel() for v in theta.values()))
        flat[i] = 1.0
        vectors.append(P.unflatten(flat, theta))
    meta = [dict(kind="axis", index=i, norm="none", scale=1.0) for i in range(ndim)]
    return Directions(theta, vectors, spec.dir_type, meta)


@pytest.fixture
def axis_kind():
    register_direction("axis", axis)
    yield "axis"
    del DIRECTION_KINDS["axis"]


def _problem():
    return make_problem("zoo:mlp", data="zoo:synthetic", samples=48, batch_size=16, device="cpu",
                        model_args={"width": 6, "depth": 1})


def _brute_force(problem, xs, ys) -> np.ndarray:
    """Train loss with the first (x) and second (y) flattened weights moved by hand, in float64."""
    model = problem.model.double()
    keys = [k for k, _ in model.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    out = np.empty((len(xs), len(ys)))
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            flat = flat0.clone()
            flat[0] += x
            flat[1] += y
            state = P.unflatten(flat, {k: p for k, p in model.named_parameters()})
            total, n = 0.0, 0
            with torch.no_grad():
                out_ = [torch.func.functional_call(model, {k: state[k] for k in keys}, (xb.double(),))
                        for xb, _ in problem.batches]
                for logits, (_, yb) in zip(out_, problem.batches):
                    total += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
                    n += len(yb)
            out[i, j] = total / n
    return out


def test_toy_kind_through_the_library(tmp_path, axis_kind):
    problem = _problem()
    ref = _brute_force(_problem(), np.linspace(-1, 1, 3), np.linspace(-0.5, 0.5, 3))
    out = str(tmp_path / "axis.h5")
    res = run_surface(problem, SurfaceSpec(x="-1:1:3", y="-0.5:0.5:3", directions=axis_kind), out, progress=False)
    assert res.done == 9
    with h5py.File(out, "r") as f:
        loss = f["surfaces/train_loss"][()]
        assert '"axis"' in f.attrs["title"] or "axis" in f.attrs["title"]
    np.testing.assert_allclose(loss, ref, rtol=1e-5, atol=1e-6)


def test_toy_kind_through_the_command_line(tmp_path, axis_kind, run_cli):
    out = str(tmp_path / "cli.h5")
    code, stdout, err = run_cli("surface", "--model", "zoo:mlp", "--model-args", "width=6,depth=1",
                                "--data", "zoo:synthetic", "--samples", "48", "--batch-size", "16", "--device", "cpu",
                                "--x=-1:1:3", "--y=-0.5:0.5:3", "--directions", axis_kind, "--no-progress",
                                "--out", out)
    assert code == 0, err
    assert "9/9 points done" in stdout
    ref = _brute_force(_problem(), np.linspace(-1, 1, 3), np.linspace(-0.5, 0.5, 3))
    with h5py.File(out, "r") as f:
        np.testing.assert_allclose(f["surfaces/train_loss"][()], ref, rtol=1e-5, atol=1e-6)


def test_unknown_kind_lists_the_registered_ones(tmp_path, axis_kind, run_cli):
    code, _, err = run_cli("surface", "--model", "zoo:mlp", "--data", "zoo:synthetic", "--samples", "16",
                           "--x=-1:1:3", "--directions", "nosuch", "--no-progress", "--out", str(tmp_path / "n.h5"))
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "--directions: 'nosuch' is not random, hessian, interp, pca, axis or a FILE.h5" in lines[0], lines[0]
    assert not (tmp_path / "n.h5").exists()


def test_the_readme_example_runs(tmp_path, monkeypatch):
    """The code block of README "### A direction kind", as it stands, in a fresh folder."""
    import os
    import re

    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    section = readme.split("### A direction kind", 1)[1].split("\n### ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    try:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
        with h5py.File(tmp_path / "outputs" / "axis.h5", "r") as f:
            assert f["surfaces/done"][()].all() and np.isfinite(f["surfaces/train_loss"][()]).all()
    finally:
        DIRECTION_KINDS.pop("axis", None)
