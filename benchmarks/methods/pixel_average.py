"""pixel-average: the frame at tau is the pixel blend (1 - tau) x0 + tau x2 (tau = 0.5: the mean)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmarks.methods.interface import TrainSummary, check_frames, tau_column

NAME = "pixel-average"
TRAINS = False  # nothing is fitted
SEEDED = False


@dataclass(frozen=True)
class Config:
    """No settings: the blend is fixed."""


def label(config: Config) -> str:
    return NAME


def train(config: Config, spec, out_dir, *, device: str = "auto", progress: bool = True) -> TrainSummary:
    return TrainSummary(method=NAME, params=0, train_flops=0, train_seconds=0.0, selected_step=None, lr=None)


def load(config: Config, out_dir=None, device: str = "auto") -> Config:
    return config  # the "model" is its (empty) config


def predict(model: Config, x0: torch.Tensor, x2: torch.Tensor, tau) -> torch.Tensor:
    """(B, 3, H, W) x2 in [0, 1], tau float or (B,) -> (B, 3, H, W) in [0, 1] on x0's device."""
    check_frames(x0, x2)
    t = tau_column(tau, x0)  # (B, 1, 1, 1)
    return (1 - t) * x0 + t * x2.to(x0.device)
