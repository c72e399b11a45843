"""Training the alpha-VAE: its config and one loop over a stack of members, one member being the plain model.

`train(config)` (the train-inbetween CLI) and `train_ensemble(configs)` (the benchmark's batched alpha
sweep) run the same loop below: one member trains the AlphaVAE module itself (DistributedDataParallel
under torchrun); several members train as one inbetween.ensemble.StackedVAE on one batch stream. The
bookkeeping of each member (resume, validation schedule, selection and best.pt, log.csv, val.csv,
summary.json, the checkpoint format) is ibutil.run.TrainRun's, as for every learned method.
"""

from __future__ import annotations

import functools
import gc
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ibdata.triplets import TripletDataset, normalize_gaps, val_dataset
from ibutil.device import resolve_device
from ibutil.errors import UserError
from ibutil.flops import epoch_accounting, training_step_flops
from ibutil.io import read_checkpoint as read_file
from ibutil.preempt import Preempted, StopFlag
from ibutil.run import CHECKPOINT_NAME, NO_VAL, TrainRun, all_reduce_step, epoch_order, planned_steps
from ibutil.selection import EVAL_EVERY, MIN_DELTA, PATIENCE, Selection
from inbetween.ensemble import StackedVAE, keep_rows, member_optimizer_state, stack_optimizer_states, stacked_adam
from inbetween.vae import KL_FORMS, LIKELIHOODS, AlphaVAE, LossTerms, VAEConfig, alpha_vae_loss, loss_terms, num_params

NAME = "alpha-vae"  # the method name in summary.json
FORMAT = "alpha-vae"  # checkpoint.pt and best.pt: ibutil.run.TrainRun's layout
RETIRED = ("inbetween-alpha-vae-checkpoint", "inbetween-alpha-vae-ensemble-checkpoint")  # older releases' formats
NOT_FOR_SELECTION = ("train", "test", "heldout")  # the fitted split and the scored ones
DTYPES = {"fp32": None, "bf16": torch.bfloat16}  # None: no autocast
# Fields that may change when a run resumes: they say how long, how loudly and where (a run folder
# may be moved or copied) to train, not what.
RESUMABLE_CHANGES = ("epochs", "steps", "budget_gflop", "resume", "progress", "checkpoint_every", "out_dir")
MEMBER_FIELDS = ("alpha", "kl_form", "seed", "out_dir")  # what may differ between the members of an ensemble
TERMS = ("loss", "recon", "kl", "d")  # the fields of LossTerms
LOG_COLUMNS = tuple(f"train_{k}" for k in TERMS)  # log.csv: step and these


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run; recorded as JSON in every checkpoint."""

    data: str  # path to an HDF5 v1 file written by render-dataset (train/ and test/ splits)
    out_dir: str = "runs/alpha-vae"  # checkpoint.pt and log.csv are written here
    gaps: tuple[int, ...] = (1,)  # frame gaps k of the triplets (t-k, t, t+k); several mix them in one run
    alpha: float = 1.0  # weight of the in-between divergence D; 0 trains three plain VAEs
    kl_form: str = "avg-gaussian"  # D: avg-gaussian, mixture or jensen (docs/method.md)
    likelihood: str = "bernoulli"  # reconstruction likelihood: bernoulli (BCE) or gaussian (MSE, sigma 0.1)
    mixture_samples: int = 1  # Monte Carlo draws per triplet for kl_form="mixture"
    latent: int = 128  # latent size (128 = the paper-size model)
    width: float = 1.0  # channel multiplier (1.0 = the paper, ~27.5 M parameters at 32x32)
    epochs: int = 20  # passes over the training triplets (ignored when steps is set)
    steps: int | None = None  # train exactly this many optimiser steps instead of whole epochs
    batch_size: int = 64  # triplets per step (3x as many images go through the network)
    lr: float = 3e-4  # Adam learning rate
    seed: int = 0  # seeds the weights, the data order and the sampling noise
    device: str = "auto"  # auto (cuda if available, else cpu), cpu, cuda or cuda:N
    dtype: str = "fp32"  # fp32, or bf16 autocast for the convolutions (heads and loss stay fp32)
    checkpoint_every: int = 0  # also checkpoint every this many steps (0: at each evaluation and the end)
    val_split: str = "val"  # split whose loss selects the step (best.pt) and stops early; "none": the last step
    eval_every: int = EVAL_EVERY  # evaluate on val_split every this many steps, and at the last step
    patience: int = PATIENCE  # stop after this many evaluations in a row without a new best (0: never stop early)
    min_delta: float = MIN_DELTA  # a new best must be lower than the old by more than this (nats per triplet)
    budget_gflop: float | None = None  # train floor(budget / FLOPs per step) steps instead of epochs or steps
    log_test: bool = True  # also score the whole test split at each evaluation (val.csv's test_* columns)
    resume: bool = False  # continue from out_dir/checkpoint.pt instead of refusing to overwrite it
    progress: bool = True  # show a tqdm progress bar with the running loss

    def __post_init__(self):
        def bad(msg):
            raise UserError(msg)

        if not isinstance(self.data, (str, os.PathLike)) or not str(self.data):
            bad(f"data must be the path of an HDF5 dataset file, got {self.data!r}")
        object.__setattr__(self, "data", str(self.data))
        object.__setattr__(self, "out_dir", str(self.out_dir))
        object.__setattr__(self, "gaps", normalize_gaps(self.gaps))
        if not _finite(self.alpha) or self.alpha < 0:
            bad(f"alpha must be a finite number >= 0 (0 = plain VAE), got {self.alpha!r}")
        if self.kl_form not in KL_FORMS:
            bad(f"unknown kl_form {self.kl_form!r}; choose one of {', '.join(KL_FORMS)}")
        if self.likelihood not in LIKELIHOODS:
            bad(f"unknown likelihood {self.likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
        for name in ("mixture_samples", "latent", "epochs", "batch_size"):
            if not _posint(getattr(self, name)):
                bad(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.steps is not None and not _posint(self.steps):
            bad(f"steps must be a positive integer or None (then epochs count), got {self.steps!r}")
        if not _finite(self.width) or self.width <= 0:
            bad(f"width must be a positive number (1.0 = the paper), got {self.width!r}")
        if not _finite(self.lr) or self.lr <= 0:
            bad(f"lr must be a positive number (e.g. 3e-4), got {self.lr!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            bad(f"seed must be an integer >= 0, got {self.seed!r}")
        dev = self.device
        if not (isinstance(dev, str) and (dev in ("auto", "cpu", "cuda") or
                                          (dev.startswith("cuda:") and dev[5:].isdigit()))):
            bad(f"unknown device {dev!r}; choose auto, cpu, cuda or cuda:N")
        if self.dtype not in DTYPES:
            bad(f"unknown dtype {self.dtype!r}; choose {' or '.join(DTYPES)}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            bad(f"checkpoint_every must be an integer >= 0 (0 = at evaluations), got {self.checkpoint_every!r}")
        if not isinstance(self.val_split, str) or not self.val_split:
            bad(f"val_split must name a split of the file (e.g. 'val') or be 'none', got {self.val_split!r}")
        if self.val_split in NOT_FOR_SELECTION:
            bad(f"val_split must not be the {self.val_split} split: selection looks only at held-out "
                "validation data, never at training or scored data; use 'val' or 'none'")
        if not isinstance(self.log_test, bool):
            bad(f"log_test must be True or False, got {self.log_test!r}")
        if not _posint(self.eval_every):
            bad(f"eval_every must be a positive integer (steps), got {self.eval_every!r}")
        Selection(self.patience, self.min_delta)  # validates both
        if self.budget_gflop is not None:
            if not _finite(self.budget_gflop) or self.budget_gflop <= 0:
                bad(f"budget_gflop must be a positive number of GFLOP or None, got {self.budget_gflop!r}")
            if self.steps is not None:
                bad("give steps or budget_gflop, not both: a budget sets the number of steps")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _posint(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


class NonFiniteLoss(UserError):
    """The loss became NaN or inf; training stopped before the bad step changed any weight."""


def shared_key(config: TrainConfig) -> tuple:
    """What members of one ensemble must share: every TrainConfig field but MEMBER_FIELDS, progress, resume
    and checkpoint_every. Group a sweep's configs by this key; each group can train as one ensemble."""
    return tuple((f.name, getattr(config, f.name)) for f in fields(TrainConfig)
                 if f.name not in MEMBER_FIELDS + ("progress", "resume", "checkpoint_every"))


def check_members(configs: Sequence[TrainConfig]) -> list[TrainConfig]:
    """The configs as a list; UserError unless they can train together."""
    configs = list(configs)
    if not configs:
        raise UserError("an ensemble needs at least one TrainConfig")
    key = shared_key(configs[0])
    for c in configs[1:]:
        if shared_key(c) != key:
            diff = [a for (a, x), (_, y) in zip(key, shared_key(c)) if x != y]
            raise UserError(f"ensemble members must share everything but {', '.join(MEMBER_FIELDS)}; "
                            f"these differ: {', '.join(diff)}")
    dirs = [str(Path(c.out_dir).resolve()) for c in configs]
    if len(set(dirs)) != len(dirs):
        raise UserError("ensemble members need distinct out_dir folders")
    return configs


# ----------------------------------------------------------------------------- model, loss, evaluation


def build_model(config: TrainConfig, image_size: int) -> AlphaVAE:
    """A freshly initialised model on the CPU; its weights depend only on config.seed."""
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's global RNG
        torch.manual_seed(config.seed)
        return AlphaVAE(VAEConfig(image_size=image_size, latent=config.latent, width=config.width))


def make_optimizer(model: AlphaVAE, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam. The fused kernel (CPU and CUDA) is ~3x faster than the default on the 27.5 M parameters."""
    return torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)


def autocast(device: torch.device, dtype: str):
    """bf16 autocast for the convolutions when dtype is bf16; a no-op context for fp32."""
    amp = DTYPES[dtype]
    return torch.autocast(device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None)


def member_terms(x, logits, mu, logvar, config: TrainConfig, generator: torch.Generator | None) -> LossTerms:
    """One member's loss from its outputs on the stacked triplets x (3B, 3, H, W), with its alpha and KL form."""
    return loss_terms(x, logits, mu, logvar, config.alpha, config.kl_form, config.likelihood, generator,
                      config.mixture_samples)


def member_losses(net, x: torch.Tensor, configs: Sequence[TrainConfig], generators: Sequence[torch.Generator],
                  dtype: str) -> list[LossTerms]:
    """The loss of every member on x (3B, 3, H, W) in [0, 1] (frames 0, 1, 2 of B triplets).

    net: a StackedVAE of len(configs) members, or one AlphaVAE (possibly DDP-wrapped) for one member.
    Each member draws its sampling noise from its own generator."""
    with autocast(x.device, dtype):
        if isinstance(net, StackedVAE):
            logits, mu, logvar = net(x, generators)  # (M, 3B, 3, H, W), (M, 3B, L) x 2
        else:
            logits, mu, logvar = (t[None] for t in net(x, generators[0]))
        return [member_terms(x, logits[r], mu[r], logvar[r], c, g) for r, (c, g) in enumerate(zip(configs, generators))]


def compute_loss(model: AlphaVAE, batch: dict, config: TrainConfig, generator: torch.Generator,
                 dtype: str | None = None) -> LossTerms:
    """The alpha-VAE loss of one model on one batch of triplets (x0, x1, x2 each (B, 3, H, W) in [0, 1])."""
    x = torch.cat([batch["x0"], batch["x1"], batch["x2"]])  # (3B, 3, H, W)
    return member_losses(model, x, [config], [generator], dtype or config.dtype)[0]


@torch.no_grad()
def evaluate(model: AlphaVAE, dataset: TripletDataset, config: TrainConfig, device: torch.device) -> dict:
    """Mean loss terms per triplet over a whole split, in fp32 with fixed noise (comparable across evaluations)."""
    gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    sums, n = dict.fromkeys(TERMS, 0.0), 0
    for start in range(0, len(dataset), config.batch_size):
        idx = np.arange(start, min(start + config.batch_size, len(dataset)))
        terms = compute_loss(model, dataset.batch(idx, device), config, gen, dtype="fp32")
        for key in sums:
            sums[key] += getattr(terms, key).item() * len(idx)
        n += len(idx)
    return {key: value / n for key, value in sums.items()}


def flops_per_step(config: TrainConfig, image_size: int) -> int:
    """FLOPs of one training step on the global batch (forward + backward; optimiser excluded; ibutil.flops)."""
    return _flops_per_step(VAEConfig(image_size=image_size, latent=config.latent, width=config.width),
                           config.batch_size, config.kl_form, config.likelihood, config.mixture_samples)


@functools.lru_cache(maxsize=64)  # one count per model and batch shape
def _flops_per_step(vae: VAEConfig, batch_size: int, kl_form: str, likelihood: str, mixture_samples: int) -> int:
    def loss(model: AlphaVAE) -> torch.Tensor:
        x0, x1, x2 = (torch.rand(batch_size, 3, vae.image_size, vae.image_size) for _ in range(3))
        return alpha_vae_loss(model, x0, x1, x2, alpha=1.0, kl_form=kl_form, likelihood=likelihood,
                              mixture_samples=mixture_samples).loss
    return training_step_flops(lambda: AlphaVAE(vae), loss)


# ----------------------------------------------------------------------------- checkpoints


def read_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict:
    """The raw checkpoint dict (checkpoint.pt or best.pt, validated), tensors mapped to `device`."""
    return read_file(path, FORMAT, device, what="alpha-VAE", hint="give a checkpoint.pt or best.pt written by "
                     "inbetween.train", retired=RETIRED)


def checkpoint_config(path: str | os.PathLike) -> TrainConfig:
    """The TrainConfig a checkpoint was trained with."""
    raw = read_checkpoint(path)["meta"]["config"]
    return TrainConfig(**{**raw, "gaps": tuple(raw["gaps"])})


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> AlphaVAE:
    """Rebuild the model of a checkpoint exactly, on `device`, in eval mode."""
    payload = read_checkpoint(path, device)
    model = AlphaVAE(VAEConfig(**payload["meta"]["model_config"]))
    model.load_state_dict(payload["state"]["model"])
    return model.to(device).eval()


# ----------------------------------------------------------------------------- DDP


def rank_share(batch: np.ndarray, rank: int, world: int) -> tuple[np.ndarray, float]:
    """This rank's triplets of a global batch and the weight of their mean loss.

    The share is DistributedSampler's rank::world striding. The weight len(share) * world / len(batch)
    makes DDP's average over ranks the mean over the global batch even when an epoch's last batch
    does not split evenly; it is exactly 1.0 for full batches and on one process. A rank whose share
    is empty (a last batch smaller than the world) takes one triplet at weight 0, so it still joins
    the gradient all-reduce.
    """
    share = batch[rank::world]
    if len(share) == 0:
        return batch[:1], 0.0
    return share, len(share) * world / len(batch)


def rank_seed(seed: int, rank: int) -> int:
    """The sampling-noise seed of one process: the run's seed on rank 0, a derived one elsewhere."""
    return seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def _join_group(config: TrainConfig, device: torch.device) -> tuple[int, int, torch.device, bool]:
    """Under torchrun (WORLD_SIZE > 1): join the process group (gloo on CPU, nccl on CUDA, one GPU per process
    by LOCAL_RANK). Returns rank, world size, this rank's device and whether this call created the group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device, False
    if config.batch_size % world:
        raise UserError(f"batch_size {config.batch_size} must be divisible by the {world} processes")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device, owns


def _barrier(device: torch.device) -> None:
    """dist.barrier; with nccl it names this rank's GPU, which nccl would otherwise guess from the rank."""
    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()


def _leave_group(device: torch.device) -> None:
    """Wait for rank 0's last write, then free the process group this run created."""
    _barrier(device)  # rank 0's last checkpoint is written before anyone leaves
    # DDP's reducer holds the process group inside a reference cycle: collect it now, or the
    # group is freed during interpreter shutdown, which aborted a rank ("terminate called
    # without an active exception", exit -6) in 5 of 80 two-process gloo runs here (0 of 140
    # with this collection; docs/scale.md).
    gc.collect()
    dist.destroy_process_group()


# ----------------------------------------------------------------------------- the loop


def train(config: TrainConfig) -> AlphaVAE:
    """Train one alpha-VAE as `config` says and return the selected model (on config's device, eval mode).

    The loop of train_ensemble with one member: out_dir gets checkpoint.pt (at each evaluation, every
    checkpoint_every steps and at the end), best.pt, log.csv, val.csv and summary.json (ibutil.run.TrainRun).
    Same config and seed -> the same weights.

    Under torchrun (WORLD_SIZE > 1) it trains with DistributedDataParallel: gloo on CPU, nccl on CUDA.
    Each global batch of batch_size triplets is split across the processes (rank_share, weighted so
    uneven last batches count right), so the averaged gradient is the single-process one but for the
    sampling noise, which each rank draws from its own seed (rank_seed). Rank 0 evaluates and writes;
    a checkpoint holds every rank's noise state, so a DDP run resumed with the same number of processes
    continues exactly. A stop signal on any rank travels in the step's loss all-reduce, so all ranks stop
    after the same step.
    """
    return train_ensemble([config])[0]


def train_ensemble(configs: Sequence[TrainConfig], data_seed: int | None = None) -> list[AlphaVAE]:
    """Train the models of `configs` on one batch stream; returns each member's selected model (eval mode).

    configs: TrainConfigs that differ only in alpha, kl_form, seed (the model seed) and out_dir. One
        config trains the AlphaVAE itself; several train as one StackedVAE (inbetween.ensemble), each
        member equal to its model trained alone within float rounding (tests/test_ensemble.py).
    data_seed: seeds the batch order, shared by all members; None means the members' common seed.

    Each member is seeded (weights, sampling noise) by its own seed and has its own Adam moments and
    its own TrainRun in its out_dir: every eval_every steps (and at the last step) its val_split loss
    (`evaluate`, fixed noise) selects best.pt; a member out of patience stops early and leaves the stack
    (its weights freeze, the others go on). Resuming (resume=True) continues every member from its own
    checkpoint.pt exactly. SIGTERM or SIGINT: the current step finishes, every training member writes
    checkpoint.pt and summary.json (preempted), and ibutil.preempt.Preempted is raised. A member whose
    loss turns NaN or inf leaves before that update (its last checkpoint is kept); the others train on,
    then NonFiniteLoss names it.
    """
    configs = check_members(configs)
    c = configs[0]
    if data_seed is None:
        if len({m.seed for m in configs}) > 1:
            raise UserError("members with different seeds must share an explicit data_seed (the batch order)")
        data_seed = c.seed
    if not isinstance(data_seed, int) or isinstance(data_seed, bool) or data_seed < 0:
        raise UserError(f"data_seed must be an integer >= 0, got {data_seed!r}")
    device = resolve_device(c.device)
    if c.dtype == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("this GPU does not support bf16; use dtype='fp32'")
    if len(configs) > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("an ensemble trains in one process; run one model per torchrun")
    train_set = TripletDataset(c.data, "train", c.gaps)
    test_set = TripletDataset(train_set.header, "test", c.gaps) if c.log_test else None  # the header read once
    val_set = val_dataset(train_set.header, c.val_split, c.gaps)  # None: no selection (val_split "none")
    rank, world, device, owns_group = _join_group(c, device)

    size, n, bs = train_set.image_size, len(train_set), c.batch_size
    runs, models, optimisers, generators = [], [], [], []
    for m in configs:
        epochs = epoch_accounting(lambda b, m=m: flops_per_step(replace(m, batch_size=b), size), n, bs)
        steps = m.steps if m.steps is not None else m.epochs * epochs["epoch_steps"]
        model = build_model(m, size).to(device)
        runs.append(TrainRun(
            m.out_dir, method=NAME, fmt=FORMAT, retired=RETIRED, columns=LOG_COLUMNS, dtype=m.dtype,
            identity={**{k: v for k, v in asdict(m).items() if k not in RESUMABLE_CHANGES}, "data_seed": data_seed},
            meta={"model_config": asdict(model.config), "config": asdict(m)}, params=num_params(model),
            flops_per_step=flops_per_step(m, size), budget_gflop=m.budget_gflop, lr=m.lr,
            planned_steps=planned_steps(steps, m.budget_gflop, flops_per_step(m, size), "the alpha-VAE", **epochs),
            val_split=m.val_split if val_set is not None else None, evaluate=val_set is not None or m.log_test,
            eval_every=m.eval_every, patience=m.patience, min_delta=m.min_delta,
            checkpoint_every=m.checkpoint_every, **epochs))
        models.append(model)
        optimisers.append(make_optimizer(model, m))
        generators.append(torch.Generator(device=device).manual_seed(rank_seed(m.seed, rank)))  # sampling noise
        runs[-1].resume({"model": model, "optimiser": optimisers[-1], "generator": generators[-1]}, allowed=m.resume)
    if len({r.planned for r in runs}) > 1:
        raise UserError(f"budget_gflop buys the members different step counts ({[r.planned for r in runs]}); "
                        "train them as separate ensembles or give steps")
    if world > 1:
        _barrier(device)  # every rank has checked its out_dir before rank 0 writes into it
    active = [j for j, run in enumerate(runs) if run.running]  # members in the stack, in stack order
    if len({runs[j].step for j in active}) > 1:
        raise UserError("the members' checkpoints hold different steps; resume them one by one")
    step, per_epoch = (runs[active[0]].step if active else 0), runs[0].epochs["epoch_steps"]
    selected: list[AlphaVAE | None] = [None] * len(configs)

    # The network: one member trains its AlphaVAE (DDP syncs the gradients of several processes), several a
    # StackedVAE made from their (possibly resumed) weights and Adam moments.
    probe = None  # several members: one AlphaVAE that holds one stack row at a time (checkpoints, evaluation)
    if len(configs) == 1:
        net, optimiser = (DistributedDataParallel(models[0]) if world > 1 else models[0]), optimisers[0]
    else:
        net = optimiser = None
        if active:
            net = StackedVAE.from_states(models[0].config, [models[j].state_dict() for j in active], device)
            optimiser = stacked_adam(net, c.lr)
            stack_optimizer_states(optimiser, net, [optimisers[j].state_dict() for j in active])
        probe, models, optimisers = models[0], None, None  # the stack holds them now

    def member(r: int) -> dict:
        """Stack row r's training state as a TrainRun saves it: model, Adam (its slice of the stack's), noise."""
        j = active[r]
        if probe is None:
            return {"model": models[0], "optimiser": optimiser, "generator": generators[j]}
        probe.load_state_dict(net.member_state(r))
        adam = make_optimizer(probe, configs[j])
        adam.load_state_dict(member_optimizer_state(optimiser, net, r))
        return {"model": probe, "optimiser": adam, "generator": generators[j]}

    def evaluation(r: int) -> dict:
        """Member r's val loss terms (selection) and, with log_test, its test loss terms: val.csv's columns."""
        model, m = member(r)["model"], configs[active[r]]
        model.eval()
        out = {f"{name}_{k}": v for name, split in (("val", val_set), ("test", test_set)) if split is not None
               for k, v in evaluate(model, split, m, device).items()}
        model.train()
        return out

    def finish(r: int) -> None:
        """Member r is done (finished or stopped early): last checkpoint and summary; keep its selected model."""
        state = member(r)
        runs[active[r]].finish(state)  # state["model"] now holds the selected weights
        selected[active[r]] = state["model"] if state["model"] is not probe else _copy(probe)

    nonfinite = []
    with StopFlag() as stop, tqdm(total=runs[0].planned, initial=step, unit="step", leave=False,
                                  desc=NAME if len(configs) == 1 else f"{NAME} x{len(configs)}",
                                  disable=not c.progress or rank > 0) as bar:
        t_last = time.perf_counter()
        while active:
            epoch, i = divmod(step, per_epoch)
            idx, weight = rank_share(epoch_order(data_seed, epoch, n)[i * bs:(i + 1) * bs], rank, world)
            batch = train_set.batch(idx, device)  # x0, x1, x2: (b, 3, H, W) in [0, 1]
            x = torch.cat([batch["x0"], batch["x1"], batch["x2"]])  # (3b, 3, H, W)
            gens = [generators[j] for j in active]
            saved = [g.get_state() for g in gens]  # to replay this step if a member's loss is not finite
            terms = member_losses(net, x, [configs[j] for j in active], gens, c.dtype)
            values = torch.stack([torch.stack([getattr(t, k).detach() for k in TERMS]) for t in terms]) * weight
            # The global batch's means (DDP) and any rank's stop signal, read once: a later signal acts next step.
            values, stopping = all_reduce_step(values, stop.requested)
            values = values.tolist()  # one device sync per step; the loss must be checked before the update
            bad = [r for r, v in enumerate(values) if not math.isfinite(v[0])]
            if bad:  # those members leave before the update; the others redo the step
                for g, s in zip(gens, saved):
                    g.set_state(s)
                nonfinite += [_nonfinite_message(configs[active[r]], values[r][0], step + 1, per_epoch) for r in bad]
                del terms
                net, optimiser = _leave(net, optimiser, active, bad)
                continue
            optimiser.zero_grad(set_to_none=True)
            (torch.stack([t.loss for t in terms]).sum() * weight).backward()  # members' weights are disjoint
            optimiser.step()
            step += 1
            now = time.perf_counter()
            for r, j in enumerate(active):
                runs[j].charge((now - t_last) / len(active))
                runs[j].step_done(lambda r=r: member(r), torch.tensor(values[r]), val=lambda r=r: evaluation(r),
                                  stop=False)
            t_last = now
            bar.update(1)
            bar.set_postfix(loss=f"{values[0][0]:.2f}")
            done = [r for r, j in enumerate(active) if not runs[j].running]  # stopped early, or the last step
            for r in done:
                finish(r)
            net, optimiser = _leave(net, optimiser, active, done)
            if stopping and active:  # else the run ended normally now
                for r, j in enumerate(active):
                    runs[j].stop(lambda r=r: member(r))
                if owns_group:
                    _leave_group(device)
                raise Preempted(stop.signum or signal.SIGTERM, step, Path(configs[active[0]].out_dir) / CHECKPOINT_NAME)
    if owns_group:
        _leave_group(device)
    if nonfinite:
        raise NonFiniteLoss("; ".join(nonfinite))
    for j, run in enumerate(runs):  # members that had finished before this call: their selected checkpoint
        if selected[j] is None:
            selected[j] = load_checkpoint(Path(configs[j].out_dir) / run.summary("finished").selected_checkpoint)
    return [m.to(device).eval() for m in selected]


def _leave(net, optimiser, active: list[int], rows: list[int]):
    """Take stack rows `rows` out of the training members (`active`, in place), the stack and its Adam."""
    if not rows:
        return net, optimiser
    keep = [r for r in range(len(active)) if r not in rows]
    active[:] = [active[r] for r in keep]
    if isinstance(net, StackedVAE) and keep:
        optimiser = keep_rows(optimiser, net, keep)
    return net, optimiser


def _copy(model: AlphaVAE) -> AlphaVAE:
    """A new AlphaVAE with model's weights, on its device."""
    out = AlphaVAE(model.config).to(next(model.parameters()).device)
    out.load_state_dict(model.state_dict())
    return out


def _nonfinite_message(config: TrainConfig, loss: float, step: int, per_epoch: int) -> str:
    path = Path(config.out_dir) / CHECKPOINT_NAME
    if path.exists():
        last = f"the last good checkpoint {path} (step {read_checkpoint(path)['step']}) is kept; resume from it"
    else:
        last = "no checkpoint had been written yet"
    return (f"{config.out_dir}: loss became {loss} at step {step} (epoch {(step - 1) // per_epoch + 1}); training "
            f"stopped before that update, {last} with a lower lr or dtype='fp32'")
