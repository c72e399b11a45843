"""Validation selection: the tracker, the lr grid, and best.pt / early stopping in the alpha-VAE and the frame CNN."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from benchmarks.methods import frame_cnn as fc
from benchmarks.methods.interface import TrainSpec
from ibdata.h5format import read_split
from ibdata.triplets import TripletDataset
from ibutil.errors import UserError
from ibutil.selection import Selection, lr_grid, select_trial
from inbetween import TrainConfig, load_checkpoint, train
from inbetween.toy import write_toy_dataset
from inbetween.train import evaluate


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("data") / "toy.h5", image_size=8, frames=8, train=4, val=2, test=1)


def vae_config(data, out, **kw):
    base = dict(data=str(data), out_dir=str(out), width=0.05, latent=4, batch_size=8, lr=3e-3, steps=12,
                device="cpu", progress=False, eval_every=3)
    return TrainConfig(**{**base, **kw})


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- the pieces


def test_selection_counts_patience_in_evaluations_and_needs_more_than_min_delta():
    sel = Selection(patience=2, min_delta=0.1)
    assert [sel.update(s, v) for s, v in [(10, 5.0), (20, 4.0), (30, 4.0), (40, 3.95)]] == [True, True, False, False]
    assert (sel.best_step, sel.best_loss, sel.evals_since_best, sel.should_stop) == (20, 4.0, 2, True)
    assert Selection.from_state(sel.state_dict()) == sel
    never = Selection(patience=0)
    for step in range(1, 50):
        never.update(step, 1.0)
    assert not never.should_stop and never.best_step == 1  # ties keep the earlier step
    nan = Selection(patience=1)
    assert not nan.update(1, math.nan) and nan.best_step is None and nan.should_stop


@pytest.mark.parametrize("kw", [{"patience": -1}, {"patience": 1.5}, {"min_delta": -0.1}, {"min_delta": math.inf}])
def test_bad_selection_settings(kw):
    with pytest.raises(UserError):
        Selection(**kw)


def test_lr_grid_is_the_same_relative_grid_for_every_method():
    assert lr_grid(3e-4, 1) == (3e-4,)
    assert lr_grid(3e-4, 3) == pytest.approx((1e-4, 3e-4, 9e-4))
    assert lr_grid(1e-3, 2) == pytest.approx((1e-3 / 3, 1e-3))
    assert lr_grid(1e-3, 4) == pytest.approx((1e-3 / 9, 1e-3 / 3, 1e-3, 3e-3))
    for trials in range(1, 6):
        a, b = np.array(lr_grid(3e-4, trials)), np.array(lr_grid(1e-3, trials))
        assert len(a) == trials and np.allclose(a / 3e-4, b / 1e-3) and 1.0 in np.round(a / 3e-4, 12)
    with pytest.raises(UserError):
        lr_grid(0.0, 3)
    with pytest.raises(UserError):
        lr_grid(1e-3, 0)


def test_select_trial_takes_the_lowest_finite_val_loss_and_the_first_of_equals():
    assert select_trial([math.nan, 2.0, 1.5, 1.5, math.inf]) == 2
    assert select_trial([0.3]) == 0
    with pytest.raises(UserError, match="no trial reached a finite validation loss"):
        select_trial([math.nan, math.inf])


@pytest.mark.parametrize("kw, match", [
    ({"val_split": "test"}, "must not be the test split"), ({"val_split": "heldout"}, "must not be the heldout"),
    ({"val_split": "train"}, "must not be the train"), ({"val_split": ""}, "val_split must"),
    ({"eval_every": 0}, "eval_every"), ({"patience": -1}, "patience"), ({"min_delta": -1.0}, "min_delta"),
    ({"budget_gflop": 0.0}, "budget_gflop"), ({"budget_gflop": 1.0, "steps": 5}, "not both"),
])
def test_bad_train_config(kw, match):
    with pytest.raises(UserError, match=match):
        vae_config("x.h5", "out", **{"steps": None, **kw})


@pytest.mark.parametrize("field, value", [("eval_every", 0), ("patience", -2), ("min_delta", math.nan),
                                          ("budget_gflop", -1.0), ("checkpoint_every", -1), ("val_split", "test")])
def test_bad_train_spec(field, value):
    with pytest.raises(UserError):
        TrainSpec(**{"data": "x.h5", "gaps": (1,), "steps": 5, "batch_size": 4, "seed": 0, field: value})


# ----------------------------------------------------------------------------- the alpha-VAE


def test_a_file_without_val_is_an_error_unless_selection_is_off(tmp_path):
    plain = write_toy_dataset(tmp_path / "plain.h5", image_size=8, frames=8, train=2, test=1)
    with pytest.raises(UserError, match=r"has no 'val' split to select on.*val_split='none'"):
        train(vae_config(plain, tmp_path / "a"))
    assert not (tmp_path / "a" / "checkpoint.pt").exists()
    train(vae_config(plain, tmp_path / "b", steps=4, val_split="none"))
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["selected_step"] == summary["steps"] == 4 and summary["best_val_loss"] is None
    assert summary["selected_checkpoint"] == "checkpoint.pt" and not (tmp_path / "b" / "best.pt").exists()


def test_vae_keeps_the_best_val_state_and_its_loss_is_reproducible(data, tmp_path):
    out = tmp_path / "run"
    cfg = vae_config(data, out)
    model = train(cfg)
    rows = list(csv.DictReader(open(out / "val.csv")))
    assert [int(r["step"]) for r in rows] == [3, 6, 9, 12]
    losses = [float(r["val_loss"]) for r in rows]
    best = int(np.argmin(losses))  # np.argmin: the first of equals, as Selection
    state = torch.load(out / "best.pt", weights_only=True)
    assert state["step"] == 3 * (best + 1) and state["val_loss"] == losses[best]
    selected = load_checkpoint(out / "best.pt")
    assert same(model.state_dict(), selected.state_dict())  # train() returns the selected weights
    # Re-evaluating the selected weights gives the logged loss exactly: fixed eval noise.
    val = TripletDataset(data, "val", cfg.gaps)
    assert evaluate(selected, val, cfg, torch.device("cpu"))["loss"] == losses[best]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selected_step"] == 3 * (best + 1) and summary["best_val_loss"] == losses[best]
    assert summary["status"] == "finished" and summary["lr"] == 3e-3 and summary["params"] > 0
    assert summary["train_flops"] == 12 * summary["flops_per_step"] and summary["train_seconds"] > 0
    assert torch.load(out / "checkpoint.pt", weights_only=True)["summary"]["selected_step"] == 3 * (best + 1)


def test_vae_stops_early_after_patience_evaluations_and_a_resume_does_not_restart(data, tmp_path):
    # min_delta larger than any loss: only the first evaluation (against +inf) is an improvement.
    train(vae_config(data, tmp_path, patience=2, min_delta=1e9))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["status"], summary["steps"], summary["selected_step"]) == ("stopped-early", 9, 3)
    train(vae_config(data, tmp_path, patience=2, min_delta=1e9, resume=True))
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 9
    assert len(list(csv.DictReader(open(tmp_path / "val.csv")))) == 3


# ----------------------------------------------------------------------------- the frame CNN


def cnn_train(data, out, val_split="val", **kw):
    spec = TrainSpec(**{**dict(data=str(data), gaps=(1,), steps=12, batch_size=8, seed=0, eval_every=3,
                               val_split=val_split), **kw})
    config = fc.Config(channels=4, lr=3e-3)
    return fc.train(config, spec, out, device="cpu", progress=False), fc.load(config, out, "cpu")


def test_cnn_selects_the_best_val_step(data, tmp_path):
    summary, model = cnn_train(data, tmp_path)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    rows = list(csv.DictReader(open(tmp_path / "val.csv")))
    losses = [float(r["val_loss"]) for r in rows]
    assert [int(r["step"]) for r in rows] == [3, 6, 9, 12] and best["val_loss"] == min(losses)
    assert summary.selected_step == best["step"] == 3 * (int(np.argmin(losses)) + 1)
    assert summary.best_val_loss == best["val_loss"] and summary.train_flops == 12 * summary.flops_per_step
    frames = torch.from_numpy(read_split(data, "val").frames).permute(0, 1, 4, 2, 3)
    assert fc.val_loss(model, fc.val_set(frames, (1,))) == best["val_loss"]  # load() gives best.pt; deterministic
    # In memory (no out_dir) the same selection happens: the same weights.
    train = torch.from_numpy(read_split(data, "train").frames).permute(0, 1, 4, 2, 3)
    spec = TrainSpec(data=str(data), gaps=(1,), steps=12, batch_size=8, seed=0, eval_every=3)
    again, _ = fc.fit(fc.Config(channels=4, lr=3e-3), train, spec, val_frames=frames, device="cpu", progress=False)
    assert same(again.state_dict(), model.state_dict())


def test_cnn_early_stopping_and_no_val(data, tmp_path):
    summary, _ = cnn_train(data, tmp_path / "early", patience=1, min_delta=1e9)
    assert (summary.status, summary.steps, summary.selected_step) == ("stopped-early", 6, 3)
    summary, last = cnn_train(data, tmp_path / "last", val_split="none")
    assert summary.selected_step == 12 and summary.selected_checkpoint == "checkpoint.pt"
    assert not (tmp_path / "last" / "best.pt").exists()
    assert same(last.state_dict(), fc.load_checkpoint(tmp_path / "last" / "checkpoint.pt", "cpu").state_dict())
    plain = write_toy_dataset(tmp_path / "plain.h5", image_size=8, frames=8, train=2, test=1)
    with pytest.raises(UserError, match="has no 'val' split to select on"):
        cnn_train(plain, tmp_path / "plain")
    with pytest.raises(UserError, match="cannot resume .* different"):  # another run's folder is not resumed
        cnn_train(data, tmp_path / "last", val_split="none", steps=20)
