"""frame-cnn: a small U-Net that maps the end frames (x0, x2) and the position tau to the frame at tau.

It is conditioned on tau through a constant input channel and trained on every intermediate frame:
for a training triplet (t-k, t, t+k) each step draws j in 1..2k-1 and regresses frame t-k+j at
tau = j / (2k), so one model serves every tau the benchmark scores (tau = 0.5 is the middle frame).
Selection: the same loss on a fixed set of val frames (every val window once, at a fixed j) every
eval_every steps; best.pt keeps the best, and patience evaluations without one stop the run.
"""

from __future__ import annotations

import functools
import math
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from benchmarks.methods.interface import TrainSpec, TrainSummary, check_frames, tau_column
from ibdata.frames import to_float
from ibdata.h5format import read_header, read_split
from ibdata.triplets import normalize_gaps, triplet_index
from ibutil.device import resolve_device
from ibutil.errors import UserError
from ibutil.flops import training_step_flops
from ibutil.io import read_checkpoint, torch_save_atomic
from ibutil.run import NO_VAL, TrainRun, load_selected, planned_steps

NAME = "frame-cnn"
TRAINS = True
SEEDED = True
QUICK = {"channels": 8}  # the --quick CI profile
DEMO = {"channels": 16}  # the --demo profile: a quarter of the default's FLOPs, still sharp in-betweens at 250 steps
FORMAT = "frame-cnn"
VERSION = 2  # 2: conditioned on tau (7 input channels); version 1 files (middle frame only) are refused
LOSSES = ("mse", "l1")
DOWNSAMPLINGS = 2  # U-Net depth: inputs are zero-padded to a multiple of 2**DOWNSAMPLINGS
PREDICT_BATCH = 256  # triplets per forward pass in predict()
VAL_SEED = 0  # fixes which intermediate frame each val window is scored at: the same val set for every run


@dataclass(frozen=True)
class Config:
    """Architecture and optimiser of the frame CNN (the budget and seed come from TrainSpec)."""

    channels: int = 32  # feature channels at full resolution, doubled after each downsampling
    lr: float = 1e-3  # Adam peak learning rate, cosine-decayed to lr / 10 over the steps
    loss: str = "mse"  # training loss on [0, 1] pixels: mse (the benchmark's metric) or l1

    def __post_init__(self):
        if not isinstance(self.channels, int) or isinstance(self.channels, bool) or self.channels < 1:
            raise UserError(f"frame-cnn channels must be a positive integer, got {self.channels!r}")
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool) or not math.isfinite(self.lr) \
                or self.lr <= 0:
            raise UserError(f"frame-cnn lr must be a positive number, got {self.lr!r}")
        if self.loss not in LOSSES:
            raise UserError(f"unknown frame-cnn loss {self.loss!r}; choose one of {', '.join(LOSSES)}")


def label(config: Config) -> str:
    return NAME


# ----------------------------------------------------------------------------- the network


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions with ReLU, size-preserving."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True),
    )


class FrameCNN(nn.Module):
    """U-Net with two downsamplings: concat(x0, x2, tau plane) (B, 7, H, W) -> x_tau (B, 3, H, W).

    It predicts a correction to the pixel blend (1 - tau) x0 + tau x2, and its last layer starts at
    zero, so an untrained model is the pixel-average baseline. (A sigmoid output trained with MSE
    on mostly-black frames saturated at black within a few hundred steps in our trials.)
    """

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        c = config.channels
        self.enc1 = _block(7, c)  # (B, c, H, W)
        self.enc2 = _block(c, 2 * c)  # (B, 2c, H/2, W/2)
        self.mid = _block(2 * c, 4 * c)  # (B, 4c, H/4, W/4)
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)  # -> (B, 2c, H/2, W/2)
        self.dec2 = _block(4 * c, 2 * c)  # skip concat: 2c + 2c in
        self.up1 = nn.ConvTranspose2d(2 * c, c, 2, stride=2)  # -> (B, c, H, W)
        self.dec1 = _block(2 * c, c)  # skip concat: c + c in
        self.head = nn.Conv2d(c, 3, 1)  # (B, 3, H, W) correction to the pixel blend

    def reset_parameters(self, generator: torch.Generator) -> None:
        """He-uniform weights, zero biases (zero head), drawn from `generator` so a seed fixes every byte."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                    fan_in = module.weight[0].numel()  # torch's convention for both conv kinds
                    bound = math.sqrt(6.0 / fan_in)
                    module.weight.uniform_(-bound, bound, generator=generator)
                    module.bias.zero_()
            self.head.weight.zero_()  # start as the pixel blend

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, x0: torch.Tensor, x2: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) x2 in [0, 1], tau (B, 1, 1, 1) -> (B, 3, H, W), not clamped (predict clamps); any H, W."""
        h, w = x0.shape[-2:]
        m = 2 ** DOWNSAMPLINGS
        plane = tau.expand(-1, 1, h, w)  # (B, 1, H, W): tau as an image channel
        # Pad right/bottom with black, the background colour, to a size the pooling divides.
        x = F.pad(torch.cat([x0, x2, plane], dim=1), (0, -w % m, 0, -h % m))  # (B, 7, H', W')
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        z = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(z), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return (1 - tau) * x0 + tau * x2 + self.head(d1)[..., :h, :w]


# ----------------------------------------------------------------------------- training


@contextmanager
def _deterministic_cudnn():
    """cuDNN picks its fastest (and not always deterministic) kernels unless told not to."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


@functools.lru_cache(maxsize=64)  # one count per model and batch shape
def step_flops(config: Config, batch_size: int, height: int, width: int) -> int:
    """FLOPs of one training step of batch_size triplets at H x W (forward + backward; optimiser excluded)."""
    def loss(model: FrameCNN) -> torch.Tensor:
        x0, xt, x2 = (torch.rand(batch_size, 3, height, width) for _ in range(3))
        return F.mse_loss(model(x0, x2, torch.rand(batch_size, 1, 1, 1)), xt)  # l1 costs the same FLOPs
    return training_step_flops(lambda: FrameCNN(config), loss)


def _check_frames(frames: torch.Tensor, gaps, what: str) -> torch.Tensor:
    """The (N, 3) triplet index (s, t, k) of sequences `frames` (S, T, 3, H, W) uint8; UserError if there is none."""
    if frames.ndim != 5 or frames.shape[2] != 3 or frames.dtype != torch.uint8:
        raise UserError(f"{what} frames must be (S, T, 3, H, W) uint8, got {tuple(frames.shape)} {frames.dtype}")
    index = torch.from_numpy(triplet_index(frames.shape[0], frames.shape[1], normalize_gaps(gaps)))  # (N, 3)
    if len(index) == 0:
        raise UserError(f"frame-cnn needs at least one {what} triplet; the {what} split is too short for the gaps")
    return index


def val_set(frames: torch.Tensor, gaps) -> dict[str, torch.Tensor]:
    """Every val window (s, t, k) once, at the frame t-k+j, j in 1..2k-1 drawn from VAL_SEED: x0, xt, x2, tau."""
    s, t, k = _check_frames(frames, gaps, "val").T  # (N,) each
    j = 1 + (torch.rand(len(k), generator=torch.Generator().manual_seed(VAL_SEED)) * (2 * k - 1)).long()
    x0, xt, x2 = (frames[s, t + d] for d in (-k, j - k, k))  # (N, 3, H, W) uint8
    return {"x0": x0, "xt": xt, "x2": x2, "tau": (j.float() / (2 * k)).view(-1, 1, 1, 1)}


@torch.no_grad()
def val_loss(model: FrameCNN, val: dict[str, torch.Tensor]) -> float:
    """The training loss (unclamped output) averaged over the val set, in fixed batches: deterministic."""
    loss_fn = F.mse_loss if model.config.loss == "mse" else F.l1_loss
    model.eval()
    total = 0.0
    for i in range(0, len(val["x0"]), PREDICT_BATCH):
        a, target, b = (to_float(val[n][i:i + PREDICT_BATCH], model.device) for n in ("x0", "xt", "x2"))
        pred = model(a, b, val["tau"][i:i + PREDICT_BATCH].to(model.device))
        total += loss_fn(pred, target, reduction="sum").item() / target[0].numel()
    model.train()
    return total / len(val["x0"])


def fit(config: Config, frames: torch.Tensor, spec: TrainSpec, *, val_frames: torch.Tensor | None = None,
        out_dir=None, device: str = "auto", progress: bool = True) -> tuple[FrameCNN, TrainRun]:
    """Train a FrameCNN on the sequences `frames` (S, T, 3, H, W) uint8 as `spec` says (its data field unused).

    Each step draws batch_size triplets (s, t, k) of spec.gaps uniformly with replacement and, for
    each, a target frame t-k+j with j uniform in 1..2k-1 (tau = j / 2k); Adam with the lr cosine-decayed
    to lr / 10 over the planned steps. With val_frames, the val loss is evaluated every eval_every
    steps and the best weights are returned (else the last). With out_dir the run is checkpointed
    there, resumes from it, and stops on SIGTERM (ibutil.run.TrainRun). The frames stay on the CPU;
    the same config, data and seed give the same weights byte for byte on the CPU.
    Returns the selected model (eval mode) and the run (its curve and summary).
    """
    index = _check_frames(frames, spec.gaps, "training")
    val = val_set(val_frames, spec.gaps) if val_frames is not None else None
    dev = resolve_device(device)
    height, width = frames.shape[-2:]
    generator = torch.Generator().manual_seed(spec.seed)  # CPU generator: the same draws on any device
    model = FrameCNN(config)
    model.reset_parameters(generator)
    model.to(dev).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = F.mse_loss if config.loss == "mse" else F.l1_loss
    flops = step_flops(config, spec.batch_size, height, width)  # every batch is a full one
    run = TrainRun(out_dir, method=NAME, fmt=FORMAT, identity={"config": asdict(config), "spec": spec.resume_identity()},
                   meta={"version": VERSION, "config": asdict(config)}, params=sum(p.numel() for p in model.parameters()),
                   flops_per_step=flops, planned_steps=planned_steps(spec.steps, spec.budget_gflop, flops, NAME),
                   lr=config.lr, val_split=spec.val_split if val is not None else None, eval_every=spec.eval_every,
                   patience=spec.patience, min_delta=spec.min_delta, budget_gflop=spec.budget_gflop,
                   checkpoint_every=spec.checkpoint_every)
    state = {"model": model, "optimiser": optimiser, "generator": generator}  # what a checkpoint restores
    run.resume(state)
    with _deterministic_cudnn(), run.stop_flag(), \
            tqdm(total=run.planned, initial=run.step, desc=NAME, disable=not progress, leave=False) as bar:
        while run.running:
            # Cosine decay from lr to lr / 10 over the planned steps: large early steps, a settled finish.
            for group in optimiser.param_groups:
                group["lr"] = config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * run.step / run.planned)))
            s, t, k = index[torch.randint(len(index), (spec.batch_size,), generator=generator)].T  # (B,) each
            j = 1 + (torch.rand(spec.batch_size, generator=generator) * (2 * k - 1)).long()  # (B,) in 1..2k-1
            x0, xt, x2 = (to_float(frames[s, t + d], dev) for d in (-k, j - k, k))  # (B, 3, H, W)
            tau = (j.float() / (2 * k)).to(dev).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
            loss = loss_fn(model(x0, x2, tau), xt)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            run.step_done(state, loss, val=lambda: val_loss(model, val))  # may checkpoint, stop early or preempt
            bar.update(1)
            if run.step % run.every == 0:
                bar.set_postfix(loss=f"{run.last_loss:.5f}")
    run.finish(state)  # the model now holds the selected weights
    return model.eval(), run


def _split(path: str, split: str) -> torch.Tensor:
    """(S, T, 3, H, W) uint8 frames of one split; UserError naming the way out if the file has no such split."""
    if split not in read_header(path).splits:
        raise UserError(f"{path} has no {split!r} split to select on; render a v2 file (with val) or set the val "
                        f"split to '{NO_VAL}' (the last step is then scored)")
    return torch.from_numpy(read_split(path, split).frames).permute(0, 1, 4, 2, 3)


def train(config: Config, spec: TrainSpec, out_dir, *, device: str = "auto", progress: bool = True) -> TrainSummary:
    """Fit on the train split of spec.data, select on spec.val_split; out_dir gets checkpoint.pt, best.pt, logs."""
    frames = _split(spec.data, "train")  # (S, T, 3, H, W) uint8
    val_frames = _split(spec.data, spec.val_split) if spec.val_split != NO_VAL else None
    _, run = fit(config, frames, spec, val_frames=val_frames, out_dir=out_dir, device=device, progress=progress)
    return run.result


def save_checkpoint(model: FrameCNN, path: str | os.PathLike) -> Path:
    """Write weights and config to `path` atomically, in the layout of a run's best.pt; returns the path."""
    return torch_save_atomic({"format": FORMAT, "meta": {"version": VERSION, "config": asdict(model.config)},
                              "state": {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}}, path)


def _model(payload: dict, path, device: str) -> FrameCNN:
    """Rebuild a FrameCNN from a checkpoint payload (save_checkpoint's, or a run's checkpoint.pt / best.pt)."""
    meta = payload.get("meta") or {}
    version = meta.get("version", payload.get("version"))
    if version != VERSION:
        raise UserError(f"{path} is {FORMAT} checkpoint version {version}, this release reads version {VERSION}; "
                        "re-train it")
    try:
        config = Config(**meta["config"])
        weights = payload["state"]["model"]
    except (KeyError, TypeError, ValueError) as exc:  # unknown or missing fields
        raise UserError(f"{path} has an unreadable frame-cnn config or weights ({exc}); re-train it") from None
    model = FrameCNN(config)
    model.load_state_dict(weights)
    return model.to(resolve_device(device)).eval()


def load_checkpoint(path: str | os.PathLike, device: str = "auto") -> FrameCNN:
    """The FrameCNN of one checkpoint file, in eval mode on `device`."""
    return _model(read_checkpoint(path, FORMAT, hint="train a frame-cnn first or fix the path"), path, device)


def load(config: Config, out_dir, device: str = "auto") -> FrameCNN:
    """The selected model of a finished run in out_dir (best.pt; checkpoint.pt without selection)."""
    return _model(load_selected(out_dir, FORMAT, hint="train a frame-cnn first"), out_dir, device)


@torch.no_grad()
def predict(model: FrameCNN, x0: torch.Tensor, x2: torch.Tensor, tau) -> torch.Tensor:
    """(B, 3, H, W) x2 in [0, 1] on any device, tau float or (B,) -> x_tau in [0, 1] on x0's device."""
    check_frames(x0, x2)
    t = tau_column(tau, x0)  # (B, 1, 1, 1)
    out = [model(a.to(model.device, torch.float32), b.to(model.device, torch.float32), c.to(model.device))
           .clamp(0, 1).to(x0.device, x0.dtype)
           for a, b, c in zip(x0.split(PREDICT_BATCH), x2.split(PREDICT_BATCH), t.split(PREDICT_BATCH))]
    return torch.cat(out) if out else x0.new_empty(x0.shape)
