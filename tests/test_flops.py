"""Compute accounting: known-answer FLOP counts, the budget as steps, and both trainers on one budget."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.methods import frame_cnn as fc
from benchmarks.methods.interface import TrainSpec
from ibutil.flops import flops_of_steps, steps_for_budget, training_step_flops
from inbetween import TrainConfig, train
from inbetween.toy import write_toy_dataset
from inbetween.vae import AlphaVAE, VAEConfig, alpha_vae_loss
from ibutil.errors import UserError

train_module = __import__("importlib").import_module("inbetween.train")


def test_known_answer_two_linear_layers():
    # Forward 2B(ih + ho); backward: both weight gradients, 2B(ih + ho), and the input gradient of the
    # second layer only (the data need none), 2Bho.
    b, i, h, o = 5, 7, 11, 3
    flops = training_step_flops(lambda: nn.Sequential(nn.Linear(i, h, bias=False), nn.Linear(h, o, bias=False)),
                                lambda m: m(torch.rand(b, i)).sum())
    assert flops == 4 * b * i * h + 6 * b * h * o


def test_the_shape_only_count_equals_a_real_count():
    vae = VAEConfig(image_size=8, latent=4, width=0.05)
    x = [torch.rand(6, 3, 8, 8) for _ in range(3)]
    with FlopCounterMode(display=False) as real:
        alpha_vae_loss(AlphaVAE(vae), *x).loss.backward()
    cfg = TrainConfig(data="x.h5", latent=4, width=0.05, batch_size=6)
    assert train_module.flops_per_step(cfg, 8) == real.get_total_flops() > 0
    model = fc.FrameCNN(fc.Config(channels=4))
    with FlopCounterMode(display=False) as real:
        torch.nn.functional.mse_loss(model(x[0], x[2], torch.rand(6, 1, 1, 1)), x[1]).backward()
    assert fc.step_flops(fc.Config(channels=4), 6, 8, 8) == real.get_total_flops() > 0


def test_counts_scale_with_the_batch_and_are_cached_per_shape():
    cfg = TrainConfig(data="x.h5", latent=4, width=0.05, batch_size=4)
    one = train_module.flops_per_step(cfg, 8)
    hits = train_module._flops_per_step.cache_info().hits
    assert train_module.flops_per_step(cfg, 8) == one
    assert train_module._flops_per_step.cache_info().hits == hits + 1
    assert train_module.flops_per_step(TrainConfig(data="x.h5", latent=4, width=0.05, batch_size=8), 8) == 2 * one


def test_budget_to_steps_with_smaller_last_batches():
    # 3 steps per epoch, the last one a smaller batch: 10 + 10 + 4 = 24 GFLOP per epoch.
    epochs = dict(epoch_steps=3, last_step_flops=4 * 10**9)
    assert [flops_of_steps(s, 10**10, **epochs) for s in range(1, 8)] == [x * 10**9 for x in (10, 20, 24, 34, 44, 48, 58)]
    assert steps_for_budget(50.0, 10**10, **epochs) == 6  # 48 spent, the 7th step would need 58
    assert steps_for_budget(59.0, 10**10, **epochs) == 7
    assert steps_for_budget(71.0, 10**10, **epochs) == 8  # 68 spent; step 9 (an epoch's last) would make 72
    assert steps_for_budget(72.0, 10**10, **epochs) == 9


def test_budget_to_steps():
    assert steps_for_budget(10.0, 3 * 10**9) == 3
    assert steps_for_budget(9.0, 3 * 10**9) == 3  # an exact multiple spends it all
    with pytest.raises(UserError, match="buys no training step"):
        steps_for_budget(1.0, 3 * 10**9)
    with pytest.raises(UserError, match="budget_gflop must be"):
        steps_for_budget(-1.0, 10)


def test_both_trainers_spend_the_same_budget_within_one_step(tmp_path):
    data = write_toy_dataset(tmp_path / "toy.h5", image_size=8, frames=8, train=4, test=1)
    budget = 0.2  # GFLOP: 8 steps of this alpha-VAE (28.5 MFLOP per full batch), 30 of this frame CNN (6.5)
    # 24 triplets in batches of 10: every third alpha-VAE step is an epoch's last batch, of 4 triplets.
    cfg = TrainConfig(data=str(data), out_dir=str(tmp_path / "vae"), width=0.05, latent=4, batch_size=10,
                      budget_gflop=budget, device="cpu", progress=False, val_split="none")
    train(cfg)
    spec = TrainSpec(data=str(data), gaps=(1,), steps=1, batch_size=10, seed=0, budget_gflop=budget, val_split="none")
    fc.train(fc.Config(channels=4), spec, tmp_path / "cnn", device="cpu", progress=False)
    for run in ("vae", "cnn"):
        s = json.loads((tmp_path / run / "summary.json").read_text())
        assert s["budget_gflop"] == budget and s["steps"] == s["planned_steps"] >= 5
        assert budget * 1e9 - s["flops_per_step"] < s["train_flops"] <= budget * 1e9, run
    s = json.loads((tmp_path / "vae" / "summary.json").read_text())
    full, last = (train_module.flops_per_step(replace(cfg, batch_size=b), 8) for b in (10, 4))
    assert s["flops_per_step"] == full and last < full
    assert s["train_flops"] == (s["steps"] - s["steps"] // 3) * full + s["steps"] // 3 * last
