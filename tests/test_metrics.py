"""Known answers for the benchmark metrics (benchmarks/scoring/metrics.py)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from benchmarks.scoring import metrics as M
from ibdata import h5format
from ibutil.errors import UserError
from render.dataset import render_dataset
from render.presets import RenderConfig


def _random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 3, size, size))


@pytest.mark.parametrize("size", [8, 32])
def test_exact_prediction_scores_perfectly(size):
    x1 = _random_images(4, size)
    assert np.array_equal(M.mse(x1, x1), np.zeros(4))
    assert np.array_equal(M.psnr(x1, x1), np.full(4, M.PSNR_CAP_DB))
    np.testing.assert_allclose(M.ssim(x1, x1), 1.0, rtol=0, atol=1e-12)


def test_average_of_two_known_images_gives_hand_computed_mse():
    # 8x8, all channels: x0 lights pixel (0, 0), x2 lights (7, 7), the true middle lights (3, 3).
    x0, x1, x2 = (np.zeros((1, 3, 8, 8)) for _ in range(3))
    x0[..., 0, 0] = 1.0
    x2[..., 7, 7] = 1.0
    x1[..., 3, 3] = 1.0
    avg = (x0 + x2) / 2
    # Per channel: errors 0.5, 0.5 and 1 at three pixels -> (0.25 + 0.25 + 1) / 64.
    expected = 1.5 / 64
    assert M.mse(avg, x1)[0] == pytest.approx(expected, abs=1e-15)
    assert M.psnr(avg, x1)[0] == pytest.approx(10 * math.log10(64 / 1.5), abs=1e-12)


def test_psnr_of_uniform_error():
    target = np.full((1, 3, 8, 8), 0.5)
    assert M.psnr(target + 0.1, target)[0] == pytest.approx(20.0, abs=1e-9)  # MSE 0.01
    assert M.psnr(target, target, cap=60.0)[0] == 60.0


def test_torch_and_numpy_inputs_agree():
    a, b = _random_images(3, 8, 1), _random_images(3, 8, 2)
    ta, tb = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    np.testing.assert_allclose(M.mse(ta, tb), M.mse(a, b), rtol=1e-6)
    np.testing.assert_allclose(M.ssim(ta, tb), M.ssim(a, b), atol=1e-6)


@pytest.mark.parametrize("size, window", [(3, 3), (8, 3), (12, 5), (14, 7), (16, 7), (32, 7), (64, 7)])
def test_ssim_window_rule(size, window):
    assert M.ssim_window(size, size) == window


@pytest.mark.parametrize("size, window", [(8, 3), (32, 7)])
def test_ssim_matches_skimage_with_documented_settings(size, window):
    # Our batched SSIM against skimage's per-image one: 8 px (window 3) and the benchmark's 32 px (window 7).
    a, b = _random_images(2, size, 3), _random_images(2, size, 4)
    ours = M.ssim(a, b)
    for i in range(2):
        ref = structural_similarity(a[i], b[i], win_size=window, data_range=1.0, channel_axis=0)
        assert ours[i] == pytest.approx(ref, abs=1e-12)
    assert np.all(ours < 0.9)


def reference_ssim(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """SSIM as metrics.ssim computed it up to commit 3dcc6b1 (torch float64, box sums by shifted slices), which
    scored the committed runs: (N, 3, H, W) x2 -> (N,)."""
    x, y = torch.from_numpy(pred), torch.from_numpy(target)
    win = M.ssim_window(*x.shape[2:])

    def means(v):  # (N, 3, H, W) -> (N, 3, H-win+1, W-win+1) means of the windows inside the image
        h, w = v.shape[2] - win + 1, v.shape[3] - win + 1
        rows = v[:, :, :h].clone()
        for i in range(1, win):
            rows += v[:, :, i:i + h]
        out = rows[:, :, :, :w].clone()
        for i in range(1, win):
            out += rows[:, :, :, i:i + w]
        return out / (win * win)

    c1, c2, cov_norm = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2, win * win / (win * win - 1)
    ux, uy = means(x), means(y)
    vx, vy = cov_norm * (means(x * x) - ux * ux), cov_norm * (means(y * y) - uy * uy)
    vxy = cov_norm * (means(x * y) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).numpy()


@pytest.fixture(scope="module")
def renders(tmp_path_factory) -> np.ndarray:
    """Every frame of a tiny rendered 32 px DoF 2 set (the benchmark's size, window 7): (N, 3, 32, 32) in [0, 1]."""
    path = render_dataset(RenderConfig(dof=2, size=32, frames=8, train_sequences=1, test_sequences=4),
                          tmp_path_factory.mktemp("ssim") / "d2.h5", workers=1, progress=False)
    frames = np.concatenate([h5format.read_split(path, s).frames.reshape(-1, 32, 32, 3) for s in ("train", "test")])
    return frames.transpose(0, 3, 1, 2).astype(np.float64) / 255.0


def test_ssim_equals_the_committed_implementation_on_renders_and_hedges(renders):
    """The OpenCV SSIM scores what the committed runs were scored with, to float rounding (1e-10; about 1e-14
    seen): real renders against the next frame, and blurred, shifted, grey, flat and noisy predictions, over
    several SSIM_BLOCKs with a partial last one, with and without the targets' shared stats."""
    target = renders[1:]
    hwc = renders[:-1].transpose(0, 2, 3, 1).astype(np.float32)
    blurred = np.stack([cv2.GaussianBlur(im, (0, 0), 1.5) for im in hwc]).transpose(0, 3, 1, 2)
    rng = np.random.default_rng(0)
    preds = {"next frame": renders[:-1], "itself": target, "blurred": blurred.astype(np.float64),
             "shifted": np.roll(target, 2, axis=3), "grey": target.mean(axis=1, keepdims=True).repeat(3, axis=1),
             "flat": np.full_like(target, 0.5), "noise": rng.uniform(0, 1, target.shape)}
    assert len(target) > 2 * M.SSIM_BLOCK and len(target) % M.SSIM_BLOCK
    stats = M.ssim_stats(target)
    for name, pred in preds.items():
        ref = reference_ssim(pred, target)
        np.testing.assert_allclose(M.ssim(pred, target), ref, rtol=0, atol=1e-10, err_msg=name)
        assert np.array_equal(M.ssim(pred, target, stats), M.ssim(pred, target)), name
    assert np.all(reference_ssim(preds["itself"], target) > 1 - 1e-12)
    with pytest.raises(ValueError):  # stats of other targets
        M.ssim(renders[:3], renders[:3], stats)


def test_ssim_refuses_tiny_images():
    x = np.zeros((1, 3, 2, 2))
    with pytest.raises(UserError):
        M.ssim(x, x)


def _square(size: int, top: int, left: int, side: int, value: float = 1.0) -> np.ndarray:
    img = np.zeros((1, 3, size, size))
    img[..., top:top + side, left:left + side] = value
    return img


def test_iou_and_centroid_of_shifted_square():
    masks = np.zeros((1, 8, 8), np.uint8)
    masks[0, 2:4, 2:4] = 1  # true 2x2 object, centroid (2.5, 2.5)
    pred = _square(8, 2, 3, 2)  # shifted right by one pixel, centroid (2.5, 3.5)
    assert M.foreground_iou(pred, masks)[0] == pytest.approx(2 / 6)
    assert M.centroid_error(pred, masks)[0] == pytest.approx(1.0)
    pred = _square(8, 5, 6, 2)  # disjoint, shifted by (3, 4): distance 5
    assert M.foreground_iou(pred, masks)[0] == 0.0
    assert M.centroid_error(pred, masks)[0] == pytest.approx(5.0)


def test_foreground_is_the_union_of_all_objects():
    masks = np.zeros((1, 8, 8), np.uint8)
    masks[0, 0:2, 0:2] = 1
    masks[0, 6:8, 6:8] = 2
    masks[0, 1, 1] = 3  # an occluding third object inside the first one's box
    pred = (masks > 0)[:, None].repeat(3, axis=1) * 0.7
    assert M.foreground_iou(pred, masks)[0] == 1.0
    assert M.centroid_error(pred, masks)[0] == 0.0
    # One object missing: IoU 1/2, centroid moves from (3.5, 3.5) to (0.5, 0.5).
    pred[..., 6:8, 6:8] = 0
    assert M.foreground_iou(pred, masks)[0] == pytest.approx(0.5)
    assert M.centroid_error(pred, masks)[0] == pytest.approx(3 * math.sqrt(2))


def test_silhouette_threshold_and_empty_cases():
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[0, 2:4, 2:4] = 1
    faint = np.full((2, 3, 8, 8), M.SILHOUETTE_THRESHOLD)  # not above the threshold: background
    assert not M.silhouette(faint).any()
    assert M.silhouette(faint + 1e-6).all()
    iou, err = M.foreground_iou(faint, masks), M.centroid_error(faint, masks)
    # Triplet 0: object missed entirely -> IoU 0, centroid error = the image diagonal.
    assert iou[0] == 0.0 and err[0] == pytest.approx(math.hypot(8, 8))
    # Triplet 1: nothing true, nothing predicted -> perfect.
    assert iou[1] == 1.0 and err[1] == 0.0
    # Something predicted where nothing is true -> IoU 0, diagonal penalty.
    bright = _square(8, 0, 0, 1)
    assert M.foreground_iou(bright, masks[1:])[0] == 0.0
    assert M.centroid_error(bright, masks[1:])[0] == pytest.approx(math.hypot(8, 8))


def test_all_metrics_and_mean():
    x1 = _square(8, 2, 2, 3, 0.8).repeat(2, axis=0)
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[:, 2:5, 2:5] = 1
    pred = x1.copy()
    pred[1] = _square(8, 2, 3, 3, 0.8)[0]  # second prediction one pixel to the right
    per = M.all_metrics(pred, x1, masks)
    assert tuple(per) == M.METRIC_NAMES
    assert all(v.shape == (2,) for v in per.values())
    assert per["mse"][0] == 0 and per["psnr"][0] == M.PSNR_CAP_DB and per["ssim"][0] == pytest.approx(1.0)
    assert per["iou"][1] == pytest.approx(6 / 12) and per["centroid_error"][1] == pytest.approx(1.0)
    assert per["mse"][1] == pytest.approx(6 * 0.64 / 64)  # 2 columns of 3 pixels differ, all channels
    mean = M.mean_metrics(per)
    assert mean["iou"] == pytest.approx(0.75) and mean["centroid_error"] == pytest.approx(0.5)
    assert all(isinstance(v, float) for v in mean.values())
    # Batches are pooled by triplet, not averaged per batch.
    first = {k: v[:1] for k, v in per.items()}
    second = {k: np.concatenate([v[1:]] * 3) for k, v in per.items()}
    assert M.mean_metrics([first, second])["iou"] == pytest.approx((1 + 3 * 0.5) / 4)
    with pytest.raises(UserError):
        M.mean_metrics([])


def test_shape_errors_are_user_errors():
    with pytest.raises(UserError):
        M.mse(np.zeros((1, 3, 8, 8)), np.zeros((1, 3, 8, 4)))
    with pytest.raises(UserError):
        M.mse(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 3)))
    with pytest.raises(UserError):
        M.foreground_iou(np.zeros((1, 3, 8, 8)), np.zeros((2, 8, 8), np.uint8))


def test_a_shared_truth_scores_like_all_metrics_bit_for_bit():
    """The benchmark makes the targets' share once (truth) and scores every row with score(): the same bits as
    all_metrics, SSIM included over several SSIM_BLOCKs (and still skimage's value)."""
    n = 2 * M.SSIM_BLOCK + 5
    target, masks = _random_images(n, 16, 5), np.random.default_rng(6).integers(0, 3, (n, 16, 16))
    truth = M.truth(target, masks)
    for seed in (7, 8):  # two rows on the same targets
        pred = _random_images(n, 16, seed)
        plain, shared = M.all_metrics(pred, target, masks), M.score(pred, truth)
        assert tuple(shared) == M.METRIC_NAMES + ("sharpness",)
        assert all(np.array_equal(plain[k], shared[k]) for k in plain)
        assert np.array_equal(shared["sharpness"], M.sharpness(pred, target))
        assert np.array_equal(M.ssim(pred, target, truth.ssim), M.ssim(pred, target))
        i = n - 1  # the last, partial block
        ref = structural_similarity(pred[i], target[i], win_size=7, data_range=1.0, channel_axis=0)
        assert shared["ssim"][i] == pytest.approx(ref, abs=1e-12)
