"""The training helper: files, format, cadence, reproducibility, optimizers and the command."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

from landscape.errors import LandscapeError
from landscape.problem import load_checkpoint, load_model, read_state_dict
from landscape.train import train

ARGS = {"width": 8, "depth": 1}


def _run(tmp_path, **kw):
    base = dict(model_args=ARGS, steps=6, batch_size=32, save_every=4, out_dir=str(tmp_path), log=None,
                samples=128)
    base.update(kw)
    return train("zoo:mlp", "zoo:synthetic", **base)


def test_files_and_format(tmp_path):
    r = _run(tmp_path)
    names = sorted(os.listdir(tmp_path))
    assert names == ["ckpt_00000.pt", "ckpt_00004.pt", "ckpt_00006.pt", "final.pt", "init.pt", "train.json"]
    assert r.steps == 6 and [os.path.basename(c) for c in r.checkpoints] == names[:3]
    sd0 = read_state_dict(r.init)  # weights_only=True works: plain tensors
    torch.testing.assert_close(sd0, read_state_dict(r.checkpoints[0]))
    torch.testing.assert_close(read_state_dict(r.final), read_state_dict(r.checkpoints[-1]))
    # init.pt is the seeded initialization every command builds with the same --seed
    ref = load_model("zoo:mlp", ARGS, seed=0).state_dict()
    torch.testing.assert_close(sd0, ref)
    net = load_model("zoo:mlp", ARGS)
    load_checkpoint(net, r.final)
    log = json.load(open(tmp_path / "train.json"))
    assert log["config"]["optimizer"] == "sgd" and log["steps"] == 6 and len(log["history"]) >= 2


def test_reproducible_and_learns(tmp_path):
    a = _run(tmp_path / "a", steps=40, save_every=0)
    b = _run(tmp_path / "b", steps=40, save_every=0)
    torch.testing.assert_close(read_state_dict(a.final), read_state_dict(b.final))
    assert a.final_loss < a.history[0]["loss"]
    assert not a.checkpoints


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_optimizers_and_batchnorm(tmp_path, opt):
    r = _run(tmp_path, optimizer=opt, lr=1e-2, model_args={**ARGS, "bn": True}, epochs=2, steps=None)
    assert r.steps == 2 * 4  # 128 samples, batch 32
    sd = read_state_dict(r.final)
    assert any("running_mean" in k for k in sd)


def test_train_command(tmp_path, run_cli):
    code, out, err = run_cli("train", "--model", "zoo:mlp", "--model-args", "width=8,depth=1", "--data",
                             "zoo:synthetic", "--samples", "64", "--optimizer", "adam", "--lr", "0.01", "--steps",
                             "3", "--batch-size", "32", "--save-every", "2", "--out-dir", str(tmp_path))
    assert code == 0, err
    assert "final loss" in out
    assert sorted(f for f in os.listdir(tmp_path) if f.startswith("ckpt_")) == [
        "ckpt_00000.pt", "ckpt_00002.pt", "ckpt_00003.pt"]
    code, _, err = run_cli("train", "--optimizer", "lbfgs")
    assert code == 2


@pytest.mark.parametrize("kw,want", [({"momentum": -0.5}, "`momentum`"), ({"weight_decay": -1.0}, "`weight_decay`"),
                                     ({"device": "tpu"}, "`device`: 'tpu' is not auto, cpu, cuda or cuda:N"),
                                     ({"init": "/no/such.pt"}, "`init`: checkpoint '/no/such.pt' does not exist")])
def test_bad_arguments_are_one_line_before_anything_is_written(tmp_path, kw, want):
    with pytest.raises(LandscapeError, match=re.escape(want)):
        _run(tmp_path / "out", **kw)
    assert not (tmp_path / "out" / "init.pt").exists()


def test_out_dir_that_is_a_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    with pytest.raises(LandscapeError, match="`out_dir` .* is a file"):
        _run(f)
