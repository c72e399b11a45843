"""acai: the autoencoder row plus ACAI's adversarial interpolation regulariser (Berthelot et al. 2018); decodes (1-tau) z0 + tau z2.

Berthelot, Raffel, Roy and Goodfellow, "Understanding and Improving Interpolation in Autoencoders
via an Adversarial Regularizer", ICLR 2019 (arXiv 1807.07543). The autoencoder is exactly the
`autoencoder` method's (the alpha-VAE's architecture, the encoder mean as the code, the same
reconstruction loss of x0, x1 and x2), so the two rows differ only by the regulariser:

- Interpolants. Every frame of the batch (x0, x1 and x2 of its B triplets, 3B images) is mixed with
  its neighbour in the stacked batch, a frame of another triplet whenever the batch holds two or more
  (the batch is a random sample of the train split; an epoch's last batch may hold one): z_mix = alpha z_j + (1 - alpha) z_{j-1}, alpha = 0.5 - |u - 0.5|,
  u ~ U(0, 1), so alpha lies in [0, 0.5]. The paper mixes each image with the reversed batch.
- Critic: the encoder's architecture with its own weights and a scalar head, regressing alpha from
  the decoded interpolant: (critic(x_mix) - alpha)^2 + critic(gamma x + (1 - gamma) x_hat)^2, where
  x_hat is the reconstruction of x; the second term keeps the critic at 0 on real-ish images.
- Autoencoder: reconstruction + lambda * critic(x_mix)^2 per image, i.e. make interpolants look real.

lambda = 0.5 and gamma = 0.2 are the paper's (the public code's flags advweight and reg). The paper's
reconstruction term is a mean over pixels and ours a sum, so the critic term is multiplied by the
number of values per image (3 H W) to keep the paper's balance between the two. Two Adam optimisers
with the same learning rate, stepped together from one backward pass, as in the public code.
Selection: the autoencoder's reconstruction loss on every val triplet (as the `autoencoder` row's).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from benchmarks.methods import latent_models as shared
from benchmarks.methods.interface import TrainSpec, TrainSummary
from ibdata.triplets import TripletDataset, val_dataset
from ibutil.device import resolve_device
from ibutil.errors import UserError
from ibutil.flops import epoch_accounting, training_step_flops
from ibutil.run import TrainRun, epoch_order, planned_steps
from inbetween.vae import LIKELIHOODS, AlphaVAE, Encoder, VAEConfig, num_params, reconstruction_nll

NAME = "acai"
TRAINS = True
SEEDED = True
QUICK = shared.QUICK  # the latent models' tiny architecture under --quick
DEMO = shared.DEMO  # and under --demo
SHARED = shared.SHARED  # --width and --latent: one architecture for every latent model
FORMAT = "acai"
# Independent random streams derived from the run's seed (the data order uses [seed, epoch]: ibutil.run.epoch_order).
CRITIC_STREAM, ALPHA_STREAM = (0xACA1, 0), (0xACA1, 1)


@dataclass(frozen=True)
class Config:
    """The autoencoder's settings (every latent model's defaults) plus the regulariser's two weights (the paper's)."""

    latent: int = shared.LATENT  # latent size
    width: float = shared.WIDTH  # channel multiplier (1.0 = the paper)
    lr: float = shared.LR  # Adam learning rate of both the autoencoder and the critic (constant)
    likelihood: str = shared.LIKELIHOOD  # reconstruction loss: bernoulli (BCE) or gaussian (MSE)
    adv_weight: float = 0.5  # lambda: weight of critic(x_mix)^2 per pixel in the autoencoder's loss (code: advweight)
    reg: float = 0.2  # gamma: the critic sees gamma x + (1 - gamma) x_hat as "real" (code: reg)

    def __post_init__(self):
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise UserError(f"acai lr must be a positive number, got {self.lr!r}")
        if self.likelihood not in LIKELIHOODS:
            raise UserError(f"unknown likelihood {self.likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
        if not (isinstance(self.adv_weight, (int, float)) and math.isfinite(self.adv_weight) and self.adv_weight >= 0):
            raise UserError(f"acai adv_weight (lambda) must be a finite number >= 0, got {self.adv_weight!r}")
        if not (isinstance(self.reg, (int, float)) and 0 <= self.reg <= 1):
            raise UserError(f"acai reg (gamma) must lie in [0, 1], got {self.reg!r}")


def label(config: Config) -> str:
    return NAME


class Critic(nn.Module):
    """The encoder's conv stack (own weights) with a scalar head: (N, 3, H, W) in [0, 1] -> alpha estimate (N,).

    The paper's critic is its encoder averaged over the latent map; the mean of a linear layer's
    outputs is itself one linear output, so a single-output head is the same function class.
    """

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        encoder = Encoder(replace(cfg, latent=1))
        self.convs, self.head = encoder.convs, encoder.mu  # the log-variance head is not kept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x).flatten(1)).squeeze(1)  # (N,)


def _stream_seed(seed: int, stream: tuple[int, int]) -> int:
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1)[0])


def build(config: Config, image_size: int, seed: int) -> tuple[AlphaVAE, Critic]:
    """The autoencoder (the autoencoder row's weights for the same seed) and a fresh critic, on the CPU."""
    model = shared.build_autoencoder(config.latent, config.width, image_size, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_stream_seed(seed, CRITIC_STREAM))
        critic = Critic(model.config)
    return model, critic


def mix_coefficients(n: int, generator: torch.Generator) -> torch.Tensor:
    """alpha = 0.5 - |u - 0.5|, u ~ U(0, 1): (n,) in [0, 0.5], drawn on the CPU (same draws on any device)."""
    return 0.5 - (torch.rand(n, generator=generator) - 0.5).abs()


@dataclass(frozen=True)
class Losses:
    """One batch's losses; `total` is what one backward pass takes (each part reaches only its own weights)."""

    total: torch.Tensor  # ae + critic
    ae: torch.Tensor  # recon + lambda * 3HW * critic(x_mix)^2, per triplet (three images)
    recon: torch.Tensor  # the autoencoder's reconstruction loss, nats per triplet
    adv: torch.Tensor  # mean critic(x_mix)^2 (before lambda)
    critic: torch.Tensor  # mean (critic(x_mix) - alpha)^2 + mean critic(gamma x + (1 - gamma) x_hat)^2


def losses(model: AlphaVAE, critic: Critic, x0, x1, x2, alpha: torch.Tensor, config: Config) -> Losses:
    """ACAI's two losses for a batch of triplets, each (B, 3, H, W) in [0, 1]; alpha (3B,) in [0, 0.5].

    One backward pass of `total` gives each optimiser its own gradient: the autoencoder's term sees
    the critic with its weights frozen, and the critic's terms see detached images.
    """
    x = torch.cat([x0, x1, x2])  # (3B, 3, H, W): every frame of the batch
    mu, _ = model.encode(x)  # (3B, latent): the code, no sampling
    logits = model.decoder(mu).float()  # (3B, 3, H, W)
    recon = reconstruction_nll(logits, x, config.likelihood).view(3, -1).sum(0).mean()  # = the autoencoder's
    a = alpha.to(mu.device).view(-1, 1)  # (3B, 1)
    x_mix = model.decode(a * mu + (1 - a) * mu.roll(1, 0))  # (3B, 3, H, W): frame j mixed with frame j-1
    critic.requires_grad_(False)
    adv = critic(x_mix).square()  # (3B,): the autoencoder wants 0 ("not an interpolant")
    critic.requires_grad_(True)
    values = x[0].numel()  # 3 H W: per-pixel lambda, as the paper's mean-over-pixels loss has it
    ae = recon + config.adv_weight * values * adv.view(3, -1).sum(0).mean()
    x_real = config.reg * x + (1 - config.reg) * torch.sigmoid(logits.detach())  # (3B, 3, H, W)
    c_mix, c_real = critic(torch.cat([x_mix.detach(), x_real])).chunk(2)  # (3B,) each
    critic_loss = (c_mix - a.view(-1)).square().mean() + c_real.square().mean()
    return Losses(ae + critic_loss, ae, recon, adv.mean(), critic_loss)


@functools.lru_cache(maxsize=64)  # one count per config and batch shape
def step_flops(config: Config, image_size: int, batch_size: int) -> int:
    """FLOPs of one training step of `batch_size` triplets: forward + backward of autoencoder and critic.

    Counted by torch.utils.flop_counter (matrix products and convolutions, 2 per multiply-add) on
    shape-only tensors (ibutil.flops.training_step_flops): exact for these shapes, nothing computed, no RNG
    touched. The optimiser updates and elementwise work are not counted.
    """
    def batch_loss(pair: nn.ModuleList) -> torch.Tensor:
        x0, x1, x2 = (torch.rand(batch_size, 3, image_size, image_size) for _ in range(3))
        return losses(pair[0], pair[1], x0, x1, x2, torch.rand(3 * batch_size) / 2, config).total
    return training_step_flops(lambda: nn.ModuleList(build(config, image_size, 0)), batch_loss)


def train(config: Config, spec: TrainSpec, out_dir, *, device: str = "auto", progress: bool = True) -> TrainSummary:
    """Train autoencoder and critic together on training triplets, select on spec.val_split.

    Selection uses the autoencoder's reconstruction loss on val (latent_models.val_loss): the critic's
    terms measure a moving adversary, not the model. out_dir gets checkpoint.pt (resumed if present),
    best.pt (autoencoder and critic), log.csv, val.csv and summary.json (ibutil.run.TrainRun).
    """
    dev = resolve_device(device)
    data = TripletDataset(spec.data, "train", spec.gaps)
    val = val_dataset(data.header, spec.val_split, spec.gaps)  # None: no selection; the header read once
    if spec.batch_size < 2 and len(data) > 1:
        raise UserError("acai mixes frames of different triplets: use a batch size of at least 2")
    model, critic = build(config, data.image_size, spec.seed)
    model, critic = model.to(dev).train(), critic.to(dev).train()
    opt_ae = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    opt_critic = torch.optim.Adam(critic.parameters(), lr=config.lr)
    alphas = torch.Generator().manual_seed(_stream_seed(spec.seed, ALPHA_STREAM))
    n, bs = len(data), spec.batch_size
    flops = step_flops(config, data.image_size, bs)
    epochs = epoch_accounting(lambda b: step_flops(config, data.image_size, b), n, bs)
    per_epoch = epochs["epoch_steps"]
    run = TrainRun(out_dir, method=NAME, fmt=FORMAT, identity={"config": asdict(config), "spec": spec.resume_identity()},
                   meta={"model_config": asdict(model.config)}, params=num_params(model) + num_params(critic),
                   flops_per_step=flops, planned_steps=planned_steps(spec.steps, spec.budget_gflop, flops, NAME, **epochs),
                   lr=config.lr, val_split=spec.val_split if val is not None else None, eval_every=spec.eval_every,
                   patience=spec.patience, min_delta=spec.min_delta, budget_gflop=spec.budget_gflop,
                   checkpoint_every=spec.checkpoint_every, **epochs,
                   columns=("train_loss", "recon", "adv", "critic_loss"))  # train_loss: the autoencoder's loss
    state = {"model": model, "critic": critic, "opt_ae": opt_ae, "opt_critic": opt_critic, "alphas": alphas}
    run.resume(state)
    with run.stop_flag(), tqdm(total=run.planned, initial=run.step, desc=NAME, disable=not progress,
                               leave=False) as bar:
        while run.running:
            epoch, i = divmod(run.step, per_epoch)
            b = data.batch(epoch_order(spec.seed, epoch, n)[i * bs:(i + 1) * bs], dev)  # x0, x1, x2: (b, 3, H, W) in [0, 1]
            terms = losses(model, critic, b["x0"], b["x1"], b["x2"], mix_coefficients(3 * len(b["x0"]), alphas),
                           config)
            opt_ae.zero_grad(set_to_none=True)
            opt_critic.zero_grad(set_to_none=True)
            terms.total.backward()
            opt_ae.step()
            opt_critic.step()
            run.step_done(state, torch.stack([terms.ae, terms.recon, terms.adv, terms.critic]),
                          val=lambda: shared.val_loss(model, val, config.likelihood, bs, dev))
            bar.update(1)
            if run.step % run.every == 0:
                bar.set_postfix(loss=f"{run.curve[-1][1]:.2f}", critic=f"{run.curve[-1][4]:.4f}")
    return run.finish(state)


def load(config: Config, out_dir, device: str = "auto") -> AlphaVAE:
    """The selected autoencoder (the critic is kept in the checkpoints but not needed to predict)."""
    return shared.load_autoencoder(out_dir, FORMAT, "train acai first", device)


# The frame at tau decodes (1 - tau) z0 + tau z2 of the encoder means, as for every latent model.
predict = shared.predict
