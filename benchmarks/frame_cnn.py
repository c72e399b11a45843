"""The frame-CNN baseline: a small U-Net that maps the two end frames (x0, x2) to the middle frame x1."""

from __future__ import annotations

import json
import math
import os
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from inbetween.train import resolve_device, torch_save_atomic
from render.errors import UserError, write_text_atomic

CHECKPOINT_FORMAT = "frame-cnn"
CHECKPOINT_VERSION = 1
LOSSES = ("mse", "l1")
DOWNSAMPLINGS = 2  # U-Net depth: inputs are zero-padded to a multiple of 2**DOWNSAMPLINGS
PREDICT_BATCH = 256  # triplets per forward pass in predict()
CURVE_POINTS = 100  # fit() logs the mean training loss of each of about this many blocks of steps


@dataclass(frozen=True)
class FrameCNNConfig:
    """Architecture and training budget of the frame CNN; stored in every checkpoint."""

    channels: int = 32  # feature channels at full resolution, doubled after each downsampling
    steps: int = 5000  # optimiser steps; set steps * batch_size to the alpha-VAE's budget
    batch_size: int = 64  # triplets per step, sampled uniformly with replacement
    lr: float = 1e-3  # Adam peak learning rate, cosine-decayed to lr / 10 over the steps
    loss: str = "mse"  # training loss on [0, 1] pixels: "mse" (the benchmark's metric) or "l1"
    seed: int = 0  # seeds weight initialisation and batch sampling (torch.Generator)
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda" or "cuda:N"

    def __post_init__(self):
        for name in ("channels", "steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"frame-cnn {name} must be a positive integer, got {value!r}")
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool) or not math.isfinite(self.lr) \
                or self.lr <= 0:
            raise UserError(f"frame-cnn lr must be a positive number, got {self.lr!r}")
        if self.loss not in LOSSES:
            raise UserError(f"unknown frame-cnn loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise UserError(f"frame-cnn seed must be a non-negative integer, got {self.seed!r}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise UserError(f"unknown device {self.device!r}; choose auto, cpu, cuda or cuda:N")


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions with ReLU, size-preserving."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True),
    )


class FrameCNN(nn.Module):
    """U-Net with two downsamplings: concat(x0, x2) (B, 6, H, W) -> x1_hat (B, 3, H, W).

    It predicts a correction to the pixel average (x0 + x2) / 2, and its last layer starts at
    zero, so an untrained model is the pixel-average baseline. (A sigmoid output trained with
    MSE on mostly-black frames saturated at black within a few hundred steps in our trials.)
    """

    def __init__(self, config: FrameCNNConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.enc1 = _block(6, c)  # (B, c, H, W)
        self.enc2 = _block(c, 2 * c)  # (B, 2c, H/2, W/2)
        self.mid = _block(2 * c, 4 * c)  # (B, 4c, H/4, W/4)
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)  # -> (B, 2c, H/2, W/2)
        self.dec2 = _block(4 * c, 2 * c)  # skip concat: 2c + 2c in
        self.up1 = nn.ConvTranspose2d(2 * c, c, 2, stride=2)  # -> (B, c, H, W)
        self.dec1 = _block(2 * c, c)  # skip concat: c + c in
        self.head = nn.Conv2d(c, 3, 1)  # (B, 3, H, W) correction to the pixel average

    def reset_parameters(self, generator: torch.Generator) -> None:
        """He-uniform weights, zero biases (zero head), drawn from `generator` so a seed fixes every byte."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                    fan_in = module.weight[0].numel()  # torch's convention for both conv kinds
                    bound = math.sqrt(6.0 / fan_in)
                    module.weight.uniform_(-bound, bound, generator=generator)
                    module.bias.zero_()
            self.head.weight.zero_()  # start as the pixel average

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, x0: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) x2 in [0, 1] -> (B, 3, H, W), not clamped (predict clamps); any H, W."""
        h, w = x0.shape[-2:]
        m = 2 ** DOWNSAMPLINGS
        # Pad right/bottom with black, the background colour, to a size the pooling divides.
        x = F.pad(torch.cat([x0, x2], dim=1), (0, -w % m, 0, -h % m))  # (B, 6, H', W')
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        z = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(z), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return (x0 + x2) / 2 + self.head(d1)[..., :h, :w]

    @torch.no_grad()
    def predict(self, x0: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """The benchmark interface: (N, 3, H, W) x2 in [0, 1] on any device -> x1_hat in [0, 1] on x0's device."""
        if x0.shape != x2.shape or x0.ndim != 4 or x0.shape[1] != 3:
            raise UserError(f"x0 {tuple(x0.shape)} and x2 {tuple(x2.shape)} must both be (N, 3, H, W)")
        was_training = self.training
        self.eval()
        out = [self(a.to(self.device, torch.float32), b.to(self.device, torch.float32)).clamp(0, 1).to(x0.device, x0.dtype)
               for a, b in zip(x0.split(PREDICT_BATCH), x2.split(PREDICT_BATCH))]
        self.train(was_training)
        return torch.cat(out) if out else x0.new_empty(x0.shape)


def _as_tensor(images, name: str) -> torch.Tensor:
    """Training frames on the CPU as given: (N, 3, H, W) float in [0, 1] or uint8 in 0..255."""
    t = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    if t.ndim != 4 or t.shape[1] != 3:
        raise UserError(f"{name} must have shape (N, 3, H, W), got {tuple(t.shape)}")
    if t.dtype != torch.uint8 and not t.is_floating_point():
        raise UserError(f"{name} must be float in [0, 1] or uint8, got {t.dtype}")
    return t.detach().cpu()


def _to_float(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    batch = batch.to(device, non_blocking=True)
    return batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()


@contextmanager
def _deterministic_cudnn():
    """cuDNN picks its fastest (and not always deterministic) kernels unless told not to."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def fit(config: FrameCNNConfig, x0, x1, x2, *, progress: bool = True,
        log_path: str | os.PathLike | None = None) -> FrameCNN:
    """Train a fresh FrameCNN on triplets: x0, x1, x2 each (N, 3, H, W), numpy or torch, float [0, 1] or uint8.

    The data stay where they are (CPU) and each batch moves to config.device; the same config,
    data and seed give the same weights byte for byte on the CPU. With log_path, the training
    curve (columns step, train_loss: the mean loss of each block of steps / CURVE_POINTS steps) is
    written there as CSV.
    """
    x0, x1, x2 = _as_tensor(x0, "x0"), _as_tensor(x1, "x1"), _as_tensor(x2, "x2")
    if not (x0.shape == x1.shape == x2.shape):
        raise UserError(f"x0 {tuple(x0.shape)}, x1 {tuple(x1.shape)}, x2 {tuple(x2.shape)} must match")
    n = x0.shape[0]
    if n == 0:
        raise UserError("frame-cnn needs at least one training triplet; the training split is empty")
    device = resolve_device(config.device)
    generator = torch.Generator().manual_seed(config.seed)  # CPU generator: same draws on any device

    model = FrameCNN(config)
    model.reset_parameters(generator)
    model.to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = F.mse_loss if config.loss == "mse" else F.l1_loss

    every = max(1, config.steps // CURVE_POINTS)  # steps per logged block
    curve, block = [], torch.zeros((), device=device)  # block: the loss summed on the device (no sync per step)
    with _deterministic_cudnn():
        bar = tqdm(range(config.steps), desc="frame-cnn", disable=not progress, leave=False)
        for step in bar:
            # Cosine decay from lr to lr / 10: large early steps, a settled finish.
            lr = config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / config.steps)))
            for group in optimiser.param_groups:
                group["lr"] = lr
            idx = torch.randint(n, (config.batch_size,), generator=generator)  # (B,) on CPU
            a, target, b = (_to_float(x[idx], device) for x in (x0, x1, x2))  # (B, 3, H, W) in [0, 1]
            loss = loss_fn(model(a, b), target)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            block += loss.detach()
            if (step + 1) % every == 0 or step == config.steps - 1:  # .item() waits for the device
                curve.append((step + 1, block.item() / ((step % every) + 1)))
                block.zero_()
                bar.set_postfix(loss=f"{curve[-1][1]:.5f}")
    if log_path is not None:
        _write_curve(curve, Path(log_path))
    return model.eval()


def _write_curve(curve: list[tuple[int, float]], path: Path) -> None:
    """step,train_loss rows as CSV, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "step,train_loss\n" + "".join(f"{step},{loss!r}\n" for step, loss in curve))


def save_checkpoint(model: FrameCNN, path: str | os.PathLike) -> Path:
    """Write weights and config to `path` atomically (temporary file, then rename); returns the path."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": json.dumps(asdict(model.config), sort_keys=True),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return torch_save_atomic(payload, path)


def load_checkpoint(path: str | os.PathLike, device: str = "auto") -> FrameCNN:
    """Rebuild a FrameCNN from save_checkpoint's file, in eval mode on `device`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no frame-cnn checkpoint at {path}; train one first or fix the path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or truncated files
        raise UserError(f"{path} is not a readable checkpoint ({type(exc).__name__}); re-train or re-download it") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"{path} is {CHECKPOINT_FORMAT} checkpoint version {payload.get('version')}, "
                        f"this release reads version {CHECKPOINT_VERSION}; re-train it")
    try:
        config = FrameCNNConfig(**json.loads(payload["config"]))
    except (TypeError, ValueError) as exc:  # unknown or missing fields, broken JSON
        raise UserError(f"{path} has an unreadable frame-cnn config ({exc}); re-train it") from None
    model = FrameCNN(config)
    model.load_state_dict(payload["state_dict"])
    return model.to(resolve_device(device)).eval()
