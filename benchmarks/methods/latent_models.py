"""The latent models' shared code (alpha-vae, autoencoder, acai): one architecture's defaults, the autoencoder, decoding.

Not a method (benchmarks/methods/__init__.py does not list it): the three latent rows import their
common parts from here, so no method imports another and each default is stated once.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.methods.interface import check_frames, tau_column
from ibdata.triplets import TripletDataset
from ibutil.device import resolve_device
from ibutil.run import load_selected
from inbetween.vae import AlphaVAE, VAEConfig, decode_between, reconstruction_nll

# The architecture and optimiser every latent model trains with unless told otherwise.
LATENT = 32  # latent size
WIDTH = 0.25  # channel multiplier (1.0 = the paper's 128-256-512-1024)
LR = 3e-4  # Adam learning rate (constant)
LIKELIHOOD = "bernoulli"  # reconstruction likelihood: bernoulli (BCE) or gaussian (MSE, sigma 0.1)
QUICK = {"width": 0.05, "latent": 8}  # the --quick CI profile's architecture
# The --demo profile: small enough to train in ~30 s on 2 cores, large enough to decode recognisable frames.
DEMO = {"width": 0.125, "latent": 32, "lr": 1e-3}
SHARED = {"width": "--width", "latent": "--latent"}  # unprefixed CLI options: one architecture for every latent model


def build_autoencoder(latent: int, width: float, image_size: int, seed: int) -> AlphaVAE:
    """The alpha-VAE's architecture as a deterministic autoencoder, on the CPU, its weights fixed by `seed`;
    the log-variance head is frozen (unused: the encoder mean is the code)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AlphaVAE(VAEConfig(image_size=image_size, latent=latent, width=width))
    model.encoder.logvar.requires_grad_(False)
    return model


def reconstruction_loss(model: AlphaVAE, x0, x1, x2, likelihood: str) -> torch.Tensor:
    """The reconstruction loss of x0, x1 and x2 (each (B, 3, H, W) in [0, 1]) from their codes, nats per triplet."""
    x = torch.cat([x0, x1, x2])  # (3B, 3, H, W)
    mu, _ = model.encode(x)  # (3B, latent): the code, no sampling
    return reconstruction_nll(model.decoder(mu).float(), x, likelihood).view(3, -1).sum(0).mean()


@torch.no_grad()
def val_loss(model: AlphaVAE, val: TripletDataset, likelihood: str, batch_size: int, device) -> float:
    """reconstruction_loss averaged over every triplet of the val split, in fixed batches: deterministic."""
    model.eval()
    total = 0.0
    for start in range(0, len(val), batch_size):
        idx = np.arange(start, min(start + batch_size, len(val)))
        b = val.batch(idx, device)
        total += reconstruction_loss(model, b["x0"], b["x1"], b["x2"], likelihood).item() * len(idx)
    model.train()
    return total / len(val)


def load_autoencoder(out_dir, fmt: str, hint: str, device: str) -> AlphaVAE:
    """The selected AlphaVAE of a finished ibutil.run.TrainRun run of checkpoint format `fmt` (autoencoder, acai)."""
    payload = load_selected(out_dir, fmt, hint=hint)
    model = AlphaVAE(VAEConfig(**payload["meta"]["model_config"]))
    model.load_state_dict(payload["state"]["model"])
    return model.to(resolve_device(device)).eval()


@torch.no_grad()
def predict(model: AlphaVAE, x0: torch.Tensor, x2: torch.Tensor, tau) -> torch.Tensor:
    """Decode (1 - tau) mu(x0) + tau mu(x2): (B, 3, H, W) x2 in [0, 1] -> (B, 3, H, W) in [0, 1] on x0's device."""
    check_frames(x0, x2)
    t = tau_column(tau, x0).view(-1, 1)  # (B, 1)
    return decode_between(model, x0, x2, t).to(x0.device, x0.dtype)
