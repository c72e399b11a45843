"""mean-frame: a hedge row that predicts the mean training image whatever the end frames are.

It "trains" by averaging every frame of the train split, so it shows what a prediction that
ignores its input earns on each metric (a blur at the mean position scores well on MSE).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.methods.interface import TrainSpec, TrainSummary, check_frames, tau_column
from ibdata.h5format import open_dataset
from ibutil.device import resolve_device
from ibutil.errors import UserError
from ibutil.io import read_checkpoint, torch_save_atomic

NAME = "mean-frame"
TRAINS = True  # fits one image to the train split
SEEDED = False  # the mean has no randomness: one model serves every seed
CHECKPOINT = "mean.pt"
FORMAT = "mean-frame"


@dataclass(frozen=True)
class Config:
    """No settings: the mean is over every frame of every training sequence."""


def label(config: Config) -> str:
    return NAME


def train(config: Config, spec: TrainSpec, out_dir, *, device: str = "auto", progress: bool = True) -> TrainSummary:
    """Average the train split's frames, one sequence at a time (float64 sums), into out_dir/mean.pt."""
    start = time.perf_counter()
    with open_dataset(spec.data) as f:
        frames = f["train"]["frames"]  # (S, T, H, W, 3) uint8, read per sequence
        total = np.zeros(frames.shape[2:], dtype=np.float64)
        for s in range(frames.shape[0]):
            total += frames[s].sum(axis=0, dtype=np.float64)
        count = frames.shape[0] * frames.shape[1]
    mean = torch.from_numpy((total / count / 255.0).astype(np.float32)).permute(2, 0, 1)  # (3, H, W) in [0, 1]
    torch_save_atomic({"format": FORMAT, "mean": mean, "frames": count}, Path(out_dir) / CHECKPOINT)
    return TrainSummary(method=NAME, params=0, train_flops=None, train_seconds=time.perf_counter() - start,
                        selected_step=None, lr=None)


def load(config: Config, out_dir, device: str = "auto") -> torch.Tensor:
    """The mean image (3, H, W) in [0, 1] on `device`."""
    state = read_checkpoint(Path(out_dir) / CHECKPOINT, FORMAT, hint="train mean-frame first")
    return state["mean"].to(resolve_device(device))


def predict(model: torch.Tensor, x0: torch.Tensor, x2: torch.Tensor, tau) -> torch.Tensor:
    """(B, 3, H, W) x2 -> the mean image repeated B times, on x0's device (tau is checked, then ignored)."""
    check_frames(x0, x2)
    tau_column(tau, x0)
    if model.shape != x0.shape[1:]:
        raise UserError(f"mean-frame was fitted to {tuple(model.shape)} images, got {tuple(x0.shape[1:])}")
    return model.to(x0.device, x0.dtype).expand_as(x0).clone()
