"""optical-flow: OpenCV flow between x0 and x2, both ends warped to tau (Super SloMo, eq. 4) and blended."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from benchmarks.methods.interface import TrainSummary, check_frames, tau_column
from ibutil.errors import UserError

NAME = "optical-flow"
TRAINS = False  # classical flow: nothing is fitted
SEEDED = False

ALGORITHMS = ("dis", "farneback")
DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


@dataclass(frozen=True)
class Config:
    """How flow is estimated; the warping and blending are fixed (see docs/benchmark.md)."""

    algorithm: str = "dis"  # "dis" (cv2.DISOpticalFlow) or "farneback" (cv2.calcOpticalFlowFarneback)
    dis_preset: str = "ultrafast"  # DIS quality preset: "ultrafast", "fast" or "medium"
    pad: int = 8  # black border (pixels) added before estimating flow: DIS needs sides >= 12, objects touch edges
    farneback_levels: int = 3  # Farneback pyramid levels above the full-resolution one
    farneback_window: int = 5  # Farneback averaging window side (pixels); small, because objects are small

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise UserError(f"unknown flow algorithm {self.algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
        if self.dis_preset not in DIS_PRESETS:
            raise UserError(f"unknown DIS preset {self.dis_preset!r}; choose one of {', '.join(DIS_PRESETS)}")
        if self.pad < 0:
            raise UserError(f"pad must be >= 0 pixels, got {self.pad}")
        if self.farneback_levels < 0:
            raise UserError(f"farneback_levels must be >= 0, got {self.farneback_levels}")
        if self.farneback_window < 3 or self.farneback_window % 2 == 0:
            raise UserError(f"farneback_window must be an odd number >= 3, got {self.farneback_window}")


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float RGB in [0, 1] -> (H, W) uint8 luma, the input OpenCV's flow methods take."""
    rgb = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def estimate_flow(a: np.ndarray, b: np.ndarray, config: Config) -> np.ndarray:
    """Flow F from gray frame a to gray frame b, (H, W) uint8 x2 -> (H, W, 2) float32 (dx, dy).

    OpenCV's convention: a(y, x) ~ b(y + F[y, x, 1], x + F[y, x, 0]), i.e. F is indexed by a's pixels.
    """
    p, (h, w) = config.pad, a.shape
    # The background is black, so a black border adds no edges; it only gives the pyramid room.
    a = cv2.copyMakeBorder(a, p, p, p, p, cv2.BORDER_CONSTANT, value=0)
    b = cv2.copyMakeBorder(b, p, p, p, p, cv2.BORDER_CONSTANT, value=0)
    if config.algorithm == "dis":
        flow = cv2.DISOpticalFlow_create(DIS_PRESETS[config.dis_preset]).calc(a, b, None)
    else:
        flow = cv2.calcOpticalFlowFarneback(
            a, b, None, pyr_scale=0.5, levels=config.farneback_levels, winsize=config.farneback_window,
            iterations=3, poly_n=5, poly_sigma=1.1, flags=0)
    return flow[p:p + h, p:p + w]


def backward_warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample `image` at p + flow(p) for every output pixel p: (H, W, 3), (H, W, 2) -> (H, W, 3).

    cv2.remap reads the source at the map's coordinates, so the map is the pixel grid plus the
    flow; samples falling outside the frame read black, the background colour.
    """
    h, w = flow.shape[:2]
    cols, rows = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, cols + flow[..., 0], rows + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=(0.0, 0.0, 0.0))


def interpolate(x0: np.ndarray, x2: np.ndarray, config: Config, tau: float) -> np.ndarray:
    """The frame at tau of one pair: (H, W, 3) float32 x2 in [0, 1], tau in (0, 1) -> (H, W, 3) float32 in [0, 1]."""
    g0, g2 = to_gray(x0), to_gray(x2)
    f02 = estimate_flow(g0, g2, config)  # (H, W, 2), indexed by x0's pixels
    f20 = estimate_flow(g2, g0, config)  # (H, W, 2), indexed by x2's pixels
    # Super SloMo (Jiang et al. 2018, eq. 4): flows from the unknown frame at t to each end,
    # assuming the flow field is locally smooth (so F02 and F20 can be read at that frame's pixels).
    # For pure translation by d: f02 = d, f20 = -d, f_t0 = -t d, f_t2 = (1 - t) d.
    t = float(tau)
    f_t0 = -(1 - t) * t * f02 + t * t * f20
    f_t2 = (1 - t) ** 2 * f02 - t * (1 - t) * f20
    # No visibility maps: the two warps are blended by temporal distance, as Super SloMo does without them.
    frame = (1 - t) * backward_warp(x0, f_t0) + t * backward_warp(x2, f_t2)
    return np.clip(frame, 0.0, 1.0)


def label(config: Config) -> str:
    return NAME


def train(config: Config, spec, out_dir, *, device: str = "auto", progress: bool = True) -> TrainSummary:
    return TrainSummary(method=NAME, params=0, train_flops=0, train_seconds=0.0, selected_step=None, lr=None)


def load(config: Config, out_dir=None, device: str = "auto") -> Config:
    return config  # the "model" is the flow settings


def predict(model: Config, x0: torch.Tensor, x2: torch.Tensor, tau) -> torch.Tensor:
    """(B, 3, H, W) x2 in [0, 1], tau float or (B,) -> (B, 3, H, W) in [0, 1] on x0's device and dtype.

    OpenCV runs on the CPU, one pair at a time.
    """
    check_frames(x0, x2)
    taus = tau_column(tau, x0).flatten().tolist()  # B floats
    a = x0.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).contiguous().numpy()  # (B, H, W, 3)
    b = x2.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).contiguous().numpy()
    frames = np.stack([interpolate(p, q, model, t) for p, q, t in zip(a, b, taus)])  # (B, H, W, 3)
    return torch.from_numpy(frames).permute(0, 3, 1, 2).to(device=x0.device, dtype=x0.dtype)
