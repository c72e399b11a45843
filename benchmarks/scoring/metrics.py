"""Benchmark metrics: MSE, PSNR, SSIM, the mask-based location metrics, sharpness, and the table-based
pose and position metrics of benchmarks.scoring.pose and benchmarks.scoring.position (defined in docs/benchmark.md)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ibutil.errors import UserError

# PSNR of an exact prediction is infinite; report this finite cap instead so means stay finite.
PSNR_CAP_DB = 100.0
# A predicted pixel is object (not background) when its brightest channel exceeds this value.
# The background is pure black; a mask pixel is object when the object covers most of it, and a
# rendered edge pixel is about coverage x object brightness (0.3..1 under the default lights), so
# at half coverage it is 0.15..0.5. 0.3 (about 77/255) reproduces the masks best from the true
# frames without losing dark shading (docs/benchmark.md gives the measured ceiling).
SILHOUETTE_THRESHOLD = 0.3
# SSIM uses skimage's uniform window of this side, shrunk for small images (see ssim_window).
SSIM_MAX_WINDOW = 7
METRIC_NAMES = ("mse", "psnr", "ssim", "iou", "centroid_error")
# What all_metrics adds when given a table: sharpness, then the table's own metrics (per DoF).
TABLE_METRIC_NAMES = {1: ("sharpness", "pose_error_deg", "nn_distance"),
                      2: ("sharpness", "pose_error_deg", "nn_distance"),
                      6: ("sharpness", "position_error_px", "position_found", "placement_error_px")}


def _as_numpy(images, name: str) -> np.ndarray:
    """(N, 3, H, W) float64 numpy from a numpy array or a torch tensor on any device."""
    if isinstance(images, torch.Tensor):
        images = images.detach().to("cpu", torch.float64).numpy()
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 4 or images.shape[1] != 3:
        raise UserError(f"{name} must have shape (N, 3, H, W), got {images.shape}; "
                        "convert (H, W, 3) frames with .transpose(0, 3, 1, 2)")
    return images


def _check_pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    pred, target = _as_numpy(pred, "pred"), _as_numpy(target, "target")
    if pred.shape != target.shape:
        raise UserError(f"pred {pred.shape} and target {target.shape} differ in shape; "
                        "predict one frame per target")
    return pred, target


def mse(pred, target) -> np.ndarray:
    """Per-image mean squared error over pixels and channels: (N, 3, H, W) x2 -> (N,)."""
    pred, target = _check_pair(pred, target)
    return ((pred - target) ** 2).mean(axis=(1, 2, 3))


def psnr(pred, target, cap: float = PSNR_CAP_DB) -> np.ndarray:
    """Per-image PSNR in dB for data range 1, 10*log10(1/MSE), capped at `cap` (exact -> cap)."""
    return _psnr_of(mse(pred, target), cap)


def _psnr_of(err: np.ndarray, cap: float = PSNR_CAP_DB) -> np.ndarray:
    """PSNR from per-image MSE (N,): 10*log10(1/MSE), capped at `cap`."""
    with np.errstate(divide="ignore"):
        value = 10.0 * np.log10(1.0 / err)  # +inf where err == 0
    return np.minimum(value, cap)


def ssim_window(height: int, width: int) -> int:
    """SSIM window side: the largest odd number <= min(7, min(H, W) // 2), at least 3.

    skimage averages SSIM only over pixels at least (win-1)/2 from the border, so a 7-pixel
    window on an 8x8 image would score just its central 2x2; 3 keeps the central 6x6.
    """
    side = min(height, width)
    if side < 3:
        raise UserError(f"SSIM needs images of at least 3x3 pixels, got {height}x{width}")
    half = min(SSIM_MAX_WINDOW, side // 2)
    return max(3, half if half % 2 == 1 else half - 1)


# Frames per SSIM block: OpenCV filters the 3 * SSIM_BLOCK channels of a block side by side in one call (its Python
# binding takes at most 128 channels), and a block's float64 arrays (about 0.3 MB each at 32 px) stay in the CPU cache.
SSIM_BLOCK = 16
SSIM_C1, SSIM_C2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2  # skimage's K1, K2 at data_range 1


def _channels_last(v: np.ndarray) -> np.ndarray:
    """(B, 3, H, W) float64 -> (H, W, 3B): every channel of every frame side by side, as OpenCV filters them."""
    b, c, h, w = v.shape
    return cv2.transpose(np.ascontiguousarray(v).reshape(b * c, h * w)).reshape(h, w, b * c)


def _window_means(v: np.ndarray, win: int, square: bool = False) -> np.ndarray:
    """(H, W, C) -> (H-win+1, W-win+1, C): the means of v (or of v * v with `square`) over the win x win windows
    inside the image. OpenCV's box filter (running sums, float64 throughout); the crop drops every window that
    reaches the border, so its border rule plays no part."""
    r = win // 2
    box = cv2.sqrBoxFilter(v, -1, (win, win)) if square else cv2.blur(v, (win, win))
    return box.reshape(v.shape)[r:v.shape[0] - r, r:v.shape[1] - r]  # reshape: OpenCV drops a channel axis of 1


def ssim_stats(target) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """SSIM's share of the targets (N, 3, H, W), the same for every prediction of them: per SSIM_BLOCK of frames,
    the frames channels-last y (H, W, 3B) and, on the windows inside the image (h, w, 3B) with h = H - win + 1, the
    window means uy, uy^2 + c1 and cov_norm * (E[y^2] - uy^2) + c2 (the variance term of the denominator), float64."""
    y_all = _as_numpy(target, "target")
    win = ssim_window(*y_all.shape[2:])
    cov_norm = win * win / (win * win - 1)  # sample covariance, skimage's default
    out = []
    for start in range(0, len(y_all), SSIM_BLOCK):
        y = _channels_last(y_all[start:start + SSIM_BLOCK])
        uy, uyy = _window_means(y, win), _window_means(y, win, square=True)
        uy2 = cv2.multiply(uy, uy)
        out.append((y, uy, uy2 + SSIM_C1, cv2.addWeighted(uyy, cov_norm, uy2, -cov_norm, SSIM_C2)))
    return out


def ssim(pred, target, stats: list | None = None) -> np.ndarray:
    """Per-image SSIM by skimage's definition (structural_similarity: uniform window, data_range 1, sample
    covariance, the mean over pixels at least (win-1)/2 from the border, then over RGB), for a whole batch
    at once: (N, 3, H, W) x2 -> (N,). tests/test_metrics.py checks it against skimage to 1e-12.

    `stats`: ssim_stats(target), when the caller scores several predictions of the same targets (the same
    values, computed once). The pixels averaged are exactly those whose window lies inside the image, so a
    padding-free (valid) box filter gives their local statistics: no border rule is involved.
    """
    pred, target = _check_pair(pred, target)
    win = ssim_window(*pred.shape[2:])
    cov_norm = win * win / (win * win - 1)
    stats = ssim_stats(target) if stats is None else stats
    if len(stats) != -(-len(pred) // SSIM_BLOCK):
        raise ValueError(f"ssim: stats of {len(stats)} blocks for {len(pred)} frames; pass ssim_stats(target)")
    out = []
    for start, (y, uy, uy2c1, vyc2) in zip(range(0, len(pred), SSIM_BLOCK), stats):
        x = _channels_last(pred[start:start + SSIM_BLOCK])  # (H, W, 3B)
        ux, uxx = _window_means(x, win), _window_means(x, win, square=True)
        uxy = _window_means(cv2.multiply(x, y), win)
        t, ux2 = cv2.multiply(ux, uy), cv2.multiply(ux, ux)  # (h, w, 3B) each
        # (2 ux uy + c1)(2 vxy + c2) / ((ux^2 + uy^2 + c1)(vx + vy + c2)), v = cov_norm * (E[ab] - ua ub); OpenCV's
        # addWeighted makes a * alpha + b * beta + gamma in one float64 pass
        num = cv2.multiply(cv2.addWeighted(t, 2.0, t, 0.0, SSIM_C1),
                           cv2.addWeighted(uxy, 2 * cov_norm, t, -2 * cov_norm, SSIM_C2))
        den = cv2.multiply(cv2.add(ux2, uy2c1), cv2.add(cv2.addWeighted(uxx, cov_norm, ux2, -cov_norm, 0.0), vyc2))
        s = cv2.divide(num, den).reshape(-1, x.shape[2])  # (h * w, 3B)
        out.append(s.mean(axis=0).reshape(-1, 3).mean(axis=1))
    return np.concatenate(out)


def silhouette(images, threshold: float = SILHOUETTE_THRESHOLD) -> np.ndarray:
    """Object pixels of images on a black background: (N, 3, H, W) -> (N, H, W) bool, max channel > threshold."""
    x = _as_numpy(images, "images")
    return np.maximum(np.maximum(x[:, 0], x[:, 1]), x[:, 2]) > threshold  # = x.max(axis=1), without its slow strides


def _foreground(masks, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.shape != (shape[0], *shape[2:]):
        raise UserError(f"masks must have shape (N, H, W) = {(shape[0], *shape[2:])}, got {masks.shape}")
    return masks > 0  # 0 = background, k = object k


def foreground_iou(pred, masks, threshold: float = SILHOUETTE_THRESHOLD) -> np.ndarray:
    """Per-image IoU of the predicted silhouette and the true foreground (mask > 0); 1 where both are empty."""
    pred_fg = silhouette(pred, threshold)  # (N, H, W) bool
    true_fg = _foreground(masks, _as_numpy(pred, "pred").shape)
    inter = (pred_fg & true_fg).sum(axis=(1, 2))
    union = (pred_fg | true_fg).sum(axis=(1, 2))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def _centroids(fg: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, 2) mean (row, col) of the True pixels; NaN where there are none."""
    rows = np.arange(fg.shape[1], dtype=np.float64)[None, :, None]
    cols = np.arange(fg.shape[2], dtype=np.float64)[None, None, :]
    count = fg.sum(axis=(1, 2)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (fg * rows).sum(axis=(1, 2)) / count
        c = (fg * cols).sum(axis=(1, 2)) / count
    return np.stack([r, c], axis=1)


def centroid_error(pred, masks, threshold: float = SILHOUETTE_THRESHOLD) -> np.ndarray:
    """Per-image distance in pixels between the predicted silhouette's and the true foreground's centroids.

    0 where both are empty; the image diagonal (the largest possible distance) where exactly one is.
    """
    pred_fg = silhouette(pred, threshold)
    true_fg = _foreground(masks, _as_numpy(pred, "pred").shape)
    dist = np.linalg.norm(_centroids(pred_fg) - _centroids(true_fg), axis=1)  # NaN if either is empty
    pred_empty, true_empty = ~pred_fg.any(axis=(1, 2)), ~true_fg.any(axis=(1, 2))
    diagonal = math.hypot(*pred_fg.shape[1:])
    dist = np.where(pred_empty != true_empty, diagonal, dist)
    return np.where(pred_empty & true_empty, 0.0, dist)


def gradient_energy(images) -> np.ndarray:
    """Sum over pixels and channels of squared forward differences along rows and columns: (N, 3, H, W) -> (N,)."""
    x = _as_numpy(images, "images")
    return (np.diff(x, axis=2) ** 2).sum(axis=(1, 2, 3)) + (np.diff(x, axis=3) ** 2).sum(axis=(1, 2, 3))


def sharpness(pred, target) -> np.ndarray:
    """Per-image gradient energy of the prediction over that of the truth: 1 as sharp, < 1 blurred, > 1 noisy.

    1 where both are flat; inf where only the truth is (no preset renders a flat frame).
    """
    pred, target = _check_pair(pred, target)
    return _sharpness_of(gradient_energy(pred), gradient_energy(target))


def _sharpness_of(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """sharpness from the gradient energies (N,) of the prediction and of the truth."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 0, p / np.where(t > 0, t, 1.0), np.where(p > 0, np.inf, 1.0))


def table_for(path: str | os.PathLike, cache: str | os.PathLike, progress: bool = True,
              step_deg: float | None = None):
    """The reference table of a dataset file, from `<cache>/tables/` or rendered once from the file's config:
    a benchmarks.scoring.pose.PoseTable for dof 1 and 2 (grid `step_deg`; None: pose.DEFAULT_STEP_DEG), a
    benchmarks.scoring.position.ObjectTemplates for dof 6."""
    from benchmarks.scoring import pose, position, tables  # these render; plain metrics need no GL

    config = tables.dataset_config(path)
    if config.dof == 6:
        return position.object_templates(config, cache, progress=progress)
    return pose.pose_table(config, cache, step_deg=step_deg, progress=progress)


def table_metrics(pred, factors, table, device=None, masses=None) -> dict[str, np.ndarray]:
    """The table's metrics per prediction: pose_error_deg and nn_distance (dof 1, 2) or position_error_px,
    position_found and placement_error_px (dof 6); factors (N, F) are the true factors of the predicted frames;
    `masses` (dof 6, optional): position.true_mass of those factors, when several predictions share them."""
    from benchmarks.scoring import pose, position

    if isinstance(table, pose.PoseTable):
        return pose.pose_metrics(pred, factors, table, device)
    if isinstance(table, position.ObjectTemplates):
        return position.position_metrics(pred, factors, table, device, masses=masses)
    raise TypeError(f"not a table from table_for: {type(table).__name__}")


@dataclass(frozen=True)
class Truth:
    """One set of true frames and what every prediction scored against them shares, computed once by truth():
    the benchmark scores about a dozen rows on the same targets and passes this to score() for each."""

    frames: np.ndarray  # (N, 3, H, W) float64 in [0, 1]
    masks: np.ndarray  # (N, H, W) true labels, 0 = background
    ssim: list  # ssim_stats(frames): SSIM's share of the targets, per SSIM_BLOCK
    energy: np.ndarray  # (N,) gradient_energy(frames), sharpness's denominator
    factors: np.ndarray | None  # (N, F) the true factors (table metrics), None without a table
    masses: torch.Tensor | None  # dof 6: (N, K, H*W) each object's true pixel mass (position.true_mass), else None


def truth(target, masks, factors=None, table=None, device=None) -> Truth:
    """What score() needs of the targets (N, 3, H, W) in [0, 1], their masks (N, H, W) and, with a `table`
    (table_for), their factors (N, F) and the table's per-target data (on `device`)."""
    from benchmarks.scoring import position

    target = _as_numpy(target, "target")
    masks = _foreground(masks, target.shape)
    if table is not None and factors is None:
        raise UserError("all_metrics: a table needs the factors of the target frames")
    factors = None if factors is None else np.asarray(factors, dtype=np.float64)
    masses = None
    if isinstance(table, position.ObjectTemplates):
        masses = position.true_mass(table, factors, torch.device(device or "cpu"))
    return Truth(target, masks, ssim_stats(target), gradient_energy(target), factors, masses)


def score(pred, truth: Truth, table=None, device=None, threshold: float = SILHOUETTE_THRESHOLD) -> dict[str, np.ndarray]:
    """Every metric of predictions (N, 3, H, W) in [0, 1] against a Truth: METRIC_NAMES and sharpness, and
    with the `table` the truth was made with, the table's metrics (on `device`). Equal to all_metrics."""
    pred, target = _check_pair(pred, truth.frames)
    err = mse(pred, target)
    out = {"mse": err, "psnr": _psnr_of(err), "ssim": ssim(pred, target, truth.ssim),
           "iou": foreground_iou(pred, truth.masks, threshold),
           "centroid_error": centroid_error(pred, truth.masks, threshold),
           "sharpness": _sharpness_of(gradient_energy(pred), truth.energy)}
    if table is not None:
        out.update(table_metrics(pred, truth.factors, table, device, truth.masses))
    return out


def all_metrics(pred, target, masks, threshold: float = SILHOUETTE_THRESHOLD, factors=None,
                table=None, device=None) -> dict[str, np.ndarray]:
    """Every metric per triplet: pred/target (N, 3, H, W) in [0, 1], masks (N, H, W) of the target -> name -> (N,).

    The five METRIC_NAMES always; with a `table` (from table_for) and the target's `factors` (N, F)
    also TABLE_METRIC_NAMES[dof]: sharpness and the pose or position metrics (those on `device`,
    e.g. "cuda"; default the CPU, since pred is converted to numpy here). To score several predictions
    of the same targets, make their truth() once and call score() per prediction.
    """
    pred, target = _check_pair(pred, target)
    out = score(pred, truth(target, masks, factors, table, device), table, device, threshold)
    return out if table is not None else {name: out[name] for name in METRIC_NAMES}


def mean_metrics(per_triplet: dict[str, np.ndarray] | list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Average each metric over all triplets: name -> (N,), or a list of such batches, to name -> float."""
    batches = [per_triplet] if isinstance(per_triplet, dict) else list(per_triplet)
    if not batches:
        raise UserError("no triplets to average; the test split gave none for this gap")
    return {name: float(np.mean(np.concatenate([b[name] for b in batches]))) for name in batches[0]}
