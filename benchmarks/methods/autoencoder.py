"""autoencoder: the alpha-VAE's architecture trained as a plain deterministic autoencoder; decodes (1-tau) z0 + tau z2.

It isolates what the VAE's noise, prior and alpha term add: the encoder's mean head is the code
(its log-variance head is frozen and unused), no sampling, and the loss is only the alpha-VAE's
reconstruction term, summed over x0, x1 and x2 of each training triplet.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.methods import alpha_vae
from benchmarks.methods.interface import TrainSpec, TrainSummary
from ibutil.device import resolve_device
from ibutil.errors import UserError
from ibutil.io import read_checkpoint, torch_save_atomic, write_text_atomic
from inbetween.data import TripletDataset
from inbetween.vae import LIKELIHOODS, AlphaVAE, VAEConfig, num_params, reconstruction_nll

NAME = "autoencoder"
TRAINS = True
SEEDED = True
QUICK = alpha_vae.QUICK  # the same tiny architecture as the alpha-VAE under --quick
SHARED = {"width": "--width", "latent": "--latent"}  # one architecture for every latent model
CHECKPOINT = "checkpoint.pt"
LOG = "log.csv"
FORMAT = "autoencoder"
CURVE_POINTS = 100  # the log holds the mean training loss of each of about this many blocks of steps


@dataclass(frozen=True)
class Config:
    """Architecture and optimiser; the architecture defaults are the alpha-VAE's (stated there)."""

    latent: int = alpha_vae.Config.latent  # latent size
    width: float = alpha_vae.Config.width  # channel multiplier (1.0 = the paper)
    lr: float = alpha_vae.Config.lr  # Adam learning rate (constant)
    likelihood: str = alpha_vae.Config.likelihood  # reconstruction loss: bernoulli (BCE) or gaussian (MSE)

    def __post_init__(self):
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise UserError(f"autoencoder lr must be a positive number, got {self.lr!r}")
        if self.likelihood not in LIKELIHOODS:
            raise UserError(f"unknown likelihood {self.likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")


def label(config: Config) -> str:
    return NAME


def build(config: Config, image_size: int, seed: int) -> AlphaVAE:
    """A fresh model on the CPU, its weights fixed by `seed`; the log-variance head is frozen (unused)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AlphaVAE(VAEConfig(image_size=image_size, latent=config.latent, width=config.width))
    model.encoder.logvar.requires_grad_(False)
    return model


def train(config: Config, spec: TrainSpec, out_dir, *, device: str = "auto", progress: bool = True) -> TrainSummary:
    """Minimise the reconstruction loss of x0, x1, x2 on training triplets; write checkpoint.pt and log.csv."""
    start = time.perf_counter()
    dev = resolve_device(device)
    data = TripletDataset(spec.data, "train", spec.gaps)
    model = build(config, data.image_size, spec.seed).to(dev).train()
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    n, bs = len(data), spec.batch_size
    per_epoch = math.ceil(n / bs)
    every = max(1, spec.steps // CURVE_POINTS)
    curve, block = [], torch.zeros((), device=dev)
    bar = tqdm(range(spec.steps), desc=NAME, disable=not progress, leave=False)
    for step in bar:
        epoch, i = divmod(step, per_epoch)
        order = np.random.default_rng([spec.seed, epoch]).permutation(n)  # an epoch's order depends on (seed, epoch)
        b = data.batch(order[i * bs:(i + 1) * bs], dev)  # x0, x1, x2: (b, 3, H, W) in [0, 1]
        x = torch.cat([b["x0"], b["x1"], b["x2"]])  # (3b, 3, H, W)
        mu, _ = model.encode(x)  # (3b, latent): the code, no sampling
        loss = reconstruction_nll(model.decoder(mu).float(), x, config.likelihood).view(3, -1).sum(0).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        block += loss.detach()
        if (step + 1) % every == 0 or step == spec.steps - 1:
            curve.append((step + 1, block.item() / ((step % every) + 1)))
            block.zero_()
            bar.set_postfix(loss=f"{curve[-1][1]:.2f}")
    out = Path(out_dir)
    torch_save_atomic({"format": FORMAT, "model_config": json.dumps(asdict(model.config)),
                       "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, out / CHECKPOINT)
    write_text_atomic(out / LOG, "step,train_loss\n" + "".join(f"{s},{v!r}\n" for s, v in curve))
    return TrainSummary(params=num_params(model), train_flops=None, train_seconds=time.perf_counter() - start,
                        selected_step=spec.steps, lr=config.lr)


def load(config: Config, out_dir, device: str = "auto") -> AlphaVAE:
    state = read_checkpoint(Path(out_dir) / CHECKPOINT, FORMAT, hint="train the autoencoder first")
    model = AlphaVAE(VAEConfig(**json.loads(state["model_config"])))
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval()


@torch.no_grad()
def predict(model: AlphaVAE, x0: torch.Tensor, x2: torch.Tensor, tau) -> torch.Tensor:
    """Decode (1 - tau) z0 + tau z2: (B, 3, H, W) x2 in [0, 1] -> (B, 3, H, W) in [0, 1] on x0's device."""
    return alpha_vae.predict(model, x0, x2, tau)  # the same decoding of the encoder means
