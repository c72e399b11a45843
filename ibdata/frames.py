"""The frames' value convention: files store uint8 0..255, models and metrics see float32 in [0, 1]."""

from __future__ import annotations

import numpy as np
import torch


def to_float(x: torch.Tensor | np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Stored frames, uint8 of any shape, -> float32 in [0, 1] on `device`, in x's memory layout.

    The uint8 crosses to the device before conversion: a quarter of the bytes of float32. The layout
    is kept (a permuted view stays channels-last in memory), so callers that need NCHW-contiguous
    tensors say so. A numpy array is wrapped without a copy.
    """
    x = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
    if x.dtype != torch.uint8:
        raise TypeError(f"to_float converts stored uint8 frames, got {x.dtype}")
    return x.to(device, non_blocking=True).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Frames, float in [0, 1], -> uint8 0..255 rounded to the nearest level: the stored values to_float reads."""
    return (x * 255).round().to(torch.uint8)
