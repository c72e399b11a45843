"""The alpha-VAE model and loss: one convolutional VAE shared by x0, x1, x2, and the in-between term D.

Read top to bottom: the architecture config, the encoder, the decoder, the model, then the loss
(negative ELBO per frame plus alpha times one of three forms of D), then in-betweening and
interpolation in latent space. docs/method.md gives every formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ibutil.errors import UserError

# Channels of the paper's 32x32 model, listed from the 2x2 end of the network outwards, so that
# other image sizes add or drop stages at the high-resolution end and keep the bottleneck as is.
ENCODER_CHANNELS = (1024, 512, 256, 128)  # encoder stage outputs, last stage first (32x32: 128-256-512-1024)
DECODER_CHANNELS = (64, 256, 512, 512)  # decoder stage outputs, last stage first (32x32: 512-512-256-64)
KL_FORMS = ("avg-gaussian", "mixture", "jensen")
LIKELIHOODS = ("bernoulli", "gaussian")
LOG2 = math.log(2.0)


@dataclass(frozen=True)
class VAEConfig:
    """The architecture; everything needed to rebuild a model from a checkpoint."""

    image_size: int = 32  # H = W in pixels; a power of two >= 4 (each stage halves it, down to 2x2)
    latent: int = 128  # latent size; 128 gives the paper-size model of ~27.5 M parameters at width 1.0
    width: float = 1.0  # channel multiplier; 1.0 is the paper, 0.05 a tiny copy for tests and CPU runs

    def __post_init__(self):
        n = self.image_size
        if not isinstance(n, int) or n < 4 or n & (n - 1):
            raise UserError(f"image size {n} is not supported; the VAE needs a power of two >= 4 (e.g. 32)")
        if not isinstance(self.latent, int) or self.latent < 1:
            raise UserError(f"latent size must be a positive integer, got {self.latent!r}")
        if not (isinstance(self.width, (int, float)) and math.isfinite(self.width) and self.width > 0):
            raise UserError(f"width must be a positive number (1.0 = the paper), got {self.width!r}")

    @property
    def stages(self) -> int:
        """Number of stride-2 stages from image_size down to 2x2 (4 at 32x32)."""
        return int(math.log2(self.image_size)) - 1


def _channels(table: tuple[int, ...], stages: int, width: float, extra) -> list[int]:
    """Channels of `stages` stages in forward order; stages beyond the table are made by `extra`."""
    c = list(table[:stages])
    while len(c) < stages:
        c.append(extra(c[-1]))
    return [max(1, round(ch * width)) for ch in reversed(c)]


def encoder_channels(cfg: VAEConfig) -> list[int]:
    """Encoder conv outputs in forward order, e.g. [128, 256, 512, 1024] at 32x32, width 1."""
    return _channels(ENCODER_CHANNELS, cfg.stages, cfg.width, lambda c: max(c // 2, 32))


def decoder_channels(cfg: VAEConfig) -> list[int]:
    """Decoder deconv outputs in forward order, e.g. [512, 512, 256, 64] at 32x32, width 1."""
    return _channels(DECODER_CHANNELS, cfg.stages, cfg.width, lambda c: 512)


# ----------------------------------------------------------------------------- model


class Encoder(nn.Module):
    """Image (N, 3, H, W) in [0, 1] -> latent mean and log-variance, each (N, latent)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        layers, c_in = [], 3
        for c in encoder_channels(cfg):
            layers += [nn.Conv2d(c_in, c, kernel_size=4, stride=2, padding=1), nn.ReLU()]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.mu = nn.Linear(c_in * 2 * 2, cfg.latent)
        self.logvar = nn.Linear(c_in * 2 * 2, cfg.latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.convs(x).flatten(1)  # (N, C*2*2)
        # The heads run in fp32 even under bf16 autocast: exp(logvar) amplifies rounding error.
        with torch.autocast(device_type=x.device.type, enabled=False):
            h = h.float()
            return self.mu(h), self.logvar(h)


class Decoder(nn.Module):
    """Latent (N, latent) -> logits (N, 3, H, W); sigmoid(logits) is the image in [0, 1]."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.c0 = encoder_channels(cfg)[-1]  # the 2x2 map has as many channels as the encoder's last
        self.fc = nn.Linear(cfg.latent, self.c0 * 2 * 2)
        layers, c_in = [], self.c0
        for c in decoder_channels(cfg):
            layers += [nn.ConvTranspose2d(c_in, c, kernel_size=4, stride=2, padding=1), nn.ReLU()]
            c_in = c
        self.deconvs = nn.Sequential(*layers)
        self.out = nn.Conv2d(c_in, 3, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc(z)).view(-1, self.c0, 2, 2)  # (N, C, 2, 2)
        return self.out(self.deconvs(h))  # (N, 3, H, W) logits; the sigmoid lives in the loss / decode()


class AlphaVAE(nn.Module):
    """One VAE. The three VAEs of the method share these weights, so one module serves all three frames.

    There is no batch normalisation: an image's encoding never depends on the rest of its batch,
    which makes one pass over the stacked 3B images exactly equal to three passes over B.
    """

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) in [0, 1] -> (mu, logvar), each (N, latent), fp32."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N, latent) -> images (N, 3, H, W) in [0, 1]."""
        return torch.sigmoid(self.decoder(z).float())

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Encode, sample z by reparameterisation, decode. Returns (logits, mu, logvar)."""
        mu, logvar = self.encoder(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps  # (N, latent)
        return self.decoder(z).float(), mu, logvar


def num_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- loss


def reconstruction_nll(logits: torch.Tensor, x: torch.Tensor, likelihood: str = "bernoulli",
                       sigma: float = 0.1) -> torch.Tensor:
    """-log p(x | z) per image, summed over pixels: (N, 3, H, W) x 2 -> (N,).

    bernoulli: binary cross-entropy of x against sigmoid(logits) (the default; no scale to choose).
    gaussian: N(x; sigmoid(logits), sigma^2 I), i.e. ||x - x_hat||^2 / (2 sigma^2) + const.
    """
    if likelihood == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    elif likelihood == "gaussian":
        nll = (torch.sigmoid(logits) - x) ** 2 / (2 * sigma**2) + math.log(sigma) + 0.5 * math.log(2 * math.pi)
    else:
        raise UserError(f"unknown likelihood {likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
    return nll.flatten(1).sum(1)


def kl_normal(mu_q, logvar_q, mu_p, logvar_p) -> torch.Tensor:
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) for diagonal Gaussians: (N, L) -> (N,)."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1).sum(1)


def kl_standard_normal(mu, logvar) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)): (N, L) -> (N,). The prior term of the ELBO."""
    return 0.5 * (logvar.exp() + mu**2 - 1 - logvar).sum(1)


def log_normal(z, mu, logvar) -> torch.Tensor:
    """log N(z; mu, exp(logvar)) summed over the latent: (..., L) -> (...)."""
    return -0.5 * (LOG2 + math.log(math.pi) + logvar + (z - mu) ** 2 / logvar.exp()).sum(-1)


def inbetween_divergence(mu0, logvar0, mu1, logvar1, mu2, logvar2, form: str = "avg-gaussian",
                         generator: torch.Generator | None = None, samples: int = 1) -> torch.Tensor:
    """D between q(z|x1) and the end frames' encodings, per triplet: (B, L) x 6 -> (B,).

    avg-gaussian: KL(q1 || N((mu0+mu2)/2, (s0^2+s2^2)/2)), closed form (the default).
    mixture: KL(q1 || (q0+q2)/2), unbiased Monte Carlo with `samples` reparameterised draws z ~ q1.
    jensen: (KL(q1 || q0) + KL(q1 || q2)) / 2, closed form; an upper bound on `mixture`.
    """
    if form == "avg-gaussian":
        mu_avg = 0.5 * (mu0 + mu2)
        logvar_avg = torch.log(0.5 * (logvar0.exp() + logvar2.exp()))
        return kl_normal(mu1, logvar1, mu_avg, logvar_avg)
    if form == "jensen":
        return 0.5 * (kl_normal(mu1, logvar1, mu0, logvar0) + kl_normal(mu1, logvar1, mu2, logvar2))
    if form == "mixture":
        eps = torch.randn((samples, *mu1.shape), generator=generator, device=mu1.device, dtype=mu1.dtype)
        z = mu1 + torch.exp(0.5 * logvar1) * eps  # (S, B, L) ~ q1, differentiable in mu1 and logvar1
        log_mix = torch.logaddexp(log_normal(z, mu0, logvar0), log_normal(z, mu2, logvar2)) - LOG2  # (S, B)
        return (log_normal(z, mu1, logvar1) - log_mix).mean(0)
    raise UserError(f"unknown KL form {form!r}; choose one of {', '.join(KL_FORMS)}")


@dataclass(frozen=True)
class LossTerms:
    """The loss of one batch of triplets and its parts, each averaged over the B triplets."""

    loss: torch.Tensor  # the scalar to minimise: recon + kl + alpha * d
    recon: torch.Tensor  # sum over the three frames of -log p(x | z)
    kl: torch.Tensor  # sum over the three frames of KL(q(z|x) || N(0, I))
    d: torch.Tensor  # the in-between divergence D (before alpha)


def alpha_vae_loss(model: AlphaVAE, x0, x1, x2, alpha: float = 1.0, kl_form: str = "avg-gaussian",
                   likelihood: str = "bernoulli", generator: torch.Generator | None = None,
                   mixture_samples: int = 1) -> LossTerms:
    """l_VAE(x0) + l_VAE(x1) + l_VAE(x2) + alpha * D for a batch of triplets, each (B, 3, H, W) in [0, 1].

    The three weight-shared VAEs run as one pass over the stacked (3B, 3, H, W) batch.
    """
    x = torch.cat([x0, x1, x2])  # (3B, 3, H, W): frame 0 of every triplet, then frame 1, then frame 2
    logits, mu, logvar = model(x, generator)
    return loss_terms(x, logits, mu, logvar, alpha, kl_form, likelihood, generator, mixture_samples)


def loss_terms(x, logits, mu, logvar, alpha: float = 1.0, kl_form: str = "avg-gaussian",
               likelihood: str = "bernoulli", generator: torch.Generator | None = None,
               mixture_samples: int = 1) -> LossTerms:
    """The loss of alpha_vae_loss from one model's outputs on the stacked triplets.

    x: (3B, 3, H, W) in [0, 1], frames 0, 1, 2 of B triplets; logits (3B, 3, H, W); mu, logvar (3B, L).
    Split out so that inbetween.ensemble computes each model's loss with exactly these operations.
    """
    b = x.shape[0] // 3
    nll = reconstruction_nll(logits, x, likelihood).view(3, b)  # (3, B)
    kl = kl_standard_normal(mu, logvar).view(3, b)  # (3, B)
    (mu0, mu1, mu2), (lv0, lv1, lv2) = mu.view(3, b, -1), logvar.view(3, b, -1)  # each (B, L)
    d = inbetween_divergence(mu0, lv0, mu1, lv1, mu2, lv2, kl_form, generator, mixture_samples)  # (B,)
    recon, kl, d = nll.sum(0).mean(), kl.sum(0).mean(), d.mean()
    return LossTerms(recon + kl + alpha * d, recon, kl, d)


# ----------------------------------------------------------------------------- use


@torch.no_grad()
def decode_between(model: AlphaVAE, x0: torch.Tensor, x2: torch.Tensor, tau) -> torch.Tensor:
    """Decode (1 - tau) mu(x0) + tau mu(x2): the one latent interpolation of every latent model.

    x0, x2: (B, 3, H, W) in [0, 1]; tau: a number or a tensor that broadcasts against (B, latent), e.g.
    (B, 1) for one position per pair or (S, 1) with B = 1 for S positions on one line. Returns the
    decoded images (max(B, S), 3, H, W) in [0, 1] on the model's device.
    """
    dev = next(model.parameters()).device
    mu, _ = model.encode(torch.cat([x0, x2]).to(dev, torch.float32))  # (2B, latent)
    mu0, mu2 = mu.chunk(2)
    t = torch.as_tensor(tau, dtype=torch.float32, device=dev)
    return model.decode((1 - t) * mu0 + t * mu2)


def inbetween(model: AlphaVAE, x0: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """The paper's in-between: decode the mean of the latent means of x0 and x2.

    x0, x2: (B, 3, H, W) or (3, H, W) in [0, 1] -> the predicted x1 in the same shape, in [0, 1].
    """
    single = x0.dim() == 3
    out = decode_between(model, x0[None] if single else x0, x2[None] if single else x2, 0.5)
    return out[0] if single else out


def interpolate(model: AlphaVAE, xa: torch.Tensor, xb: torch.Tensor, steps: int = 8) -> torch.Tensor:
    """Decode `steps` evenly spaced points on the line from mu(xa) to mu(xb), both ends included.

    xa, xb: (3, H, W) in [0, 1] -> (steps, 3, H, W) in [0, 1] (the paper's Figs 11-12).
    """
    if steps < 2:
        raise UserError(f"interpolate needs steps >= 2 (both ends), got {steps}")
    return decode_between(model, xa[None], xb[None], torch.linspace(0, 1, steps)[:, None])  # tau (steps, 1)
