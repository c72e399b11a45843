"""Tests of inbetween.vae: shapes, the paper-size model, the loss terms' known answers and gradient flow."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributions as td
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from inbetween.vae import (
    KL_FORMS, AlphaVAE, VAEConfig, alpha_vae_loss, decoder_channels, encoder_channels, inbetween,
    inbetween_divergence, interpolate, kl_normal, kl_standard_normal, num_params, reconstruction_nll,
)
from ibutil.errors import UserError



def tiny(size=16, width=0.05, latent=6, seed=0):
    torch.manual_seed(seed)
    return AlphaVAE(VAEConfig(image_size=size, latent=latent, width=width))


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize("size", [4, 8, 16, 32, 64])
@pytest.mark.parametrize("width", [0.03, 0.1])
def test_shapes(size, width):
    model = tiny(size, width, latent=5)
    x = torch.rand(7, 3, size, size)
    logits, mu, logvar = model(x)
    assert logits.shape == (7, 3, size, size) and mu.shape == logvar.shape == (7, 5)
    assert len(encoder_channels(model.config)) == len(decoder_channels(model.config)) == model.config.stages
    with torch.no_grad():
        y = model.decode(mu)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert inbetween(model, x, x).shape == x.shape
    assert inbetween(model, x[0], x[1]).shape == (3, size, size)


def test_paper_model_size_and_cost():
    model = AlphaVAE(VAEConfig())
    assert encoder_channels(model.config) == [128, 256, 512, 1024]
    assert decoder_channels(model.config) == [512, 512, 256, 64]
    assert abs(num_params(model) - 27.5e6) < 0.1e6
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
    assert 0.75e9 < counter.get_total_flops() < 0.85e9


def test_size_adds_or_drops_a_stage():
    assert encoder_channels(VAEConfig(image_size=64)) == [64, 128, 256, 512, 1024]
    assert decoder_channels(VAEConfig(image_size=16)) == [512, 256, 64]
    assert encoder_channels(VAEConfig(image_size=32, width=0.5)) == [64, 128, 256, 512]


@pytest.mark.parametrize("kwargs, match", [
    ({"image_size": 24}, "power of two"), ({"image_size": 2}, "power of two"),
    ({"latent": 0}, "latent size"), ({"width": 0.0}, "width"), ({"width": float("nan")}, "width"),
])
def test_bad_architecture(kwargs, match):
    with pytest.raises(UserError, match=match):
        VAEConfig(**kwargs)


def test_stacked_pass_equals_separate_passes():
    # No batch-dependent layers: encoding 3B images at once is exactly three encodings of B.
    model = tiny()
    xs = [torch.rand(4, 3, 16, 16) for _ in range(3)]
    mu, logvar = model.encode(torch.cat(xs))
    for i, x in enumerate(xs):
        m, lv = model.encode(x)
        torch.testing.assert_close(mu[4 * i:4 * i + 4], m, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(logvar[4 * i:4 * i + 4], lv, rtol=1e-5, atol=1e-6)


def test_sampling_uses_the_generator():
    model, x = tiny(), torch.rand(2, 3, 16, 16)
    a = model(x, torch.Generator().manual_seed(3))[0]
    b = model(x, torch.Generator().manual_seed(3))[0]
    c = model(x, torch.Generator().manual_seed(4))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_inbetween_decodes_the_mean_of_the_latent_means():
    model = tiny()
    x0, x2 = torch.rand(3, 3, 16, 16), torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        mu0, mu2 = model.encode(x0)[0], model.encode(x2)[0]
        expected = model.decode((mu0 + mu2) / 2)
    torch.testing.assert_close(inbetween(model, x0, x2), expected)


def test_interpolate_runs_from_one_end_to_the_other():
    model = tiny()
    xa, xb = torch.rand(3, 16, 16), torch.rand(3, 16, 16)
    path = interpolate(model, xa, xb, steps=5)
    assert path.shape == (5, 3, 16, 16)
    with torch.no_grad():
        ends = model.decode(model.encode(torch.stack([xa, xb]))[0])
        mid = inbetween(model, xa, xb)
    torch.testing.assert_close(path[[0, -1]], ends, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(path[2], mid, rtol=1e-5, atol=1e-6)  # t = 1/2 is the in-between
    with pytest.raises(UserError, match="steps >= 2"):
        interpolate(model, xa, xb, steps=1)


# ----------------------------------------------------------------------------- loss known answers


def gaussians(b=3, latent=4, seed=0):
    """Three random diagonal Gaussians as (mu, logvar) pairs, each (b, latent)."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, latent, generator=g), 0.5 * torch.randn(b, latent, generator=g)) for _ in range(3)]


def normal(mu, logvar):
    return td.Independent(td.Normal(mu, torch.exp(0.5 * logvar)), 1)


@pytest.mark.parametrize("form", KL_FORMS)
def test_divergence_is_zero_when_all_three_agree(form):
    mu, lv = gaussians()[0]
    d = inbetween_divergence(mu, lv, mu, lv, mu, lv, form, torch.Generator().manual_seed(0), samples=4)
    torch.testing.assert_close(d, torch.zeros(3), atol=1e-5, rtol=0)


def test_kl_helpers_match_torch_distributions():
    (mu0, lv0), (mu1, lv1), _ = gaussians()
    torch.testing.assert_close(kl_normal(mu1, lv1, mu0, lv0), td.kl_divergence(normal(mu1, lv1), normal(mu0, lv0)))
    std = normal(torch.zeros_like(mu1), torch.zeros_like(lv1))
    torch.testing.assert_close(kl_standard_normal(mu1, lv1), td.kl_divergence(normal(mu1, lv1), std))


def monte_carlo_kl(q, log_p, n=200_000, seed=1):
    """E_q[log q(z) - log p(z)] by plain sampling from torch.distributions; returns (mean, standard error)."""
    torch.manual_seed(seed)
    z = q.sample((n,))  # (n, B, L)
    v = q.log_prob(z) - log_p(z)  # (n, B)
    return v.mean(0), v.std(0) / math.sqrt(n)


def test_avg_gaussian_matches_monte_carlo():
    (mu0, lv0), (mu1, lv1), (mu2, lv2) = gaussians()
    d = inbetween_divergence(mu0, lv0, mu1, lv1, mu2, lv2, "avg-gaussian")
    p = td.Independent(td.Normal((mu0 + mu2) / 2, torch.sqrt((lv0.exp() + lv2.exp()) / 2)), 1)
    mc, se = monte_carlo_kl(normal(mu1, lv1), p.log_prob)
    assert torch.all((d - mc).abs() < 5 * se + 1e-3), (d, mc, se)


def test_jensen_matches_monte_carlo_and_bounds_the_mixture():
    (mu0, lv0), (mu1, lv1), (mu2, lv2) = gaussians()
    d = inbetween_divergence(mu0, lv0, mu1, lv1, mu2, lv2, "jensen")
    q0, q2 = normal(mu0, lv0), normal(mu2, lv2)
    mc, se = monte_carlo_kl(normal(mu1, lv1), lambda z: (q0.log_prob(z) + q2.log_prob(z)) / 2)
    assert torch.all((d - mc).abs() < 5 * se + 1e-3), (d, mc, se)
    mix = inbetween_divergence(mu0, lv0, mu1, lv1, mu2, lv2, "mixture", torch.Generator().manual_seed(0), 2000)
    assert torch.all(mix <= d + 1e-3)  # KL is convex in its second argument


def test_mixture_is_unbiased_against_torch_mixture():
    (mu0, lv0), (mu1, lv1), (mu2, lv2) = gaussians(b=2, latent=2)
    mix = td.MixtureSameFamily(td.Categorical(torch.tensor([0.5, 0.5])),
                               td.Independent(td.Normal(torch.stack([mu0, mu2], -2),
                                                        torch.exp(0.5 * torch.stack([lv0, lv2], -2))), 1))
    mc, se = monte_carlo_kl(normal(mu1, lv1), mix.log_prob)
    # Our estimator with many draws; each draw alone is unbiased, so their mean converges to the KL.
    ours = inbetween_divergence(mu0, lv0, mu1, lv1, mu2, lv2, "mixture", torch.Generator().manual_seed(2), 20_000)
    assert torch.all((ours - mc).abs() < 5 * se + 0.02), (ours, mc, se)


def test_mixture_is_log2_when_x1_copies_a_far_end_frame():
    mu0, lv0 = torch.zeros(4, 3), torch.zeros(4, 3)
    mu2 = mu0 + 40.0  # far apart: q2 has no mass where q0 has
    d = inbetween_divergence(mu0, lv0, mu0, lv0, mu2, lv0, "mixture", torch.Generator().manual_seed(0), 8)
    torch.testing.assert_close(d, torch.full((4,), math.log(2)), atol=1e-4, rtol=0)
    # ... whereas the prose's form punishes the copy heavily: the average is far from q0.
    assert torch.all(inbetween_divergence(mu0, lv0, mu0, lv0, mu2, lv0, "avg-gaussian") > 100)


@pytest.mark.parametrize("form", KL_FORMS)
def test_gradients_reach_all_three_encodings(form):
    params = [t.clone().requires_grad_() for pair in gaussians() for t in pair]
    d = inbetween_divergence(*params, form=form, generator=torch.Generator().manual_seed(0))
    d.sum().backward()
    for p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("form", KL_FORMS)
def test_d_term_reaches_all_three_frames_through_the_stacked_pass(form):
    model = tiny()
    xs = [torch.rand(2, 3, 16, 16, requires_grad=True) for _ in range(3)]
    terms = alpha_vae_loss(model, *xs, alpha=1.0, kl_form=form, generator=torch.Generator().manual_seed(0))
    terms.d.backward()
    for x in xs:
        assert x.grad.abs().sum() > 0


def test_loss_is_three_elbos_plus_alpha_d():
    model = tiny()
    xs = [torch.rand(2, 3, 16, 16) for _ in range(3)]
    t0 = alpha_vae_loss(model, *xs, alpha=0.0, generator=torch.Generator().manual_seed(0))
    t2 = alpha_vae_loss(model, *xs, alpha=2.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(t0.loss, t0.recon + t0.kl)  # alpha = 0: plain VAE
    torch.testing.assert_close(t2.loss, t2.recon + t2.kl + 2.0 * t2.d)
    # The recon and KL terms are the three per-frame ELBOs with the same noise, summed.
    g = torch.Generator().manual_seed(0)
    logits, mu, logvar = model(torch.cat(xs), g)
    per_frame = reconstruction_nll(logits, torch.cat(xs)) + kl_standard_normal(mu, logvar)  # (3B,)
    torch.testing.assert_close(t0.loss, per_frame.view(3, 2).sum(0).mean())


def test_reconstruction_likelihoods():
    logits, x = torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    bce = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="none").flatten(1).sum(1)
    torch.testing.assert_close(reconstruction_nll(logits, x, "bernoulli"), bce)
    gauss = -td.Normal(torch.sigmoid(logits), 0.1).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(reconstruction_nll(logits, x, "gaussian", sigma=0.1), gauss)


def test_unknown_options():
    mu, lv = gaussians()[0]
    with pytest.raises(UserError, match="unknown KL form 'kl'"):
        inbetween_divergence(mu, lv, mu, lv, mu, lv, "kl")
    with pytest.raises(UserError, match="unknown likelihood 'poisson'"):
        reconstruction_nll(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), "poisson")
