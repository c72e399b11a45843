"""Tests of inbetween.dtype_choice: the decision rule and the per-machine cache (not the timing)."""

from __future__ import annotations

import json

import pytest

from inbetween import dtype_choice
from inbetween.dtype_choice import Trial, choose_dtype, decide
from inbetween.toy import write_toy_dataset
from inbetween.train import TrainConfig


@pytest.mark.parametrize("trial, want, why", [
    (Trial(1.0, 0.5, 100.0, 100.5), "bf16", "2.00x"),  # twice as fast, loss within 0.5%
    (Trial(1.0, 1.27, 100.0, 100.0), "fp32", "0.79x"),  # this CPU at width 0.125: bf16 slower
    (Trial(1.0, 1.0 / 1.04, 100.0, 100.0), "fp32", "1.04x"),  # faster, but below min_speedup 1.05
    (Trial(1.0, 0.5, 100.0, 103.0), "fp32", "differs"),  # fast but the loss is 3% off
    (Trial(1.0, 0.5, 100.0, float("nan")), "fp32", "nan"),
    (Trial(1.0, None, 100.0, None), "fp32", "not available"),
])
def test_decide(trial, want, why):
    dtype, reason = decide(trial)
    assert dtype == want and why in reason


def test_decide_thresholds():
    assert decide(Trial(1.0, 0.9, 100.0, 101.5), min_speedup=1.1)[0] == "bf16"
    assert decide(Trial(1.0, 0.9, 100.0, 101.5), min_speedup=1.2)[0] == "fp32"
    assert decide(Trial(1.0, 0.5, 100.0, 101.5), loss_rtol=0.01)[0] == "fp32"


def test_choice_is_cached_per_machine_and_shape(tmp_path, monkeypatch):
    data = write_toy_dataset(tmp_path / "toy.h5", image_size=8, frames=6, train=2, test=1)
    cfg = TrainConfig(data=str(data), width=0.05, latent=4, batch_size=4, device="cpu", progress=False)
    calls = []

    def fake(config, steps):
        calls.append(steps)
        return Trial(1.0, 0.5, 10.0, 10.01)

    first = choose_dtype(cfg, tmp_path / "cache", measure_fn=fake)
    assert first["dtype"] == "bf16" and not first["cached"] and first["speedup"] == 2.0
    assert first["machine"]["torch"] and calls == [6]
    again = choose_dtype(cfg, tmp_path / "cache", measure_fn=fake)
    assert again["cached"] and again["dtype"] == "bf16" and len(calls) == 1
    assert json.loads((tmp_path / "cache" / "dtype-choice" / f"{first['key']}.json").read_text())["dtype"] == "bf16"
    # another model shape, another machine (torch version), or refresh: measured again
    choose_dtype(TrainConfig(**{**cfg.__dict__, "width": 0.1}), tmp_path / "cache", measure_fn=fake)
    monkeypatch.setattr(dtype_choice, "machine", lambda: {"cpu": "other", "torch": "9.9"})
    choose_dtype(cfg, tmp_path / "cache", measure_fn=fake)
    choose_dtype(cfg, tmp_path / "cache", measure_fn=fake, refresh=True)
    assert len(calls) == 4


def test_measure_runs_both_dtypes(tmp_path):
    data = write_toy_dataset(tmp_path / "toy.h5", image_size=8, frames=6, train=2, test=1)
    cfg = TrainConfig(data=str(data), width=0.05, latent=4, batch_size=4, device="cpu", progress=False)
    trial = dtype_choice.measure(cfg, steps=2)
    assert trial.fp32_s > 0 and trial.bf16_s > 0
    assert abs(trial.bf16_loss - trial.fp32_loss) / trial.fp32_loss < 0.05  # same weights and batches


def test_the_default_dtype_is_fp32_in_every_profile_and_auto_is_opt_in():
    # A timing never decides a committed number by default (issue 20): fp32 unless bf16 or auto is asked for.
    from benchmarks.engine.config import profile_config
    from benchmarks.methods import alpha_vae

    assert alpha_vae.Config().dtype == "fp32"
    for profile in ("full", "quick", "demo"):
        assert profile_config(profile).method_configs.get("alpha-vae", alpha_vae.Config()).dtype == "fp32", profile
    assert alpha_vae.Config(dtype="auto").dtype == "auto"
