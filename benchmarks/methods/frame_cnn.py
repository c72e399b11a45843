"""frame-cnn: a small U-Net that maps the end frames (x0, x2) and the position tau to the frame at tau.

It is conditioned on tau through a constant input channel and trained on every intermediate frame:
for a training triplet (t-k, t, t+k) each step draws j in 1..2k-1 and regresses frame t-k+j at
tau = j / (2k), so one model serves every tau the benchmark scores (tau = 0.5 is the middle frame).
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from benchmarks.methods.interface import TrainSpec, TrainSummary, check_frames, tau_column
from ibutil.device import resolve_device
from ibutil.errors import UserError
from ibutil.io import read_checkpoint, torch_save_atomic, write_text_atomic
from inbetween.data import normalize_gaps, triplet_index
from render.h5format import read_split

NAME = "frame-cnn"
TRAINS = True
SEEDED = True
QUICK = {"channels": 8}  # the --quick CI profile
CHECKPOINT = "checkpoint.pt"
LOG = "log.csv"
FORMAT = "frame-cnn"
VERSION = 2  # 2: conditioned on tau (7 input channels); version 1 files (middle frame only) are refused
LOSSES = ("mse", "l1")
DOWNSAMPLINGS = 2  # U-Net depth: inputs are zero-padded to a multiple of 2**DOWNSAMPLINGS
PREDICT_BATCH = 256  # triplets per forward pass in predict()
CURVE_POINTS = 100  # the log holds the mean training loss of each of about this many blocks of steps


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


def fit(config: Config, frames: torch.Tensor, gaps, *, steps: int, batch_size: int, seed: int,
        device: str = "auto", progress: bool = True) -> tuple[FrameCNN, list[tuple[int, float]]]:
    """Train a fresh FrameCNN on the sequences `frames` (S, T, 3, H, W) uint8; returns (model, curve).

    Each step draws batch_size triplets (s, t, k) of the given gaps uniformly with replacement and,
    for each, a target frame t-k+j with j uniform in 1..2k-1 (tau = j / 2k). The frames stay on the
    CPU and each batch moves to the device; the same config, data and seed give the same weights
    byte for byte on the CPU. curve: (step, mean training loss of the block of steps ending there).
    """
    if frames.ndim != 5 or frames.shape[2] != 3 or frames.dtype != torch.uint8:
        raise UserError(f"frames must be (S, T, 3, H, W) uint8, got {tuple(frames.shape)} {frames.dtype}")
    index = torch.from_numpy(triplet_index(frames.shape[0], frames.shape[1], normalize_gaps(gaps)))  # (N, 3)
    if len(index) == 0:
        raise UserError("frame-cnn needs at least one training triplet; the training split is too short")
    dev = resolve_device(device)
    generator = torch.Generator().manual_seed(seed)  # CPU generator: the same draws on any device
    model = FrameCNN(config)
    model.reset_parameters(generator)
    model.to(dev).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = F.mse_loss if config.loss == "mse" else F.l1_loss

    every = max(1, steps // CURVE_POINTS)  # steps per logged block
    curve, block = [], torch.zeros((), device=dev)  # block: the loss summed on the device (no sync per step)
    with _deterministic_cudnn():
        bar = tqdm(range(steps), desc=NAME, disable=not progress, leave=False)
        for step in bar:
            # Cosine decay from lr to lr / 10: large early steps, a settled finish.
            for group in optimiser.param_groups:
                group["lr"] = config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
            s, t, k = index[torch.randint(len(index), (batch_size,), generator=generator)].T  # (B,) each
            j = 1 + (torch.rand(batch_size, generator=generator) * (2 * k - 1)).long()  # (B,) in 1..2k-1
            x0, xt, x2 = (frames[s, t + d].to(dev).float() / 255 for d in (-k, j - k, k))  # (B, 3, H, W)
            tau = (j.float() / (2 * k)).to(dev).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
            loss = loss_fn(model(x0, x2, tau), xt)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            block += loss.detach()
            if (step + 1) % every == 0 or step == steps - 1:  # .item() waits for the device
                curve.append((step + 1, block.item() / ((step % every) + 1)))
                block.zero_()
                bar.set_postfix(loss=f"{curve[-1][1]:.5f}")
    return model.eval(), curve


def train(config: Config, spec: TrainSpec, out_dir, *, device: str = "auto", progress: bool = True) -> TrainSummary:
    """Fit on the train split of spec.data; write out_dir/checkpoint.pt and the training curve out_dir/log.csv."""
    start = time.perf_counter()
    frames = torch.from_numpy(read_split(spec.data, "train").frames).permute(0, 1, 4, 2, 3)  # (S, T, 3, H, W)
    model, curve = fit(config, frames, spec.gaps, steps=spec.steps, batch_size=spec.batch_size, seed=spec.seed,
                       device=device, progress=progress)
    out = Path(out_dir)
    save_checkpoint(model, out / CHECKPOINT)
    write_text_atomic(out / LOG, "step,train_loss\n" + "".join(f"{s},{loss!r}\n" for s, loss in curve))
    params = sum(p.numel() for p in model.parameters())
    return TrainSummary(params=params, train_flops=None, train_seconds=time.perf_counter() - start,
                        selected_step=spec.steps, lr=config.lr)


def save_checkpoint(model: FrameCNN, path: str | os.PathLike) -> Path:
    """Write weights and config to `path` atomically; returns the path."""
    return torch_save_atomic({"format": FORMAT, "version": VERSION,
                              "config": json.dumps(asdict(model.config), sort_keys=True),
                              "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, path)


def load_checkpoint(path: str | os.PathLike, device: str = "auto") -> FrameCNN:
    """Rebuild a FrameCNN from save_checkpoint's file, in eval mode on `device`."""
    payload = read_checkpoint(path, FORMAT, hint="train a frame-cnn first or fix the path")
    if payload.get("version") != VERSION:
        raise UserError(f"{path} is {FORMAT} checkpoint version {payload.get('version')}, "
                        f"this release reads version {VERSION}; re-train it")
    try:
        config = Config(**json.loads(payload["config"]))
    except (TypeError, ValueError) as exc:  # unknown or missing fields, broken JSON
        raise UserError(f"{path} has an unreadable frame-cnn config ({exc}); re-train it") from None
    model = FrameCNN(config)
    model.load_state_dict(payload["state_dict"])
    return model.to(resolve_device(device)).eval()


def load(config: Config, out_dir, device: str = "auto") -> FrameCNN:
    return load_checkpoint(Path(out_dir) / CHECKPOINT, device)


@torch.no_grad()
def predict(model: FrameCNN, x0: torch.Tensor, x2: torch.Tensor, tau) -> torch.Tensor:
    """(B, 3, H, W) x2 in [0, 1] on any device, tau float or (B,) -> x_tau in [0, 1] on x0's device."""
    check_frames(x0, x2)
    t = tau_column(tau, x0)  # (B, 1, 1, 1)
    out = [model(a.to(model.device, torch.float32), b.to(model.device, torch.float32), c.to(model.device))
           .clamp(0, 1).to(x0.device, x0.dtype)
           for a, b, c in zip(x0.split(PREDICT_BATCH), x2.split(PREDICT_BATCH), t.split(PREDICT_BATCH))]
    return torch.cat(out) if out else x0.new_empty(x0.shape)
