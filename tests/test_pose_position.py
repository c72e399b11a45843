"""Known answers for the v2 metrics on tiny real renders: pose tables (DoF 1, 2), position error (DoF 6), sharpness."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from benchmarks.scoring import metrics as M
from benchmarks.scoring import pose, position, tables
from ibdata import h5format
from ibdata.tasks import rotation_x, rotation_y
from ibutil.errors import UserError
from render.dataset import render_dataset
from render.presets import RenderConfig, poses_from_factors


def _test_split(path):
    """Test frames (N, 3, H, W) float in [0, 1] and factors (S, T, F) of a file, sequences kept apart."""
    test = h5format.read_split(path, "test")
    s, t, h = test.frames.shape[:3]
    return test.frames.reshape(s * t, h, h, 3).transpose(0, 3, 1, 2) / 255.0, test.factors, test.masks


@pytest.fixture(scope="module")
def dof1(tmp_path_factory):
    """A 16 px DoF 1 turn at 1 deg/frame (test frames at half degrees) and its 0.5 deg table."""
    root = tmp_path_factory.mktemp("dof1")
    path = render_dataset(RenderConfig(dof=1, size=16, frames=360), root / "d1.h5", workers=2, progress=False)
    return path, M.table_for(path, root / "cache", progress=False), root / "cache"


@pytest.fixture(scope="module")
def dof6(tmp_path_factory):
    root = tmp_path_factory.mktemp("dof6")
    path = render_dataset(RenderConfig(dof=6, size=32, frames=6, train_sequences=1, test_sequences=4),
                          root / "d6.h5", workers=2, progress=False)
    return path, M.table_for(path, root / "cache", progress=False)


def test_dof1_true_frames_and_copied_ends(dof1):
    path, table, _ = dof1
    assert isinstance(table, pose.PoseTable) and table.step_deg == 0.5 and len(table.frames) == 720
    x, factors, _ = _test_split(path)
    f = factors.reshape(len(x), 1)
    truth = pose.pose_metrics(x, f, table)
    # Test frames sit at half degrees, which the 0.5 deg grid holds, rendered by the same pool.
    assert truth["pose_error_deg"].max() < 1e-6 and truth["nn_distance"].max() < 1e-5
    for gap in (1, 5, 20):  # copy-x0: the pose change over half the gap is `gap` frames of 1 deg
        copy = pose.pose_metrics(x[:-2 * gap], f[gap:-gap], table)
        np.testing.assert_allclose(copy["pose_error_deg"], gap, atol=1e-6)


def test_grey_and_black_frames_are_far_from_the_table(dof1):
    path, table, _ = dof1
    x, factors, _ = _test_split(path)
    grey = pose.pose_metrics(np.full((2, 3, 16, 16), 0.5), factors[0, :2], table)
    assert grey["nn_distance"].min() > 0.3  # true frames: < 1e-5
    black = pose.pose_metrics(np.zeros((1, 3, 16, 16)), factors[0, :1], table)
    assert black["nn_distance"][0] == pose.BLACK_NN_DISTANCE and black["pose_error_deg"][0] == pose.BLACK_POSE_ERROR_DEG
    with pytest.raises(UserError, match="table is 16x16"):
        pose.pose_metrics(np.zeros((1, 3, 8, 8)), factors[0, :1], table)
    with pytest.raises(UserError, match="factors"):
        pose.pose_metrics(x[:2], factors[0, :3], table)


def test_a_frame_drawn_many_times_is_searched_once_with_the_same_answer(dof1, monkeypatch):
    """recover() searches each byte-distinct frame of a batch once (mean-frame draws one frame for every pair): the
    rows and distances equal a search of each frame alone, including a frame that differs from another only off
    the pixels distinct() keys on."""
    path, table, _ = dof1
    x, _, _ = _test_split(path)
    blurred = np.stack([cv2.GaussianBlur(im.transpose(1, 2, 0), (0, 0), 1.5) for im in x[:40:8]]).transpose(0, 3, 1, 2)
    near_twin = blurred[0].copy()
    near_twin[0, 0, 1] += 0.25  # entry 3 of its HWC row, not a multiple of 61: the same key as blurred[0]
    batch = np.concatenate([np.repeat(blurred[:1], 30, axis=0), blurred[1:], near_twin[None], x[:3]])  # (38, ...)
    calls = []
    search = pose.nearest.search
    monkeypatch.setattr(pose.nearest, "search", lambda index, rows: calls.append(len(rows)) or search(index, rows))
    index, distance = pose.recover(batch, table)
    assert calls == [1 + 4 + 1 + 3]  # 38 frames, 9 distinct ones: one search of 9 rows
    monkeypatch.undo()
    alone = [pose.recover(frame[None], table) for frame in batch]
    np.testing.assert_array_equal(index, [i[0] for i, _ in alone])
    assert np.array_equal(distance, np.concatenate([d for _, d in alone]))  # bit for bit
    assert index[35] != index[0] or distance[35] != distance[0]  # the near twin was searched on its own
    rows = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 2, 3, 1))).reshape(38, -1).float()
    first, inverse = pose.distinct(rows)
    assert len(first) == 9 and inverse[:30].tolist() == [0] * 30


def test_table_is_cached_by_config_hash(dof1, monkeypatch):
    path, table, cache = dof1
    files = sorted((cache / "tables").glob("pose-table-*.npz"))
    assert len(files) == 1 and not list((cache / "tables").glob(".*tmp*"))
    monkeypatch.setattr(tables, "render_poses", lambda *a, **k: pytest.fail("a cached table was rendered again"))
    again = M.table_for(path, cache, progress=False)
    assert np.array_equal(again.frames, table.frames) and again.meta == table.meta
    with pytest.raises(UserError):
        pose.pose_table(table.config, cache, step_deg=0.7)  # does not divide 360


def test_geodesic_is_the_rotation_angle_not_per_axis():
    a = rotation_x(np.array([0.0, 10.0, 350.0]))
    b = rotation_x(np.array([30.0, 40.0, 20.0]))
    np.testing.assert_allclose(pose.geodesic_deg(a, b), [30.0, 30.0, 30.0], atol=1e-9)  # wraps through 0
    # (rot_x, rot_y) = (180, 180) is a half turn about z: 180 deg from the identity, not 255 (per-axis norm).
    assert pose.geodesic_deg(rotation_y(180.0) @ rotation_x(180.0), np.eye(3)) == pytest.approx(180.0)
    # Quarter turns about x then y compose to a 120 deg rotation.
    assert pose.geodesic_deg(rotation_y(90.0) @ rotation_x(90.0), np.eye(3)) == pytest.approx(120.0)
    assert pose.geodesic_deg(rotation_x(0.01), np.eye(3)) == pytest.approx(0.01, rel=1e-6)


def test_dof2_true_frames_within_the_grid(tmp_path):
    # A 15 deg grid keeps the test fast; the nearest grid pose is at most 7.5 deg away per axis, and the
    # two axes are orthogonal on SO(3) here, so at most 7.5 * sqrt 2 = 10.6 deg.
    path = render_dataset(RenderConfig(dof=2, size=16, frames=4, train_sequences=1, test_sequences=3),
                          tmp_path / "d2.h5", workers=2, progress=False)
    table = pose.pose_table(tables.dataset_config(path), tmp_path / "cache", step_deg=15.0, progress=False)
    assert len(table.frames) == 24 * 24
    x, factors, _ = _test_split(path)
    truth = pose.pose_metrics(x, factors.reshape(len(x), 2), table)
    assert truth["pose_error_deg"].max() <= 7.5 * math.sqrt(2) + 1e-9
    # A frame rendered exactly at a grid pose is recovered exactly.
    exact = pose.pose_metrics(table.frames[[5, 300]].transpose(0, 3, 1, 2) / 255.0, table.factors[[5, 300]], table)
    assert exact["pose_error_deg"].max() < 1e-6 and exact["nn_distance"].max() < 1e-6


def test_smoothness_known_answers(dof1):
    even = rotation_x(np.arange(5.0) * 3)[None]  # 5 poses, 4 equal steps
    assert pose.smoothness(even)[0] == pytest.approx(0.0, abs=1e-9)
    jump = rotation_x(np.array([0.0, 0.0, 0.0, 0.0, 12.0]))[None]  # stand still, then one jump
    assert pose.smoothness(jump)[0] == pytest.approx(1.0 - 1.0 / 4)
    assert np.isnan(pose.smoothness(rotation_x(np.zeros(3))[None])[0])  # ends coincide
    # On real frames: the true in-betweens of gap 4 are evenly spaced; copies of x0 stand still.
    path, table, _ = dof1
    x, factors, _ = _test_split(path)
    f = factors[0]  # (T, 1)
    starts = np.arange(0, 40, 8)
    true_path = np.stack([x[s + 1:s + 8] for s in starts])  # (5, 7, 3, H, W): the 7 frames between s and s + 8
    ends = np.stack([f[starts], f[starts + 8]], axis=1)  # (5, 2, 1)
    np.testing.assert_allclose(pose.path_smoothness(true_path, ends, table), 0.0, atol=1e-6)
    copies = np.repeat(x[starts][:, None], 7, axis=1)
    np.testing.assert_allclose(pose.path_smoothness(copies, ends, table), 1.0 - 1.0 / 8, atol=1e-6)


def _shifted_truth(templates, factors, pixels: float):
    """The true frames with every object moved right by `pixels` (ndc x + 2 pixels / size)."""
    moved = factors.copy()
    moved[:, 0::2] += 2.0 * pixels / templates.config.size
    return position.true_frames(templates, moved)


def test_dof6_true_frames_shifts_blur_and_missing_objects(dof6):
    path, templates = dof6
    assert isinstance(templates, position.ObjectTemplates)
    x, factors, masks = _test_split(path)
    f = factors.reshape(len(x), -1).astype(np.float64)
    truth = position.position_metrics(x, f, templates)
    assert truth["position_error_px"].mean() < 0.35 and truth["position_found"].min() == 1.0
    # Objects clear of the right border (radius 0.35), so that a shift moves all their pixels.
    placed = np.array([[-0.3, 0.5, -0.3, 0.0, -0.3, -0.5], [0.2, 0.3, -0.4, -0.2, 0.0, -0.5]])
    for n in (1, 3):
        shifted = position.position_metrics(_shifted_truth(templates, placed, n), placed, templates)
        np.testing.assert_allclose(shifted["position_error_px"], n, rtol=0.03)
    # The same with real renders of the shifted scene (not composites): 2 px right, and 2 px down.
    moved = np.concatenate([placed, placed, placed])
    moved[2:4, 0::2] += 2 * 2 / 32
    moved[4:6, 1::2] -= 2 * 2 / 32
    frames, _, _ = tables.render_poses(templates.config, poses_from_factors(templates.config, moved), 32,
                                       templates.config.supersample, progress=False)
    real = position.position_metrics(frames.transpose(0, 3, 1, 2) / 255.0, np.concatenate([placed] * 3), templates)
    assert real["position_error_px"][:2].max() < 0.35
    np.testing.assert_allclose(real["position_error_px"][2:], 2.0, atol=0.35)
    blurred = np.stack([cv2.GaussianBlur(im.transpose(1, 2, 0), (0, 0), 2.5) for im in x]).transpose(0, 3, 1, 2)
    blur = position.position_metrics(blurred, f, templates)
    assert blur["position_error_px"].mean() > max(1.0, 4 * truth["position_error_px"].mean())
    # Object 1 painted out: not found, scored at the image diagonal.
    missing = x * (masks.reshape(len(x), 1, 32, 32) != 1)
    out = position.position_metrics(missing, f, templates)
    np.testing.assert_allclose(out["position_found"], 2 / 3, atol=1e-6)
    assert out["position_error_px"].min() > math.hypot(32, 32) / 3
    black = position.position_metrics(np.zeros_like(x[:2]), f[:2], templates)
    np.testing.assert_allclose(black["position_error_px"], math.hypot(32, 32))


def test_placement_tells_lost_colour_from_wrong_place(dof6):
    path, templates = dof6
    x, factors, _ = _test_split(path)
    f = factors.reshape(len(x), -1).astype(np.float64)
    truth = position.position_metrics(x, f, templates)
    assert truth["placement_error_px"].max() < 0.35
    # Right place, colour lost: grey of the same brightness. The colour metric loses objects, placement does not.
    grey = np.repeat(np.linalg.norm(x, axis=1, keepdims=True) / math.sqrt(3), 3, axis=1)
    lost = position.position_metrics(grey, f, templates)
    assert lost["position_found"].max() < 1.0 and lost["position_error_px"].min() > 5.0
    np.testing.assert_allclose(lost["placement_error_px"], truth["placement_error_px"], atol=1e-6)
    # Wrong place: the grey scene moved n px scores n px (objects clear of the border).
    placed = np.array([[-0.3, 0.5, -0.3, 0.0, -0.3, -0.5], [0.2, 0.3, -0.4, -0.2, 0.0, -0.5]])
    for n in (1, 3):
        moved = _shifted_truth(templates, placed, n)
        moved_grey = np.repeat(moved.mean(axis=1, keepdims=True), 3, axis=1)
        out = position.position_metrics(moved_grey, placed, templates)
        np.testing.assert_allclose(out["placement_error_px"], n, rtol=0.05)
    # Nothing lit: the image diagonal; nothing to place (every object out of view): not scored.
    away = np.full((1, 6), position.OUT_OF_VIEW)
    black = position.position_metrics(np.zeros_like(x[:1]), f[:1], templates)
    np.testing.assert_allclose(black["placement_error_px"], math.hypot(32, 32))
    assert np.isnan(position.position_metrics(x[:1], away, templates)["placement_error_px"][0])


def test_fast_composite_and_colour_assignment_equal_their_definitions(dof6):
    """The committed runs' position errors came from these definitions; the faster code must equal them bit for bit."""
    path, templates = dof6
    x, factors, _ = _test_split(path)
    f = factors.reshape(len(x), -1).astype(np.float64)
    ss, size = templates.config.supersample, templates.config.size
    side = size * ss
    fast = position.true_frames(templates, f)
    for n in range(len(f)):  # the definition: composite one frame at full resolution, then each block's mean
        canvas, covered = np.zeros((side, side, 3)), np.zeros((side, side), bool)
        shifts = np.rint(f[n].reshape(-1, 2) * side / 2.0).astype(int)
        for i, (frame, mask) in enumerate(zip(templates.frames, templates.masks)):
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            position._paste(canvas, covered, frame[box].astype(np.float64), mask[box],
                            rows[0] - shifts[i, 1], cols[0] + shifts[i, 0])
        slow = canvas.reshape(size, ss, size, ss, 3).mean(axis=(1, 3)) / 255.0
        assert np.array_equal(fast[n], slow.transpose(2, 0, 1))
    blurred = np.stack([cv2.GaussianBlur(im.transpose(1, 2, 0), (0, 0), 1.5) for im in x]).transpose(0, 3, 1, 2)
    for images in (x, blurred):
        t = torch.from_numpy(images).double().flatten(2)
        g = torch.from_numpy(templates.colours)
        nearest = torch.einsum("kc,ncp->nkp", g, t).argmax(dim=1)  # the definition: the first highest dot product
        onehot = torch.nn.functional.one_hot(nearest, len(g)).permute(0, 2, 1)
        expected = onehot * (t.norm(dim=1) * (t.amax(dim=1) > position.LIT))[:, None]
        assert torch.equal(position.object_mass(images, templates.colours, torch.device("cpu")), expected)


def test_shared_true_masses_give_the_same_positions_bit_for_bit(dof6):
    """The benchmark computes each target set's true masses once for every row (true_mass, metrics.truth)."""
    path, templates = dof6
    x, factors, masks = _test_split(path)
    f = factors.reshape(len(x), -1).astype(np.float64)
    masses = position.true_mass(templates, f, torch.device("cpu"))
    assert masses.shape == (len(x), len(templates.config.objects), 32 * 32)
    blurred = np.stack([cv2.GaussianBlur(im.transpose(1, 2, 0), (0, 0), 1.5) for im in x]).transpose(0, 3, 1, 2)
    for images in (x, blurred, np.roll(x, 3, axis=3)):
        alone = position.position_metrics(images, f, templates)
        shared = position.position_metrics(images, f, templates, masses=masses)
        assert all(np.array_equal(alone[k], shared[k], equal_nan=True) for k in alone)
        truth = M.truth(x, masks.reshape(len(x), 32, 32), f, templates)
        scored = M.score(images, truth, templates)
        assert all(np.array_equal(alone[k], scored[k], equal_nan=True) for k in alone)
    with pytest.raises(UserError):
        position.true_mass(templates, f[:, :4], torch.device("cpu"))


def test_sharpness_known_answers():
    edge = np.zeros((1, 3, 8, 8))
    edge[..., 4:] = 1.0  # one vertical step edge: 8 rows x 3 channels of squared difference 1
    assert M.gradient_energy(edge)[0] == pytest.approx(24.0)
    soft = np.zeros((1, 3, 8, 8))
    soft[..., 4] = 0.5
    soft[..., 5:] = 1.0  # the same edge over two steps of 0.5: 2 x 24 x 0.25
    assert M.sharpness(soft, edge)[0] == pytest.approx(0.5)
    assert M.sharpness(edge, edge)[0] == 1.0
    flat = np.zeros((1, 3, 8, 8))
    assert M.sharpness(flat, flat)[0] == 1.0 and M.sharpness(edge, flat)[0] == np.inf


def test_all_metrics_with_tables(dof1, dof6):
    for (path, table, *_), shape in ((dof1, 16), (dof6, 32)):
        x, factors, masks = _test_split(path)
        x, f, masks = x[:6], factors.reshape(-1, factors.shape[-1])[:6], masks.reshape(-1, shape, shape)[:6]
        plain = M.all_metrics(x, x, masks)
        assert tuple(plain) == M.METRIC_NAMES
        full = M.all_metrics(x, x, masks, factors=f, table=table)
        assert tuple(full) == M.METRIC_NAMES + M.TABLE_METRIC_NAMES[table.config.dof]
        assert all(v.shape == (6,) for v in full.values())
        np.testing.assert_allclose(full["sharpness"], 1.0)
        blurred = np.stack([cv2.GaussianBlur(im.transpose(1, 2, 0), (0, 0), 1.5) for im in x]).transpose(0, 3, 1, 2)
        assert M.all_metrics(blurred, x, masks, factors=f, table=table)["sharpness"].max() < 0.6
    with pytest.raises(UserError):
        M.all_metrics(x, x, masks, table=table)


def test_a_file_without_a_render_config_is_refused(tiny_h5):
    path, _ = tiny_h5  # GL-free 8 px file whose config attribute is only {"dof": 2}
    with pytest.raises(UserError, match="render-dataset"):
        M.table_for(path, path.parent / "cache")
