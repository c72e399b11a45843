"""blur-blend: the pixel blend (1 - tau) x0 + tau x2, smoothed by a Gaussian of `sigma` pixels (a one-file method).

An example of a method from outside the package (docs/your-method.md):

    run-benchmark --quick --method-file examples/external-method/my_method.py --methods blur-blend pixel-average

loads this file, registers it as `blur-blend` for the run and makes its Config field an option,
--blur-blend-sigma. It trains nothing, so the benchmark checks its predict on a dummy batch before
any job runs. Only torch is needed; nothing here imports the benchmark but the interface's TrainSummary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmarks.methods.interface import TrainSummary

NAME = "blur-blend"  # the --methods name and the prefix of its options
TRAINS = False  # nothing is fitted to the train split
SEEDED = False  # seeds give the same predictions


@dataclass(frozen=True)
class Config:
    """The blur's width."""

    sigma: float = 1.0  # Gaussian standard deviation in pixels (0: the plain pixel blend)

    def __post_init__(self):
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"--blur-blend-sigma must be a finite number >= 0, not {self.sigma}")


def label(config: Config) -> str:
    """The row name in tables and figures."""
    return f"{NAME} s={config.sigma:g}"


def train(config: Config, spec, out_dir, *, device: str = "auto", progress: bool = True) -> TrainSummary:
    """Nothing to fit: an empty summary."""
    return TrainSummary(method=NAME)


def load(config: Config, out_dir=None, device: str = "auto") -> Config:
    """The "model" is its config."""
    return config


def predict(model: Config, x0: torch.Tensor, x2: torch.Tensor, tau) -> torch.Tensor:
    """x0, x2: (B, 3, H, W) in [0, 1]; tau: a float or a (B,) tensor in (0, 1) -> (B, 3, H, W) in [0, 1] on x0's device."""
    t = torch.as_tensor(tau, dtype=x0.dtype, device=x0.device).reshape(-1, 1, 1, 1)  # (1 or B, 1, 1, 1)
    blend = (1 - t) * x0 + t * x2.to(x0.device)  # (B, 3, H, W)
    if model.sigma == 0:
        return blend
    radius = min(math.ceil(3 * model.sigma), x0.shape[-1] - 1, x0.shape[-2] - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=x0.dtype, device=x0.device)
    kernel = torch.exp(-0.5 * (offsets / model.sigma) ** 2)
    kernel = kernel / kernel.sum()  # (2r+1,), sums to 1: the output stays in [0, 1]
    channels = blend.shape[1]
    out = F.pad(blend, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)  # along W
    out = F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)  # along H
    return out.clamp(0, 1)
