"""Training the alpha-VAE: the config, the loop, the per-epoch CSV log and atomic, resumable checkpoints."""

from __future__ import annotations

import csv
import gc
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from inbetween.data import TripletDataset, normalize_gaps
from inbetween.vae import KL_FORMS, LIKELIHOODS, AlphaVAE, LossTerms, VAEConfig, alpha_vae_loss
from ibutil.device import resolve_device
from ibutil.errors import UserError
from ibutil.io import read_checkpoint as _read, torch_save_atomic

CHECKPOINT_FORMAT = "inbetween-alpha-vae-checkpoint"
CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.csv"
DTYPES = {"fp32": None, "bf16": torch.bfloat16}  # None: no autocast
# Fields that may change when a run resumes: they say how long, how loudly and where (a run folder
# may be moved or copied) to train, not what.
RESUMABLE_CHANGES = ("epochs", "steps", "resume", "progress", "checkpoint_every", "out_dir")
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


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _posint(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


class NonFiniteLoss(UserError):
    """The loss became NaN or inf; training stopped before the bad step changed any weight."""



def package_version() -> str:
    try:
        return metadata.version("inbetween-bench")
    except metadata.PackageNotFoundError:
        return "unknown"


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


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, model: AlphaVAE, optimizer, config: TrainConfig, step: int,
                    noise_states: list[torch.Tensor], epoch_sums: dict) -> None:
    """Write everything needed to restore or resume atomically: a temp file, then os.replace.

    noise_states: every rank's sampling-noise generator state, rank 0 first (one entry without DDP).
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
    """Train the alpha-VAE as `config` says and return the model (on config's device, eval mode).

    Writes out_dir/checkpoint.pt at the end of each epoch (and every checkpoint_every steps) and
    appends one row per epoch to out_dir/log.csv. Same config and seed -> the same weights.

    Under torchrun (WORLD_SIZE > 1) it trains with DistributedDataParallel: gloo on CPU, nccl on
    CUDA (one GPU per process, by LOCAL_RANK). Each global batch of batch_size triplets is split
    across the processes (rank_share, weighted so uneven last batches count right), so the averaged
    gradient is the single-process one but for the sampling noise, which each rank draws from its
    own seed (rank_seed). Only rank 0 evaluates, logs and writes checkpoints; a checkpoint holds every rank's noise state, so a DDP run resumed
    with the same number of processes continues exactly as if never stopped.
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
    test_set = TripletDataset(config.data, "test", config.gaps)
    out = Path(config.out_dir)
    ckpt_path, log_path = out / CHECKPOINT_NAME, out / LOG_NAME
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create out_dir {out}: {exc.strerror}") from None

    model = build_model(config, train_set.image_size).to(device)
    optimizer = make_optimizer(model, config)
    gen = torch.Generator(device=device).manual_seed(rank_seed(config.seed, rank))  # the sampling noise
    step, epoch_sums = 0, _zero_sums()
    if ckpt_path.exists() or log_path.exists():
        if not config.resume:
            raise UserError(f"{out} already holds a run; pass resume=True to continue it or choose another out_dir")
        if ckpt_path.exists():
            step, epoch_sums = _restore(ckpt_path, config, model, optimizer, gen, device, rank, world)
    if world > 1:
        _barrier(device)  # every rank has checked out_dir before rank 0 writes into it
    if rank == 0 and not log_path.exists():
        with open(log_path, "w", newline="") as fh:
            csv.writer(fh).writerow(LOG_COLUMNS)
    net = DistributedDataParallel(model) if world > 1 else model  # the same weights; DDP syncs gradients

    n, bs = len(train_set), config.batch_size
    steps_per_epoch = math.ceil(n / bs)
    total = config.steps if config.steps is not None else config.epochs * steps_per_epoch
    model.train()
    bar = tqdm(total=total, initial=min(step, total), unit="step", desc="alpha-vae", leave=False,
               disable=not config.progress or rank > 0)
    t_epoch = time.perf_counter()
    while step < total:
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
            if world > 1:  # the global batch's means, so every rank sees the same (finite or not) loss
                dist.all_reduce(stacked)
                stacked /= world
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
                _checkpoint(ckpt_path, model, optimizer, config, step, gen, epoch_sums, rank, world)
            if step == total:
                break
        # End of an epoch (or of a steps-limited run): evaluate, log, checkpoint (rank 0 only).
        if rank == 0:
            model.eval()
            test = evaluate(model, test_set, config, device)
            model.train()
            s = epoch_sums
            row = [f"{step / steps_per_epoch:.4g}", step] + [s[k] / s["n"] for k in TERMS] + \
                  [test[k] for k in TERMS] + \
                  [s["data_s"] / max(s["step_s"], 1e-12), f"{time.perf_counter() - t_epoch:.2f}"]
            with open(log_path, "a", newline="") as fh:
                csv.writer(fh).writerow(row)
        epoch_sums, t_epoch = _zero_sums(), time.perf_counter()
        _checkpoint(ckpt_path, model, optimizer, config, step, gen, epoch_sums, rank, world)
    bar.close()
    if owns_group:
        _barrier(device)  # rank 0's last checkpoint is written before anyone leaves
        # DDP's reducer holds the process group inside a reference cycle: collect it now, or the
        # group is freed during interpreter shutdown, which aborted a rank ("terminate called
        # without an active exception", exit -6) in 5 of 80 two-process gloo runs here (0 of 140
        # with this collection; docs/scale.md).
        del net
        gc.collect()
        dist.destroy_process_group()
    return model.eval()


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
                epoch_sums: dict, rank: int, world: int) -> None:
    """Every rank hands its noise state to rank 0, which writes the checkpoint (all ranks must call this)."""
    states = [gen.get_state()]
    if world > 1:
        states = [None] * world
        dist.all_gather_object(states, gen.get_state())
    if rank == 0:
        save_checkpoint(path, model, optimizer, config, step, states, epoch_sums)


def _restore(path: Path, config: TrainConfig, model, optimizer, gen, device, rank: int = 0,
             world: int = 1) -> tuple[int, dict]:
    """Load a checkpoint into model, optimizer and this rank's generator; UserError if it is another run's."""
    state = read_checkpoint(path, device)
    saved = _config_from_json(state["config"])
    ours = asdict(config)
    changed = [f.name for f in fields(TrainConfig)
               if f.name not in RESUMABLE_CHANGES and saved.get(f.name) != ours[f.name]]
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
    return state["step"], state["epoch_sums"]


def _nonfinite_message(loss: float, step: int, epoch: int, ckpt_path: Path) -> str:
    if ckpt_path.exists():
        saved = read_checkpoint(ckpt_path)["step"]
        last = f"the last good checkpoint {ckpt_path} (step {saved}) is kept; resume from it"
    else:
        last = "no checkpoint had been written yet"
    return (f"loss became {loss} at step {step} (epoch {epoch}); training stopped before that update, "
            f"{last} with a lower lr or dtype='fp32'")
