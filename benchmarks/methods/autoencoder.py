"""autoencoder: the alpha-VAE's architecture trained as a plain deterministic autoencoder; decodes (1-tau) z0 + tau z2.

It isolates what the VAE's noise, prior and alpha term add: the encoder's mean head is the code
(its log-variance head is frozen and unused), no sampling, and the loss is only the alpha-VAE's
reconstruction term, summed over x0, x1 and x2 of each training triplet. Selection: the same loss
on every val triplet, every eval_every steps (best.pt; patience evaluations without a new best stop).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from benchmarks.methods import latent_models as shared
from benchmarks.methods.interface import TrainSpec, TrainSummary
from benchmarks.methods.latent_models import reconstruction_loss as loss  # module-level: the step's loss
from ibdata.triplets import TripletDataset, val_dataset
from ibutil.device import resolve_device
from ibutil.errors import UserError
from ibutil.flops import epoch_accounting, training_step_flops
from ibutil.run import TrainRun, epoch_order, planned_steps
from inbetween.vae import LIKELIHOODS, AlphaVAE, num_params

NAME = "autoencoder"
TRAINS = True
SEEDED = True
QUICK = shared.QUICK  # the same tiny architecture as the alpha-VAE under --quick
DEMO = shared.DEMO  # and under --demo
SHARED = shared.SHARED  # --width and --latent: one architecture for every latent model
FORMAT = "autoencoder"


@dataclass(frozen=True)
class Config:
    """Architecture and optimiser; the defaults are every latent model's (benchmarks/methods/latent_models.py)."""

    latent: int = shared.LATENT  # latent size
    width: float = shared.WIDTH  # channel multiplier (1.0 = the paper)
    lr: float = shared.LR  # Adam learning rate (constant)
    likelihood: str = shared.LIKELIHOOD  # reconstruction loss: bernoulli (BCE) or gaussian (MSE)

    def __post_init__(self):
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise UserError(f"autoencoder lr must be a positive number, got {self.lr!r}")
        if self.likelihood not in LIKELIHOODS:
            raise UserError(f"unknown likelihood {self.likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")


def label(config: Config) -> str:
    return NAME


def build(config: Config, image_size: int, seed: int) -> AlphaVAE:
    """A fresh model on the CPU, its weights fixed by `seed`; the log-variance head is frozen (unused)."""
    return shared.build_autoencoder(config.latent, config.width, image_size, seed)


@functools.lru_cache(maxsize=64)  # one count per config and batch shape
def step_flops(config: Config, image_size: int, batch_size: int) -> int:
    """FLOPs of one training step of batch_size triplets (forward + backward; optimiser excluded; ibutil.flops)."""
    def batch_loss(model: AlphaVAE) -> torch.Tensor:
        x0, x1, x2 = (torch.rand(batch_size, 3, image_size, image_size) for _ in range(3))
        return loss(model, x0, x1, x2, config.likelihood)
    return training_step_flops(lambda: build(config, image_size, 0), batch_loss)


def train(config: Config, spec: TrainSpec, out_dir, *, device: str = "auto", progress: bool = True) -> TrainSummary:
    """Minimise the reconstruction loss of x0, x1, x2 on training triplets, select on spec.val_split.

    Epochs in an order fixed by (seed, epoch); constant-lr Adam. out_dir gets checkpoint.pt (resumed
    if present), best.pt, log.csv, val.csv and summary.json (ibutil.run.TrainRun).
    """
    dev = resolve_device(device)
    data = TripletDataset(spec.data, "train", spec.gaps)
    val = val_dataset(data.header, spec.val_split, spec.gaps)  # None: no selection; the header read once
    model = build(config, data.image_size, spec.seed).to(dev).train()
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    n, bs = len(data), spec.batch_size
    flops = step_flops(config, data.image_size, bs)
    epochs = epoch_accounting(lambda b: step_flops(config, data.image_size, b), n, bs)  # the data go in epochs
    run = TrainRun(out_dir, method=NAME, fmt=FORMAT, identity={"config": asdict(config), "spec": spec.resume_identity()},
                   meta={"model_config": asdict(model.config)}, params=num_params(model), flops_per_step=flops,
                   planned_steps=planned_steps(spec.steps, spec.budget_gflop, flops, NAME, **epochs), lr=config.lr,
                   val_split=spec.val_split if val is not None else None, eval_every=spec.eval_every,
                   patience=spec.patience, min_delta=spec.min_delta, budget_gflop=spec.budget_gflop,
                   checkpoint_every=spec.checkpoint_every, **epochs)
    state = {"model": model, "optimiser": optimiser}  # the data order is a function of (seed, epoch): no RNG state
    run.resume(state)
    with run.stop_flag(), tqdm(total=run.planned, initial=run.step, desc=NAME, disable=not progress,
                               leave=False) as bar:
        while run.running:
            epoch, i = divmod(run.step, epochs["epoch_steps"])
            b = data.batch(epoch_order(spec.seed, epoch, n)[i * bs:(i + 1) * bs], dev)  # x0, x1, x2: (b, 3, H, W) in [0, 1]
            value = loss(model, b["x0"], b["x1"], b["x2"], config.likelihood)
            optimiser.zero_grad(set_to_none=True)
            value.backward()
            optimiser.step()
            run.step_done(state, value, val=lambda: shared.val_loss(model, val, config.likelihood, bs, dev))
            bar.update(1)
            if run.step % run.every == 0:
                bar.set_postfix(loss=f"{run.last_loss:.2f}")
    return run.finish(state)


def load(config: Config, out_dir, device: str = "auto") -> AlphaVAE:
    """The selected model of a finished run in out_dir (best.pt; checkpoint.pt without selection)."""
    return shared.load_autoencoder(out_dir, FORMAT, "train the autoencoder first", device)


# The frame at tau decodes (1 - tau) z0 + tau z2 of the encoder means, as for every latent model.
predict = shared.predict
