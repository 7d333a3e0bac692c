"""The edge of stability through ``landscape train`` + ``landscape track`` (Cohen et al. 2021): full-batch GD at
η = 1 on all 1,797 digits (tanh MLP, squared loss) drives λ_max to 2/η and keeps it there. The η = 0.5 run and
longer ones are in ``benchmarks/paper/eos_track_study.py``."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # ~15 s alone, a minute under load


def test_full_batch_gd_hovers_at_two_over_eta(run_cli, tmp_path):
    model = ["--model", "zoo:mlp", "--model-args", "width=64,depth=2,act=tanh", "--data", "zoo:digits",
             "--loss", "mse"]
    run = str(tmp_path / "gd")
    code, _, err = run_cli("train", *model, "--optimizer", "sgd", "--momentum", "0", "--lr", "1.0", "--batch-size",
                           "1797", "--steps", "600", "--save-every", "50", "--out-dir", run, "--quiet")
    assert code == 0, err
    out = str(tmp_path / "eos.h5")
    code, stdout, err = run_cli("track", *model, "--batch-size", "1797", "--checkpoints",
                                os.path.join(run, "ckpt_*.pt"), "--lr", "1.0", "--metrics", "eigen", "--top-k", "1",
                                "--max-iter", "20", "--no-progress", "--out", out)
    assert code == 0, err
    from landscape.results import open_result
    from landscape.track import late_phase

    t = open_result(out).track
    lam = t["lambda_max"]
    assert lam[0] < 0.8 * 2.0  # starts well below 2/η (progressive sharpening follows)
    late = late_phase(t["step"], lam)
    assert abs(late - 2.0) <= 0.1 * 2.0, (late, lam)
    assert np.nanmax(lam[t["step"] >= 300]) < 1.3 * 2.0  # and does not run away: it hovers
    assert "late-phase λ_max" in stdout and "2/η = 2" in stdout
    code, stdout, err = run_cli("plot", out, "--kind", "track")
    assert code == 0 and stdout.split()[0].endswith("eos_eos.png"), err
