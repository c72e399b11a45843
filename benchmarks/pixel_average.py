"""The pixel-average baseline: the middle frame is the mean of its two neighbours, (x0 + x2) / 2."""

from __future__ import annotations

import torch

from render.errors import UserError


def predict(x0: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) x2 in [0, 1] on any device -> (N, 3, H, W) in [0, 1] on that device."""
    if x0.shape != x2.shape:
        raise UserError(f"x0 {tuple(x0.shape)} and x2 {tuple(x2.shape)} differ in shape; pass frames of one size")
    return (x0 + x2) / 2
