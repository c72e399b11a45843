"""copy-x0: a hedge row that predicts the first end frame x0 whatever tau is (what no motion earns)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmarks.methods.interface import TrainSummary, check_frames, tau_column

NAME = "copy-x0"
TRAINS = False
SEEDED = False


@dataclass(frozen=True)
class Config:
    """No settings."""


def label(config: Config) -> str:
    return NAME


def train(config: Config, spec, out_dir, *, device: str = "auto", progress: bool = True) -> TrainSummary:
    return TrainSummary(method=NAME, params=0, train_flops=0, train_seconds=0.0, selected_step=None, lr=None)


def load(config: Config, out_dir=None, device: str = "auto") -> Config:
    return config


def predict(model: Config, x0: torch.Tensor, x2: torch.Tensor, tau) -> torch.Tensor:
    """(B, 3, H, W) x2 in [0, 1] -> x0, unchanged (tau is checked, then ignored)."""
    check_frames(x0, x2)
    tau_column(tau, x0)
    return x0.clone()
