"""Training the alpha-VAE: the config, the loop, validation selection, compute accounting and resumable checkpoints."""

from __future__ import annotations

import csv
import functools
import gc
import json
import math
import os
import signal
import time
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ibutil.flops import epoch_accounting, flops_of_steps, steps_for_budget, training_step_flops
from ibutil.preempt import Preempted, StopFlag
from ibutil.run import FLOPS_COUNTED, TrainSummary, package_version, write_summary
from ibutil.selection import EVAL_EVERY, MIN_DELTA, PATIENCE, Selection
from inbetween.data import TripletDataset, normalize_gaps
from inbetween.vae import KL_FORMS, LIKELIHOODS, AlphaVAE, LossTerms, VAEConfig, alpha_vae_loss, num_params
from ibutil.device import resolve_device
from ibutil.errors import UserError
from ibutil.io import read_checkpoint as _read, torch_save_atomic, write_text_atomic
from render.h5format import open_dataset

CHECKPOINT_FORMAT = "inbetween-alpha-vae-checkpoint"
CHECKPOINT_NAME = "checkpoint.pt"  # the last state, resumable
BEST_NAME = "best.pt"  # the weights of the selected step (lowest val loss), loadable by load_checkpoint
LOG_NAME = "log.csv"
VAL_LOG_NAME = "val.csv"  # one row per validation evaluation
NO_VAL = "none"  # val_split value that turns selection off (the last step is selected)
NOT_FOR_SELECTION = ("train", "test", "heldout")  # the fitted split and the scored ones
DTYPES = {"fp32": None, "bf16": torch.bfloat16}  # None: no autocast
# Fields that may change when a run resumes: they say how long, how loudly and where (a run folder
# may be moved or copied) to train, not what.
RESUMABLE_CHANGES = ("epochs", "steps", "budget_gflop", "resume", "progress", "checkpoint_every", "out_dir")
TERMS = ("loss", "recon", "kl", "d")  # the fields of LossTerms, logged for train and test


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
    checkpoint_every: int = 0  # also checkpoint every this many steps (0: only at the end of each epoch)
    val_split: str = "val"  # split whose loss selects the step (best.pt) and stops early; "none": the last step
    eval_every: int = EVAL_EVERY  # evaluate on val_split every this many steps, and at the last step
    patience: int = PATIENCE  # stop after this many evaluations in a row without a new best (0: never stop early)
    min_delta: float = MIN_DELTA  # a new best must be lower than the old by more than this (nats per triplet)
    budget_gflop: float | None = None  # train floor(budget / FLOPs per step) steps instead of epochs or steps
    log_test: bool = True  # score the whole test split at each epoch's end (log.csv's test_* columns; off: blank)
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
            bad(f"checkpoint_every must be an integer >= 0 (0 = end of each epoch), got {self.checkpoint_every!r}")
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



# ----------------------------------------------------------------------------- one step


def build_model(config: TrainConfig, image_size: int) -> AlphaVAE:
    """A freshly initialised model on the CPU; its weights depend only on config.seed."""
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's global RNG
        torch.manual_seed(config.seed)
        return AlphaVAE(VAEConfig(image_size=image_size, latent=config.latent, width=config.width))


def make_optimizer(model: AlphaVAE, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam. The fused kernel (CPU and CUDA) is ~3x faster than the default on the 27.5 M parameters."""
    return torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)


def compute_loss(model: AlphaVAE, batch: dict, config: TrainConfig, generator: torch.Generator,
                 dtype: str | None = None) -> LossTerms:
    """The alpha-VAE loss of one batch of triplets, under bf16 autocast when the dtype asks for it."""
    amp = DTYPES[dtype or config.dtype]
    with torch.autocast(device_type=batch["x0"].device.type, dtype=amp or torch.float32, enabled=amp is not None):
        return alpha_vae_loss(model, batch["x0"], batch["x1"], batch["x2"], alpha=config.alpha,
                              kl_form=config.kl_form, likelihood=config.likelihood, generator=generator,
                              mixture_samples=config.mixture_samples)


@torch.no_grad()
def evaluate(model: AlphaVAE, dataset: TripletDataset, config: TrainConfig, device: torch.device) -> dict:
    """Mean loss terms per triplet over a whole split, in fp32 with fixed noise (comparable across epochs)."""
    gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    sums, n = dict.fromkeys(TERMS, 0.0), 0
    for start in range(0, len(dataset), config.batch_size):
        idx = np.arange(start, min(start + config.batch_size, len(dataset)))
        terms = compute_loss(model, dataset.batch(idx, device), config, gen, dtype="fp32")
        for key in sums:
            sums[key] += getattr(terms, key).item() * len(idx)
        n += len(idx)
    return {key: value / n for key, value in sums.items()}


def epoch_test(model: AlphaVAE, dataset: TripletDataset | None, config: TrainConfig, device: torch.device) -> dict:
    """log.csv's test columns at an epoch's end: evaluate() on the test split, or blanks when config.log_test is
    off (a wide model on a large test split spends more time scoring it every epoch than training; the benchmark
    selects on val and logs val.csv instead). dataset is None when no member logs test: it is never loaded."""
    return evaluate(model, dataset, config, device) if config.log_test else dict.fromkeys(TERMS, "")


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, model: AlphaVAE, optimizer, config: TrainConfig, step: int,
                    noise_states: list[torch.Tensor], epoch_sums: dict, run: dict | None = None,
                    summary: TrainSummary | None = None) -> None:
    """Write everything needed to restore or resume atomically: a temp file, then os.replace.

    noise_states: every rank's sampling-noise generator state, rank 0 first (one entry without DDP).
    run: selection state, seconds so far and the early-stop flag (_fresh_run); summary: _summary's record.
    """
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": package_version(),
        "config": json.dumps(asdict(config), sort_keys=True),
        "model_config": asdict(model.config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "generator": noise_states[0],  # rank 0's, as in a single-process run
        "rank_generators": noise_states,  # (world,) ByteTensors, so every rank of a DDP run resumes exactly
        "epoch_sums": epoch_sums,
        "run": run if run is not None else _fresh_run(config),
        "summary": asdict(summary) if summary is not None else None,
    }
    torch_save_atomic(state, path)



def read_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict:
    """The raw checkpoint dict (validated), tensors mapped to `device`; UserError if it is not one."""
    return _read(path, CHECKPOINT_FORMAT, device, what="alpha-VAE",
                 hint="give a checkpoint.pt written by inbetween.train")


def checkpoint_config(path: str | os.PathLike) -> TrainConfig:
    """The TrainConfig a checkpoint was trained with."""
    return TrainConfig(**_config_from_json(read_checkpoint(path)["config"]))


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> AlphaVAE:
    """Rebuild the model of a checkpoint exactly, on `device`, in eval mode."""
    state = read_checkpoint(path, device)
    model = AlphaVAE(VAEConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def _config_from_json(text: str) -> dict:
    raw = json.loads(text)
    raw["gaps"] = tuple(raw["gaps"])
    return raw


# ----------------------------------------------------------------------------- the loop


LOG_COLUMNS = ("epoch", "step", "train_loss", "train_recon", "train_kl", "train_d",
               "test_loss", "test_recon", "test_kl", "test_d", "data_frac", "seconds")


def distributed_context() -> tuple[int, int]:
    """(rank, world size): from torchrun's RANK and WORLD_SIZE variables, else (0, 1)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


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


def train(config: TrainConfig) -> AlphaVAE:
    """Train the alpha-VAE as `config` says and return the selected model (on config's device, eval mode).

    Writes out_dir/checkpoint.pt at the end of each epoch (and every checkpoint_every steps) and
    appends one row per epoch to out_dir/log.csv. Same config and seed -> the same weights.

    Selection: every eval_every steps (and at the last step) the loss on val_split is evaluated
    with fixed noise (`evaluate`) and logged to val.csv; a new best (lower by more than min_delta)
    is written to best.pt, and after `patience` evaluations without one the run stops early. The
    returned model is the best.pt one (with val_split="none": the last step). summary.json records
    params, FLOPs, seconds, the selected step and the lr (the fields are listed in `_summary`).

    Preemption: SIGTERM or SIGINT lets the current step finish, writes checkpoint.pt and raises
    ibutil.preempt.Preempted (exit code 143 / 130 in the CLIs); resume=True continues bit for bit.

    Under torchrun (WORLD_SIZE > 1) it trains with DistributedDataParallel: gloo on CPU, nccl on
    CUDA (one GPU per process, by LOCAL_RANK). Each global batch of batch_size triplets is split
    across the processes (rank_share, weighted so uneven last batches count right), so the averaged
    gradient is the single-process one but for the sampling noise, which each rank draws from its
    own seed (rank_seed). Only rank 0 evaluates, logs and writes checkpoints; a checkpoint holds every rank's noise state, so a DDP run resumed
    with the same number of processes continues exactly as if never stopped. A stop signal on any
    rank travels in the step's loss all-reduce and rank 0's early-stopping decision is broadcast, so
    all ranks stop after the same step.
    """
    rank, world = distributed_context()
    device = resolve_device(config.device)
    owns_group = False
    if world > 1:
        if config.batch_size % world:
            raise UserError(f"batch_size {config.batch_size} must be divisible by the {world} processes")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            owns_group = True
    if config.dtype == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("this GPU does not support bf16; use dtype='fp32'")
    train_set = TripletDataset(config.data, "train", config.gaps)
    test_set = TripletDataset(config.data, "test", config.gaps) if config.log_test else None
    val_set = val_dataset(config.data, config.val_split, config.gaps)  # None: no selection
    out = Path(config.out_dir)
    ckpt_path, log_path, best_path = out / CHECKPOINT_NAME, out / LOG_NAME, out / BEST_NAME
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create out_dir {out}: {exc.strerror}") from None

    model = build_model(config, train_set.image_size).to(device)
    optimizer = make_optimizer(model, config)
    gen = torch.Generator(device=device).manual_seed(rank_seed(config.seed, rank))  # the sampling noise
    step, epoch_sums, run = 0, _zero_sums(), _fresh_run(config)
    if ckpt_path.exists() or log_path.exists():
        if not config.resume:
            raise UserError(f"{out} already holds a run; pass resume=True to continue it or choose another out_dir")
        if ckpt_path.exists():
            step, epoch_sums, run = _restore(ckpt_path, config, model, optimizer, gen, device, rank, world)
    selection = Selection.from_state(run["selection"])
    if world > 1:
        _barrier(device)  # every rank has checked out_dir before rank 0 writes into it
    if rank == 0 and not log_path.exists():
        with open(log_path, "w", newline="") as fh:
            csv.writer(fh).writerow(LOG_COLUMNS)
    if rank == 0 and val_set is not None:
        _start_val_log(out / VAL_LOG_NAME, step)
    net = DistributedDataParallel(model) if world > 1 else model  # the same weights; DDP syncs gradients

    n, bs = len(train_set), config.batch_size
    # FLOPs of a full global batch (whatever the world size) and of an epoch's last, smaller one.
    flops = flops_per_step(config, train_set.image_size)
    epochs = epoch_accounting(lambda b: flops_per_step(replace(config, batch_size=b), train_set.image_size), n, bs)
    steps_per_epoch = epochs["epoch_steps"]
    if config.budget_gflop is not None:
        total = steps_for_budget(config.budget_gflop, flops, "the alpha-VAE", **epochs)
    else:
        total = config.steps if config.steps is not None else config.epochs * steps_per_epoch
    accounting = {"params": num_params(model), "flops_per_step": flops, "planned_steps": total}
    model.train()
    bar = tqdm(total=total, initial=min(step, total), unit="step", desc="alpha-vae", leave=False,
               disable=not config.progress or rank > 0)
    t_epoch = t_run = time.perf_counter()
    seconds_before = run["train_seconds"]

    def checkpoint():  # every rank calls it; rank 0 writes
        run["train_seconds"] = seconds_before + time.perf_counter() - t_run
        run["selection"] = selection.state_dict()
        _checkpoint(ckpt_path, model, optimizer, config, step, gen, epoch_sums, rank, world, run,
                    _summary(config, run, accounting, epochs, step, "in-progress"))

    with StopFlag() as stop:
        while step < total and not run["stopped_early"]:
            epoch, offset = divmod(step, steps_per_epoch)
            # The data order of an epoch depends only on (seed, epoch), so a resumed run sees the same batches.
            order = np.random.default_rng([config.seed, epoch]).permutation(n)
            for i in range(offset, steps_per_epoch):
                t0 = time.perf_counter()
                idx, weight = rank_share(order[i * bs:(i + 1) * bs], rank, world)
                batch = train_set.batch(idx, device)  # x0, x1, x2: (b, 3, H, W) in [0, 1]
                t1 = time.perf_counter()
                terms = compute_loss(net, batch, config, gen)
                stacked = torch.stack([getattr(terms, k).detach() for k in TERMS]) * weight  # (4,)
                preempt = stop.requested  # read once: a signal after this line is acted on next step
                if world > 1:
                    # The global batch's means, so every rank sees the same (finite or not) loss; the 5th
                    # entry counts the ranks that got a stop signal, so all of them stop after this step.
                    flag = torch.tensor([float(stop.requested)], device=stacked.device)
                    stacked = torch.cat([stacked, flag])  # (5,)
                    dist.all_reduce(stacked)
                    preempt = bool(stacked[4] > 0)
                    stacked = stacked[:4] / world
                # One device sync per step for all four numbers; the loss must be checked before the update.
                values = dict(zip(TERMS, stacked.tolist()))
                if not math.isfinite(values["loss"]):
                    bar.close()
                    raise NonFiniteLoss(_nonfinite_message(values["loss"], step + 1, epoch + 1, ckpt_path))
                optimizer.zero_grad(set_to_none=True)
                (terms.loss * weight).backward()
                optimizer.step()
                step += 1
                t2 = time.perf_counter()
                _accumulate(epoch_sums, values, t1 - t0, t2 - t0)
                bar.update(1)
                bar.set_postfix(loss=f"{epoch_sums['loss'] / epoch_sums['n']:.2f}")
                if config.checkpoint_every and step % config.checkpoint_every == 0:
                    checkpoint()
                if val_set is not None and (step % config.eval_every == 0 or step == total):
                    run["stopped_early"] = _select(model, val_set, config, device, selection, step, out,
                                                   rank, world)
                if preempt and step < total and not run["stopped_early"]:  # else the run ends normally now
                    bar.close()
                    checkpoint()
                    # A rank stopped by another rank's signal reports SIGTERM, what schedulers send.
                    exc = Preempted(stop.signum or signal.SIGTERM, step, ckpt_path)
                    if rank == 0:
                        write_summary(_summary(config, run, accounting, epochs, step, "preempted"), out)
                    if owns_group:
                        _leave_group(net, device)
                    raise exc
                if step == total or run["stopped_early"]:
                    break
            # End of an epoch (or of a steps-limited run): evaluate, log, checkpoint (rank 0 only).
            if rank == 0:
                model.eval()
                test = epoch_test(model, test_set, config, device)
                model.train()
                s = epoch_sums
                row = [f"{step / steps_per_epoch:.4g}", step] + [s[k] / s["n"] for k in TERMS] + \
                      [test[k] for k in TERMS] + \
                      [s["data_s"] / max(s["step_s"], 1e-12), f"{time.perf_counter() - t_epoch:.2f}"]
                with open(log_path, "a", newline="") as fh:
                    csv.writer(fh).writerow(row)
            epoch_sums, t_epoch = _zero_sums(), time.perf_counter()
            checkpoint()
    bar.close()
    if rank == 0:
        status = "stopped-early" if run["stopped_early"] else "finished"
        write_summary(_summary(config, run, accounting, epochs, step, status), out)
    if owns_group:
        _leave_group(net, device)
    if val_set is not None and selection.best_step is not None and rank == 0:
        model.load_state_dict(read_checkpoint(best_path, device)["model"])  # the selected weights
    return model.eval()


def _leave_group(net, device: torch.device) -> None:
    """Wait for rank 0's last write, then free the process group this run created."""
    _barrier(device)  # rank 0's last checkpoint is written before anyone leaves
    # DDP's reducer holds the process group inside a reference cycle: collect it now, or the
    # group is freed during interpreter shutdown, which aborted a rank ("terminate called
    # without an active exception", exit -6) in 5 of 80 two-process gloo runs here (0 of 140
    # with this collection; docs/scale.md).
    del net
    gc.collect()
    dist.destroy_process_group()


# ----------------------------------------------------------------------------- selection and accounting


def val_dataset(path: str | os.PathLike, split: str, gaps) -> TripletDataset | None:
    """The validation triplets of `split`; None for split "none"; UserError if the file has no such split."""
    if split == NO_VAL:
        return None
    with open_dataset(path) as f:
        present = isinstance(f.get(split), h5py.Group)
    if not present:
        raise UserError(f"{path} has no {split!r} split to select on; render a file with one, or pass "
                        f"val_split='{NO_VAL}' to train without selection (the last step is then used)")
    return TripletDataset(path, split, gaps)


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


def _fresh_run(config: TrainConfig) -> dict:
    """What a checkpoint carries beyond weights and optimiser: selection state, seconds, the stop reason."""
    return {"selection": Selection(config.patience, config.min_delta).state_dict(), "train_seconds": 0.0,
            "stopped_early": False}


def _select(model: AlphaVAE, val_set: TripletDataset, config: TrainConfig, device: torch.device,
            selection: Selection, step: int, out: Path, rank: int, world: int) -> bool:
    """Rank 0 evaluates val, keeps a new best in best.pt and logs; returns rank 0's early-stop decision on all ranks."""
    stop = False
    if rank == 0:
        model.eval()
        val = evaluate(model, val_set, config, device)
        model.train()
        if selection.update(step, val["loss"]):
            save_best(out / BEST_NAME, model, config, step, val["loss"])
        with open(out / VAL_LOG_NAME, "a", newline="") as fh:
            best = [] if selection.best_step is None else [selection.best_step, selection.best_loss]
            csv.writer(fh).writerow([step] + [val[k] for k in TERMS] + (best or ["", ""]))
        stop = selection.should_stop
    if world > 1:
        flag = torch.tensor([float(stop)], device=device)
        dist.broadcast(flag, 0)
        stop = bool(flag.item())
    return stop


VAL_LOG_COLUMNS = ("step", "val_loss", "val_recon", "val_kl", "val_d", "best_step", "best_val_loss")


def _start_val_log(path: Path, step: int) -> None:
    """Create val.csv, or on resume drop rows after the checkpoint's step (they are evaluated again)."""
    rows = []
    if path.exists():
        with open(path, newline="") as fh:
            rows = [r for r in csv.reader(fh)][1:]
    kept = [r for r in rows if int(r[0]) <= step]
    write_text_atomic(path, "".join(",".join(map(str, r)) + "\n" for r in [VAL_LOG_COLUMNS, *kept]))


def save_best(path: Path, model: AlphaVAE, config: TrainConfig, step: int, val_loss: float) -> None:
    """The selected weights (no optimiser state), in the checkpoint format so load_checkpoint reads them."""
    torch_save_atomic({
        "format": CHECKPOINT_FORMAT,
        "version": package_version(),
        "config": json.dumps(asdict(config), sort_keys=True),
        "model_config": asdict(model.config),
        "model": model.state_dict(),
        "step": step,
        "val_loss": val_loss,
    }, path)


def _summary(config: TrainConfig, run: dict, accounting: dict, epochs: dict, step: int, status: str) -> TrainSummary:
    """What the run cost and which step it selected: summary.json, and the checkpoint's "summary"."""
    selecting, sel = config.val_split != NO_VAL, run["selection"]
    return TrainSummary(
        method="alpha-vae", status=status, **accounting, steps=step,
        train_flops=flops_of_steps(step, accounting["flops_per_step"], **epochs),
        train_seconds=round(run["train_seconds"], 3), budget_gflop=config.budget_gflop, lr=config.lr,
        dtype=config.dtype, selected_step=sel["best_step"] if selecting else step,
        best_val_loss=sel["best_loss"] if selecting and sel["best_step"] is not None else None,
        selected_checkpoint=BEST_NAME if selecting else CHECKPOINT_NAME, val_split=config.val_split if selecting else None,
        eval_every=config.eval_every if selecting else None, patience=sel["patience"], min_delta=sel["min_delta"],
        version=package_version(), flops_counted=FLOPS_COUNTED)


def _barrier(device: torch.device) -> None:
    """dist.barrier; with nccl it names this rank's GPU, which nccl would otherwise guess from the rank."""
    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()


def _zero_sums() -> dict:
    return {**dict.fromkeys(TERMS, 0.0), "n": 0, "data_s": 0.0, "step_s": 0.0}


def _accumulate(sums: dict, values: dict, data_s: float, step_s: float) -> None:
    for key in TERMS:
        sums[key] += values[key]
    sums["n"] += 1
    sums["data_s"] += data_s
    sums["step_s"] += step_s


def _checkpoint(path: Path, model, optimizer, config: TrainConfig, step: int, gen: torch.Generator,
                epoch_sums: dict, rank: int, world: int, run: dict, summary: TrainSummary) -> None:
    """Every rank hands its noise state to rank 0, which writes the checkpoint (all ranks must call this)."""
    states = [gen.get_state()]
    if world > 1:
        states = [None] * world
        dist.all_gather_object(states, gen.get_state())
    if rank == 0:
        save_checkpoint(path, model, optimizer, config, step, states, epoch_sums, run, summary)


def _restore(path: Path, config: TrainConfig, model, optimizer, gen, device, rank: int = 0,
             world: int = 1) -> tuple[int, dict, dict]:
    """Load a checkpoint into model, optimizer and this rank's generator; UserError if it is another run's.

    Returns the step, the running epoch sums and the run state (selection, seconds, early stop)."""
    state = read_checkpoint(path, device)
    saved = _config_from_json(state["config"])
    ours = asdict(config)
    # A field the checkpoint's release did not have yet counts as its default.
    changed = [f.name for f in fields(TrainConfig)
               if f.name not in RESUMABLE_CHANGES and saved.get(f.name, f.default) != ours[f.name]]
    if changed:
        raise UserError(f"cannot resume {path}: it was trained with a different {', '.join(changed)}; "
                        "use the same settings or another out_dir")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    states = state.get("rank_generators", [state["generator"]])
    if len(states) == world:
        gen.set_state(states[rank].cpu())
    else:
        # Another process count: the global batches are unchanged, but ranks > 0 have no saved
        # stream to continue, so they start a fresh one (the run is no longer bit-reproducible).
        if rank == 0:
            gen.set_state(state["generator"].cpu())
            warnings.warn(f"{path} was saved by {len(states)} process(es) and is resumed by {world}: the "
                          "sampling noise of ranks > 0 restarts from a derived seed", stacklevel=3)
        else:
            gen.manual_seed(rank_seed(config.seed, rank) + state["step"])
    # A checkpoint from before selection existed carries no run state: start it fresh.
    return state["step"], state["epoch_sums"], state.get("run") or _fresh_run(config)


def _nonfinite_message(loss: float, step: int, epoch: int, ckpt_path: Path) -> str:
    if ckpt_path.exists():
        saved = read_checkpoint(ckpt_path)["step"]
        last = f"the last good checkpoint {ckpt_path} (step {saved}) is kept; resume from it"
    else:
        last = "no checkpoint had been written yet"
    return (f"loss became {loss} at step {step} (epoch {epoch}); training stopped before that update, "
            f"{last} with a lower lr or dtype='fp32'")
