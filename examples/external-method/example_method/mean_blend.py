"""mean-blend: the pixel blend of x0 and x2 pulled towards the mean training frame by `weight` (a trained method).

An example of a method that an installed package registers (docs/your-method.md): the entry point
`mean-blend = example_method.mean_blend` in the group `inbetween_bench.methods` of this package's
pyproject.toml makes `run-benchmark --methods mean-blend` run it, and --mean-blend-weight set its
weight. Training averages the train split's frames with h5py (docs/dataset-format.md) into
out_dir/mean.npy; the benchmark caches it under the job's hash and calls load() to score it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from benchmarks.methods.interface import TrainSummary

NAME = "mean-blend"  # the entry point's name too
TRAINS = True  # fits the mean frame to the train split
SEEDED = False  # the mean has no randomness: one model serves every seed
MEAN = "mean.npy"  # (H, W, 3) float32 in [0, 1], written by train, read by load


@dataclass(frozen=True)
class Config:
    """How far the blend is pulled towards the mean frame."""

    weight: float = 0.25  # 0: the pixel blend; 1: the mean training frame whatever x0 and x2 are

    def __post_init__(self):
        if not (math.isfinite(self.weight) and 0 <= self.weight <= 1):
            raise ValueError(f"--mean-blend-weight must lie in [0, 1], not {self.weight}")


def label(config: Config) -> str:
    return f"{NAME} w={config.weight:g}"


def train(config: Config, spec, out_dir, *, device: str = "auto", progress: bool = True) -> TrainSummary:
    """Average every frame of spec.data's train split (one sequence at a time, float64 sums) into out_dir/mean.npy."""
    start = time.perf_counter()
    with h5py.File(spec.data, "r") as f:
        frames = f["train/frames"]  # (S, T, H, W, 3) uint8
        total = np.zeros(frames.shape[2:], dtype=np.float64)
        for s in range(frames.shape[0]):
            total += frames[s].sum(axis=0, dtype=np.float64)
        count = frames.shape[0] * frames.shape[1]
    np.save(Path(out_dir) / MEAN, (total / count / 255.0).astype(np.float32))
    return TrainSummary(method=NAME, train_seconds=time.perf_counter() - start)


def load(config: Config, out_dir, device: str = "auto") -> tuple[float, torch.Tensor]:
    """(weight, the mean frame (3, H, W) in [0, 1])."""
    mean = torch.from_numpy(np.load(Path(out_dir) / MEAN)).permute(2, 0, 1)
    return config.weight, mean


def predict(model: tuple[float, torch.Tensor], x0: torch.Tensor, x2: torch.Tensor, tau) -> torch.Tensor:
    """x0, x2: (B, 3, H, W) in [0, 1]; tau: a float or a (B,) tensor in (0, 1) -> (B, 3, H, W) in [0, 1] on x0's device."""
    weight, mean = model
    t = torch.as_tensor(tau, dtype=x0.dtype, device=x0.device).reshape(-1, 1, 1, 1)  # (1 or B, 1, 1, 1)
    blend = (1 - t) * x0 + t * x2.to(x0.device)
    return (1 - weight) * blend + weight * mean.to(x0.device, x0.dtype)
