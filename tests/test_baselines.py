"""Known answers for the frame baselines: pixel average, optical flow and the frame CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.scoring import metrics as M
from benchmarks.methods import frame_cnn as fc
from benchmarks.methods import optical_flow as of
from benchmarks.methods import pixel_average as pa
from benchmarks.methods.interface import TrainSpec
from ibutil.errors import UserError


def square_triplet(size: int, side: int, top: int, left: int, dy: int, dx: int,
                   colour=(0.9, 0.5, 0.2)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
    """A square at (top, left) in x1 that moves by (dy, dx) per frame: x0, x1, x2 (1, 3, H, W), mask (1, H, W)."""
    frames = []
    for t in (-1, 0, 1):
        img = torch.zeros(1, 3, size, size)
        r, c = top + t * dy, left + t * dx
        img[0, :, r:r + side, c:c + side] = torch.tensor(colour)[:, None, None]
        frames.append(img)
    mask = np.zeros((1, size, size), np.uint8)
    mask[0, top:top + side, left:left + side] = 1
    return (*frames, mask)


# ----------------------------------------------------------------------------- pixel average


def test_pixel_average_is_the_mean():
    x0, x2 = torch.full((2, 3, 8, 8), 0.2), torch.full((2, 3, 8, 8), 0.6)
    x1 = torch.full((2, 3, 8, 8), 0.4)  # a linear fade: the average is exact
    pred = pa.predict(pa.Config(), x0, x2, 0.5)
    assert torch.allclose(pred, x1, atol=1e-7)
    assert M.mse(pred, x1).max() < 1e-14


def test_pixel_average_ghosts_a_moving_square():
    x0, x1, x2, mask = square_triplet(8, 2, 3, 3, 0, 2)
    pred = pa.predict(pa.Config(), x0, x2, 0.5)
    # Two half-bright ghosts at columns 1-2 and 5-6; the true square (columns 3-4) is black.
    assert torch.allclose(pred[0, :, 3:5, 1:3], x0[0, :, 3:5, 1:3] / 2)
    assert pred[0, :, 3:5, 3:5].abs().max() == 0
    assert M.foreground_iou(pred, mask)[0] == 0.0


# ----------------------------------------------------------------------------- optical flow


def test_backward_warp_direction():
    # out(p) = in(p + flow(p)): a flow of +1 in x reads the pixel to the right, shifting content left.
    img = np.zeros((8, 8, 3), np.float32)
    img[4, 5] = 1.0
    flow = np.zeros((8, 8, 2), np.float32)
    flow[..., 0] = 1.0
    out = of.backward_warp(img, flow)
    assert out[4, 4].tolist() == [1.0, 1.0, 1.0]
    assert out.sum() == pytest.approx(3.0)


@pytest.mark.parametrize("algorithm", of.ALGORITHMS)
def test_estimated_flow_points_from_a_to_b(algorithm):
    x0, _, x2, _ = square_triplet(32, 8, 12, 12, 1, 2)  # moves (+2, +4) pixels from x0 to x2
    a = of.to_gray(x0[0].permute(1, 2, 0).numpy())
    b = of.to_gray(x2[0].permute(1, 2, 0).numpy())
    flow = of.estimate_flow(a, b, of.Config(algorithm=algorithm))
    inside = a > 0
    dx, dy = flow[inside].mean(axis=0)
    assert dx == pytest.approx(4.0, abs=0.5) and dy == pytest.approx(2.0, abs=0.5)


@pytest.mark.parametrize("dy, dx", [(0, 2), (0, -2), (2, 0), (-2, 0), (1, 1), (2, -2)])
def test_flow_is_nearly_exact_on_a_translating_square(dy, dx):
    # A 32x32 frame, an 8x8 square moving 2k = 2*|d| pixels between the ends (k = 2 frames apart).
    x0, x1, x2, mask = square_triplet(32, 8, 12, 12, dy, dx)
    flow_pred, avg_pred = of.predict(of.Config(), x0, x2, 0.5), pa.predict(pa.Config(), x0, x2, 0.5)
    flow_mse, avg_mse = M.mse(flow_pred, x1)[0], M.mse(avg_pred, x1)[0]
    assert flow_mse < avg_mse / 20, (flow_mse, avg_mse)
    assert M.foreground_iou(flow_pred, mask)[0] > 0.9
    assert M.centroid_error(flow_pred, mask)[0] < 0.25


@pytest.mark.parametrize("algorithm", of.ALGORITHMS)
def test_flow_beats_average_on_small_images(algorithm):
    # The test-suite size: 8x8 frames, a 3x3 square shifted by 2 pixels between the ends.
    config = of.Config(algorithm=algorithm)
    for dy, dx in [(0, 1), (1, 0), (0, -1), (-1, 0)]:
        x0, x1, x2, mask = square_triplet(8, 3, 2, 2, dy, dx)
        flow_mse = M.mse(of.predict(config, x0, x2, 0.5), x1)[0]
        avg_mse = M.mse(pa.predict(pa.Config(), x0, x2, 0.5), x1)[0]
        assert flow_mse < avg_mse / 4, (algorithm, dy, dx, flow_mse, avg_mse)


def test_flow_predict_keeps_dtype_device_and_range():
    x0, _, x2, _ = square_triplet(8, 3, 2, 2, 0, 1)
    pred = of.predict(of.Config(), x0.double(), x2.double(), 0.5)
    assert pred.dtype == torch.float64 and pred.device == x0.device and pred.shape == x0.shape
    assert pred.min() >= 0 and pred.max() <= 1


@pytest.mark.parametrize("kwargs", [
    dict(algorithm="lucas-kanade"), dict(dis_preset="slow"), dict(pad=-1),
    dict(farneback_levels=-1), dict(farneback_window=4), dict(farneback_window=1),
])
def test_bad_flow_config_raises(kwargs):
    with pytest.raises(UserError):
        of.Config(**kwargs)


# ----------------------------------------------------------------------------- frame CNN

def spec(gaps, seed=0, steps=20, batch_size=8) -> TrainSpec:
    """fit()'s spec for frames in memory (the data field is unused), without validation selection."""
    return TrainSpec(data="(in memory)", gaps=gaps, steps=steps, batch_size=batch_size, seed=seed, val_split="none")


def square_sequences(n: int, n_frames: int, rng: np.random.Generator, size: int = 8, side: int = 3) -> torch.Tensor:
    """n sequences of a random-colour square moving one pixel per frame along an axis: (n, T, 3, H, W) uint8."""
    out = np.zeros((n, n_frames, 3, size, size), np.uint8)
    for i in range(n):
        colour = rng.integers(80, 256, 3)
        dy, dx = [(0, 1), (1, 0), (0, -1), (-1, 0)][rng.integers(4)]
        lo, hi = n_frames // 2 + 1, size - side - n_frames // 2 - 1  # the path stays clear of every edge
        top, left = rng.integers(min(lo, hi), max(lo, hi) + 1, 2)
        for t in range(n_frames):
            r, c = top + (t - n_frames // 2) * dy, left + (t - n_frames // 2) * dx
            out[i, t, :, r:r + side, c:c + side] = colour[:, None, None]
    return torch.from_numpy(out)


def as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255


@pytest.fixture(scope="module")
def squares():
    rng = np.random.default_rng(0)
    return square_sequences(512, 3, rng), square_sequences(128, 3, rng)  # train, held-out test (gap 1)


def test_untrained_cnn_is_the_pixel_blend():
    model = fc.FrameCNN(fc.Config(channels=8))
    model.reset_parameters(torch.Generator().manual_seed(0))
    x0, _, x2, _ = square_triplet(8, 3, 2, 2, 0, 1)
    for tau in (0.25, 0.5, 0.75):
        assert torch.allclose(fc.predict(model, x0, x2, tau), pa.predict(pa.Config(), x0, x2, tau))


def test_cnn_learns_translation_and_beats_the_average(squares):
    train, test = squares
    model, run = fc.fit(fc.Config(channels=16, lr=3e-3), train, spec((1,), steps=150, batch_size=16),
                        device="cpu", progress=False)
    curve = run.curve
    x0, x1, x2 = (as_float(test[:, t]) for t in range(3))
    cnn_mse = M.mse(fc.predict(model, x0, x2, 0.5), x1).mean()
    avg_mse = M.mse(pa.predict(pa.Config(), x0, x2, 0.5), x1).mean()
    assert cnn_mse < avg_mse / 3, (cnn_mse, avg_mse)
    # The training curve: one row per block of 150 // 100 = 1 step, and the loss fell.
    assert [step for step, _ in curve] == list(range(1, 151))
    first, last = np.mean([v for _, v in curve[:10]]), np.mean([v for _, v in curve[-10:]])
    assert last < first / 2


def test_cnn_is_conditioned_on_tau():
    # Gap 2 on 5-frame sequences: the targets are frames t-1, t, t+1 at tau = 1/4, 1/2, 3/4.
    rng = np.random.default_rng(1)
    train, test = square_sequences(512, 5, rng), square_sequences(64, 5, rng)
    model, _ = fc.fit(fc.Config(channels=16, lr=3e-3), train, spec((2,), steps=200, batch_size=16),
                      device="cpu", progress=False)
    x0, x2 = as_float(test[:, 0]), as_float(test[:, 4])
    for j, tau in ((1, 0.25), (3, 0.75)):
        truth = as_float(test[:, j])
        cnn = M.mse(fc.predict(model, x0, x2, tau), truth).mean()
        blend = M.mse(pa.predict(pa.Config(), x0, x2, tau), truth).mean()
        other = M.mse(fc.predict(model, x0, x2, 1 - tau), truth).mean()  # the mirrored position is wrong
        assert cnn < blend / 2 and cnn < other / 2, (tau, cnn, blend, other)


def test_cnn_training_is_deterministic_from_the_seed(squares):
    train, _ = squares
    a = fc.fit(fc.Config(channels=8), train, spec((1,), seed=7), device="cpu", progress=False)[0].state_dict()
    b = fc.fit(fc.Config(channels=8), train, spec((1,), seed=7), device="cpu", progress=False)[0].state_dict()
    c = fc.fit(fc.Config(channels=8), train, spec((1,), seed=8), device="cpu", progress=False)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_cnn_handles_sizes_the_pooling_does_not_divide():
    model = fc.FrameCNN(fc.Config(channels=8))
    model.reset_parameters(torch.Generator().manual_seed(0))
    x = torch.rand(2, 3, 7, 10, generator=torch.Generator().manual_seed(1))
    assert fc.predict(model, x, x, torch.tensor([0.3, 0.6])).shape == (2, 3, 7, 10)


def test_checkpoint_round_trip(tmp_path, squares):
    train, _ = squares
    model, _ = fc.fit(fc.Config(channels=8), train, spec((1,), seed=3), device="cpu", progress=False)
    path = fc.save_checkpoint(model, tmp_path / "sub" / "frame_cnn.pt")
    assert [p.name for p in path.parent.iterdir()] == ["frame_cnn.pt"]  # no temporary file left
    loaded = fc.load_checkpoint(path, device="cpu")
    assert loaded.config == model.config and not loaded.training
    x0, _, x2, _ = square_triplet(8, 3, 2, 2, 0, 1)
    assert torch.equal(fc.predict(loaded, x0, x2, 0.5), fc.predict(model, x0, x2, 0.5))


def test_bad_checkpoints_raise(tmp_path):
    with pytest.raises(UserError):
        fc.load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError):
        fc.load_checkpoint(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(UserError):
        fc.load_checkpoint(foreign)
    old = tmp_path / "old.pt"  # version 1: the middle-frame-only network
    torch.save({"format": "frame-cnn", "version": 1, "config": '{"channels": 8}', "state_dict": {}}, old)
    with pytest.raises(UserError, match="version 1"):
        fc.load_checkpoint(old)
    future = tmp_path / "future.pt"
    torch.save({"format": "frame-cnn", "meta": {"version": 2, "config": {"depth": 5}}, "state": {}}, future)
    with pytest.raises(UserError):
        fc.load_checkpoint(future)


@pytest.mark.parametrize("field, value", [
    ("channels", 0), ("channels", 1.5), ("channels", True), ("lr", 0.0), ("lr", True), ("lr", float("nan")),
    ("loss", "huber"),
])
def test_bad_cnn_config_raises(field, value):
    with pytest.raises(UserError):
        fc.Config(**{field: value})


def test_bad_training_data_raises():
    config = fc.Config(channels=8)
    with pytest.raises(UserError):  # float frames
        fc.fit(config, torch.zeros(2, 3, 3, 8, 8), spec((1,)), device="cpu", progress=False)
    with pytest.raises(UserError):  # channels last
        fc.fit(config, torch.zeros(2, 3, 8, 8, 3, dtype=torch.uint8), spec((1,)), device="cpu", progress=False)
    with pytest.raises(UserError):  # too short for gap 2
        fc.fit(config, torch.zeros(2, 3, 3, 8, 8, dtype=torch.uint8), spec((2,)), device="cpu", progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_cuda_without_cuda_is_a_user_error():
    from ibutil.device import resolve_device

    with pytest.raises(UserError):
        resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cnn_trains_on_cuda_and_predicts_for_cpu_inputs(squares):
    train, test = squares
    model, _ = fc.fit(fc.Config(channels=8), train, spec((1,)), device="cuda", progress=False)
    assert model.device.type == "cuda"
    x0, x2 = as_float(test[:4, 0]), as_float(test[:4, 2])
    pred = fc.predict(model, x0, x2, 0.5)
    assert pred.device.type == "cpu" and pred.shape == x0.shape
    assert of.predict(of.Config(), x0.cuda(), x2.cuda(), 0.5).device.type == "cuda"
