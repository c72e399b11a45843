"""Every registered method behind one interface: config, train on the train split, load, predict(model, x0, x2, tau)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from benchmarks import methods
from benchmarks.methods import copy_x0, mean_frame, optical_flow, pixel_average
from benchmarks.methods.interface import TrainSpec, TrainSummary, read_summary, write_summary
from ibutil.errors import UserError
from tests.conftest import write_tiny_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Every registered method (each variant) trained for 3 steps on a tiny file, and loaded again."""
    root = tmp_path_factory.mktemp("methods")
    data = root / "tiny.h5"
    written = write_tiny_dataset(data, n_frames=8, size=8)
    spec = TrainSpec(data=str(data), gaps=(1, 2), steps=3, batch_size=4, seed=0)
    out = {}
    for name, module in methods.REGISTRY.items():
        optional = methods.hooks(module)
        for variant in optional.variants(module.Config(**optional.overrides("quick"))):
            folder = root / module.label(variant).replace(" ", "_")
            folder.mkdir()
            summary = module.train(variant, spec, folder, device="cpu", progress=False)
            out[module.label(variant)] = (module, variant, summary, module.load(variant, folder, "cpu"))
    return out, written


def test_every_method_exports_the_interface():
    for name, module in methods.REGISTRY.items():
        assert module.NAME == name
        assert dataclasses.is_dataclass(module.Config) and module.Config.__dataclass_params__.frozen
        assert isinstance(module.TRAINS, bool) and isinstance(module.SEEDED, bool)
        for fn in ("label", "train", "load", "predict"):
            assert callable(getattr(module, fn)), (name, fn)
        assert module.__doc__ and len(module.__doc__.splitlines()[0]) > 10  # a one-line docstring first


def test_every_method_predicts_frames_at_any_tau(trained):
    models, _ = trained
    assert len(models) == len(methods.REGISTRY) + 1  # alpha-vae twice (alpha 0 and 100)
    g = torch.Generator().manual_seed(0)
    x0, x2 = torch.rand(3, 3, 8, 8, generator=g), torch.rand(3, 3, 8, 8, generator=g)
    for label, (module, variant, summary, model) in models.items():
        assert isinstance(summary, TrainSummary) and summary.params >= 0
        if methods.learned(module):
            # One val evaluation, at the last step: it is the selected one, and every step's FLOPs are counted.
            assert summary.params > 0 and summary.selected_step == summary.steps == 3 and summary.lr > 0, label
            assert summary.status == "finished" and summary.selected_checkpoint == "best.pt", label
            assert summary.best_val_loss > 0 and summary.train_flops == 3 * summary.flops_per_step > 0, label
        for tau in (0.5, 0.25, torch.tensor([0.1, 0.5, 0.9])):
            pred = module.predict(model, x0, x2, tau)
            assert pred.shape == x0.shape and pred.dtype == x0.dtype, label
            assert float(pred.min()) >= 0 and float(pred.max()) <= 1, label
        for bad in (0.0, 1.0, -0.5, torch.tensor([0.5, 0.5])):  # the ends and a wrong batch are refused
            with pytest.raises(UserError):
                module.predict(model, x0, x2, bad)
        with pytest.raises(UserError):
            module.predict(model, x0, x2[:, :, :4], 0.5)


def test_latent_models_decode_the_blend_of_the_end_codes(trained):
    models, _ = trained
    for label in ("autoencoder", "alpha-vae a=0"):
        module, _, _, model = models[label]
        x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
        mu, _ = model.encode(x)
        expected = model.decode(0.75 * mu[:1] + 0.25 * mu[1:])
        assert torch.allclose(module.predict(model, x[:1], x[1:], 0.25), expected, atol=1e-6), label


def test_autoencoder_freezes_the_unused_variance_head(trained):
    models, _ = trained
    ae, vae = models["autoencoder"][2], models["alpha-vae a=0"][2]
    model = models["autoencoder"][3]
    assert ae.params == vae.params - sum(p.numel() for p in model.encoder.logvar.parameters())


def test_known_answers_of_the_fixed_methods():
    x0, x2 = torch.full((2, 3, 4, 4), 0.2), torch.full((2, 3, 4, 4), 0.6)
    assert torch.allclose(pixel_average.predict(pixel_average.Config(), x0, x2, 0.25), torch.full_like(x0, 0.3))
    assert torch.equal(copy_x0.predict(copy_x0.Config(), x0, x2, 0.7), x0)


def test_flow_puts_a_moving_square_at_tau():
    # An 8x8 square moving 8 px right between the ends (32x32): at tau = 1/4 it has moved 2 px.
    frames = torch.zeros(3, 1, 3, 32, 32)
    for i, left in enumerate((8, 10, 16)):  # x0, the truth at tau = 1/4, x2
        frames[i, 0, :, 12:20, left:left + 8] = 0.8
    pred = optical_flow.predict(optical_flow.Config(), frames[0], frames[2], 0.25)
    blend = pixel_average.predict(pixel_average.Config(), frames[0], frames[2], 0.25)
    err = float(((pred - frames[1]) ** 2).mean())
    assert err < float(((blend - frames[1]) ** 2).mean()) / 5, err


def test_mean_frame_is_the_mean_training_image(trained):
    models, written = trained
    model = models["mean-frame"][3]
    frames = written["train"][0]  # (S, T, H, W, 3) uint8
    expected = torch.from_numpy(frames.reshape(-1, *frames.shape[2:]).mean(axis=0) / 255).permute(2, 0, 1).float()
    assert torch.allclose(model, expected, atol=1e-6)
    x = torch.zeros(2, 3, 8, 8)
    assert torch.allclose(mean_frame.predict(model, x, x, 0.5)[1], expected, atol=1e-6)


def test_training_is_deterministic_and_the_summary_round_trips(trained, tmp_path):
    models, _ = trained
    module, variant, summary, model = models["autoencoder"]
    spec = TrainSpec(data=str(tmp_path / "tiny.h5"), gaps=(1, 2), steps=3, batch_size=4, seed=0)
    write_tiny_dataset(spec.data, n_frames=8, size=8)
    again = module.train(variant, spec, tmp_path / "again", device="cpu", progress=False)
    reloaded = module.load(variant, tmp_path / "again", "cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
    assert read_summary(tmp_path / "nothing") is None
    write_summary(again, tmp_path / "again")
    assert read_summary(tmp_path / "again") == again


@pytest.mark.parametrize("name", ["frame-cnn", "autoencoder", "acai", "alpha-vae"])
def test_learned_methods_spend_one_budget_and_select_on_val(name, tmp_path):
    module = methods.get(name)
    optional = methods.hooks(module)
    config = optional.variants(module.Config(**optional.overrides("quick")))[0]
    write_tiny_dataset(tmp_path / "tiny.h5", n_seq=(4, 1), n_frames=8, size=8)
    # 40 triplets in batches of 16: every third step is an epoch's last (8 triplets) for the epoch-based ones.
    probe = TrainSpec(data=str(tmp_path / "tiny.h5"), gaps=(1, 2), steps=1, batch_size=16, seed=0, val_split="none")
    per_step = module.train(config, probe, tmp_path / "probe", device="cpu", progress=False).flops_per_step
    budget = 7.5 * per_step / 1e9  # GFLOP: 7 full steps and a half; smaller last batches buy a few more
    spec = TrainSpec(data=str(tmp_path / "tiny.h5"), gaps=(1, 2), steps=1, batch_size=16, seed=0, eval_every=3,
                     patience=0, budget_gflop=budget)
    summary = module.train(config, spec, tmp_path / "budget", device="cpu", progress=False)
    assert summary.budget_gflop == budget and summary.steps == summary.planned_steps >= 7, name
    assert summary.train_flops <= budget * 1e9 < summary.train_flops + per_step, name  # within one step
    # min_delta larger than any loss: only the first evaluation is a best, patience 1 stops at the second.
    spec = dataclasses.replace(spec, steps=8, budget_gflop=None, eval_every=2, patience=1, min_delta=1e9)
    summary = module.train(config, spec, tmp_path / "early", device="cpu", progress=False)
    assert (summary.status, summary.steps, summary.selected_step) == ("stopped-early", 4, 2), name
    assert summary.selected_checkpoint == "best.pt" and summary.trained, name
    best = torch.load(tmp_path / "early" / "best.pt", weights_only=True)
    assert best["step"] == 2 and best["val_loss"] == summary.best_val_loss, name


def test_registry_refuses_unknown_names_and_lists_the_known():
    with pytest.raises(UserError, match="pixel-average"):
        methods.get("magic")
    assert methods.record_fields(methods.get("frame-cnn"), methods.get("frame-cnn").Config()) == \
        {"alpha": None, "kl": None}
    vae = methods.get("alpha-vae")
    sweep = vae.Config(alphas=(0, 1, 10), kls=("avg-gaussian", "jensen"))
    labels = [vae.label(v) for v in methods.hooks(vae).variants(sweep)]
    assert labels == ["alpha-vae a=0", "alpha-vae a=1 avg-gaussian", "alpha-vae a=1 jensen",
                      "alpha-vae a=10 avg-gaussian", "alpha-vae a=10 jensen"]
    assert np.unique(labels).size == len(labels)
