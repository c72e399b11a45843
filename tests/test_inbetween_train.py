"""Tests of inbetween.train: config validation, a tiny end-to-end run, checkpoints, resume, determinism, NaN."""

from __future__ import annotations

import csv
import dataclasses
import importlib
import math

import pytest
import torch

import inbetween
from inbetween import TrainConfig, checkpoint_config, load_checkpoint
from inbetween.toy import write_toy_dataset
from ibutil.errors import UserError
from ibutil.run import package_version

train_module = importlib.import_module("inbetween.train")  # `inbetween.train` is the function



@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    # 8-frame sequences of a moving disk at 8x8: 4 x 6 = 24 train triplets at gap 1.
    return write_toy_dataset(tmp_path_factory.mktemp("data") / "toy.h5", image_size=8, frames=8, train=4, test=2)


def config(toy, out, **kw):
    base = dict(data=str(toy), out_dir=str(out), width=0.05, latent=4, batch_size=8, lr=3e-3,
                epochs=2, device="cpu", progress=False, val_split="none")
    return TrainConfig(**{**base, **kw})


def read_log(out, name="log.csv"):
    with open(out / name, newline="") as fh:
        return list(csv.DictReader(fh))


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("kw, match", [
    ({"alpha": -1.0}, "alpha must be"), ({"alpha": float("nan")}, "alpha must be"),
    ({"alpha": math.inf}, "alpha must be"), ({"kl_form": "kl"}, "unknown kl_form 'kl'"),
    ({"likelihood": "l1"}, "unknown likelihood"), ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"device": "cuda:x"}, "unknown device"), ({"dtype": "fp16"}, "unknown dtype 'fp16'"),
    ({"batch_size": 0}, "batch_size must be"), ({"epochs": 1.5}, "epochs must be"),
    ({"steps": 0}, "steps must be"), ({"lr": 0.0}, "lr must be"), ({"lr": float("nan")}, "lr must be"),
    ({"width": -1.0}, "width must be"), ({"latent": 0}, "latent must be"), ({"seed": -3}, "seed must be"),
    ({"gaps": 0}, "gaps must be"), ({"checkpoint_every": -1}, "checkpoint_every"), ({"data": ""}, "data must be"),
    ({"mixture_samples": 0}, "mixture_samples must be"),
])
def test_bad_config(tmp_path, kw, match):
    with pytest.raises(UserError, match=match):
        config("x.h5", tmp_path, **kw)


def test_config_is_frozen_and_normalises_gaps(tmp_path):
    cfg = config(tmp_path / "x.h5", tmp_path, gaps=[2, 1, 2])
    assert cfg.gaps == (1, 2) and isinstance(cfg.data, str)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.alpha = 2.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu(toy, tmp_path):
    with pytest.raises(UserError, match="no CUDA GPU"):
        inbetween.train(config(toy, tmp_path, device="cuda"))


def test_bad_dataset_and_gap(toy, tmp_path):
    with pytest.raises(UserError, match="no such file"):
        inbetween.train(config(tmp_path / "absent.h5", tmp_path / "a"))
    with pytest.raises(UserError, match="gap 5 is too large"):
        inbetween.train(config(toy, tmp_path / "b", gaps=5))


# ----------------------------------------------------------------------------- end to end


def test_log_test_off_evaluates_nothing_and_never_reads_the_test_split(toy, tmp_path, monkeypatch):
    splits = []
    real = train_module.TripletDataset
    monkeypatch.setattr(train_module, "TripletDataset", lambda path, split, *a, **k: splits.append(split) or
                        real(path, split, *a, **k))
    out = tmp_path / "run"
    inbetween.train(config(toy, out, log_test=False))
    rows = read_log(out)
    assert len(rows) == 6 and not (out / "val.csv").exists()  # 2 epochs of 3 steps; no val, no test: no evaluation
    assert all(math.isfinite(float(r["train_loss"])) for r in rows)
    assert "test" not in splits and "train" in splits


def test_end_to_end_loss_decreases_and_checkpoint_round_trips(toy, tmp_path):
    out = tmp_path / "run"
    cfg = config(toy, out, epochs=6, gaps=(1, 2), eval_every=5)
    model = inbetween.train(cfg)
    rows = read_log(out)
    assert [int(r["step"]) for r in rows] == list(range(1, 31))  # 40 triplets / 8 = 5 steps per epoch, each logged
    tests = read_log(out, "val.csv")  # log_test: the test loss at every evaluation, once per epoch here
    assert [int(r["step"]) for r in tests] == [5 * (i + 1) for i in range(6)]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(tests[-1]["test_loss"]) < float(tests[0]["test_loss"])
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "log.csv", "summary.json", "val.csv"]

    loaded = load_checkpoint(out / "checkpoint.pt")
    assert same_weights(model, loaded)
    x0, x2 = torch.rand(5, 3, 8, 8), torch.rand(5, 3, 8, 8)
    assert torch.equal(inbetween.inbetween(model, x0, x2), inbetween.inbetween(loaded, x0, x2))
    assert torch.equal(inbetween.interpolate(model, x0[0], x2[0], 4), inbetween.interpolate(loaded, x0[0], x2[0], 4))
    assert checkpoint_config(out / "checkpoint.pt") == cfg
    state = train_module.read_checkpoint(out / "checkpoint.pt")
    assert state["version"] == package_version() != "unknown"
    assert state["step"] == 30


def test_same_seed_same_bytes_other_seed_differs(toy, tmp_path):
    a = inbetween.train(config(toy, tmp_path / "a", steps=4, kl_form="mixture"))
    b = inbetween.train(config(toy, tmp_path / "b", steps=4, kl_form="mixture"))
    c = inbetween.train(config(toy, tmp_path / "c", steps=4, kl_form="mixture", seed=1))
    assert same_weights(a, b) and not same_weights(a, c)
    assert read_log(tmp_path / "a")[0]["train_loss"] == read_log(tmp_path / "b")[0]["train_loss"]


def test_resume_continues_exactly(toy, tmp_path):
    straight = inbetween.train(config(toy, tmp_path / "straight", steps=7))
    inbetween.train(config(toy, tmp_path / "split", steps=4))  # stops inside the second epoch
    resumed = inbetween.train(config(toy, tmp_path / "split", steps=7, resume=True))
    assert same_weights(straight, resumed)


def test_refuses_to_overwrite_or_resume_another_run(toy, tmp_path):
    inbetween.train(config(toy, tmp_path, steps=1))
    with pytest.raises(UserError, match="already holds a run; pass resume=True"):
        inbetween.train(config(toy, tmp_path, steps=2))
    with pytest.raises(UserError, match="different alpha"):
        inbetween.train(config(toy, tmp_path, steps=2, alpha=0.5, resume=True))


def test_bad_checkpoint_files(tmp_path):
    with pytest.raises(UserError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable alpha-VAE checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(UserError, match="not an alpha-VAE checkpoint"):
        load_checkpoint(other)


def old_checkpoint(path, cfg):
    """A checkpoint.pt as the release before the one trainer wrote it (inbetween.train.save_checkpoint's layout)."""
    model = train_module.build_model(cfg, 8)
    torch.save({"format": "inbetween-alpha-vae-checkpoint", "version": "0.1.0", "config": "{}",
                "model_config": dataclasses.asdict(model.config), "model": model.state_dict(), "optimizer": {},
                "step": 3, "generator": torch.Generator().get_state(), "rank_generators": [], "epoch_sums": {},
                "run": {}, "summary": None}, path)


def test_a_checkpoint_of_the_old_format_is_refused_with_one_line_saying_to_retrain(toy, tmp_path):
    cfg = config(toy, tmp_path, steps=4, resume=True)
    old_checkpoint(tmp_path / "checkpoint.pt", cfg)
    for action in (lambda: inbetween.train(cfg), lambda: load_checkpoint(tmp_path / "checkpoint.pt")):
        with pytest.raises(UserError, match=r"checkpoint of an older release .*; retrain it") as info:
            action()
        assert "\n" not in str(info.value)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(toy, tmp_path, monkeypatch):
    real, calls = train_module.member_losses, []

    def poisoned(net, x, cfgs, gens, dtype):
        terms = real(net, x, cfgs, gens, dtype)
        if torch.is_grad_enabled():  # a training step, not evaluation
            calls.append(1)
            if len(calls) == 4:
                return [dataclasses.replace(terms[0], loss=terms[0].loss * float("nan"))]
        return terms

    monkeypatch.setattr(train_module, "member_losses", poisoned)
    with pytest.raises(train_module.NonFiniteLoss, match=r"loss became nan at step 4 .*step 3\) is kept"):
        inbetween.train(config(toy, tmp_path, steps=10, checkpoint_every=3))
    kept = train_module.read_checkpoint(tmp_path / "checkpoint.pt")
    assert kept["step"] == 3
    model = load_checkpoint(tmp_path / "checkpoint.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bf16_autocast_trains(toy, tmp_path):
    model = inbetween.train(config(toy, tmp_path, steps=3, dtype="bf16", kl_form="jensen"))
    rows = read_log(tmp_path, "val.csv")  # log_test: the test loss at the last step
    assert math.isfinite(float(rows[-1]["test_loss"]))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, not a bf16 model
