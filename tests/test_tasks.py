"""Well-posedness, held-out regions and the v2 splits, on factors alone (no GL)."""

import numpy as np
import pytest

from ibutil.errors import UserError
from render.presets import (SIX_DOF_SCALE, RenderConfig, heldout_region, poses_from_factors, scene_for,
                            sequence_factors, split_shapes, turn_angles)
from ibdata.tasks import HeldoutRegion, geodesic_deg, pairwise_min_distance, rotations, well_posed
from render.scene import camera_json
from render.task_stats import split_factors, well_posed_fraction


def test_well_posed_known_answers():
    units = ("ndc", "ndc")
    f0, f2 = np.array([[0.0, 0.0], [0.0, 0.0]]), np.array([[0.4, -0.2], [0.4, -0.2]])
    mid = np.array([[0.2, -0.1], [0.2, -0.1 + 0.02]])  # exact; 0.02 off in y (tolerance 0.01)
    np.testing.assert_array_equal(well_posed(f0, mid, f2, 0.5, units), [True, False])
    # tau = 1/4 (the first intermediate frame of a gap-2 triplet) and per-triplet tau.
    np.testing.assert_array_equal(well_posed(f0, np.array([[0.1, -0.05]] * 2), f2, [0.25, 0.5], units), [True, False])
    # Angles: wrapped and unwrapped files agree; 180 degrees or more between the ends is ambiguous.
    deg = ("deg",)
    assert well_posed([[350.0]], [[0.0]], [[10.0]], 0.5, deg)[0]
    assert well_posed([[350.0]], [[360.0]], [[370.0]], 0.5, deg)[0]
    assert not well_posed([[0.0]], [[100.0]], [[200.0]], 0.5, deg)[0]
    assert well_posed([[0.0]], [[89.8]], [[179.0]], 0.5, deg)[0]
    with pytest.raises(ValueError, match="no well-posedness tolerance for factor unit"):
        well_posed([[0.0]], [[0.0]], [[0.0]], 0.5, ("furlong",))


def test_default_factors_are_well_posed_and_bounce_is_not():
    for dof in (1, 2, 6):
        counts = {} if dof == 1 else dict(train_sequences=4, test_sequences=20)
        f = split_factors(RenderConfig(dof=dof, size=16, **counts))["test"]
        units = ["ndc"] * 6 if dof == 6 else ["deg"] * f.shape[-1]
        for gap in (2, 5, 10, 20):
            assert well_posed_fraction(f, units, gap) == 1.0, (dof, gap)
    bounce = RenderConfig(dof=6, motion="bounce", train_sequences=4, test_sequences=20, size=16)
    f = split_factors(bounce)["test"]
    fractions = [well_posed_fraction(f, ["ndc"] * 6, gap) for gap in (2, 5, 10, 20)]
    assert fractions[0] > fractions[1] > fractions[2] and fractions[3] < 0.05
    # Every intermediate frame of a linear triplet is well-posed too (tau = j / 2k).
    lin = split_factors(RenderConfig(dof=6, train_sequences=4, test_sequences=5, size=16))["test"]
    k, t = 5, np.arange(5, 45)
    for j in range(2 * k + 1):
        assert well_posed(lin[:, t - k], lin[:, t - k + j], lin[:, t + k], j / (2 * k), ["ndc"] * 6).all()


def test_linear_dof6_moves_at_constant_velocity_inside_the_frame():
    f = sequence_factors(RenderConfig(dof=6), "train", 3)
    np.testing.assert_allclose(np.diff(f, 2, axis=0), 0, atol=1e-12)
    assert np.all(np.abs(f) <= 1 - SIX_DOF_SCALE + 1e-12)


def test_geodesic_and_region_distances():
    a = rotations(np.array([10.0, 0.0]))
    assert geodesic_deg(a, rotations(np.array([40.0, 0.0]))) == pytest.approx(30.0)
    assert geodesic_deg(a, rotations(np.array([10.0 + 360.0, 0.0]))) == pytest.approx(0.0, abs=1e-6)
    ball = HeldoutRegion("so3_ball", (180.0, 0.0), 30.0, 10.0, "deg")
    assert ball.distance(np.array([[180.0, 20.0], [180.0, 50.0]])) == pytest.approx([0.0, 20.0])
    arc = HeldoutRegion("arc", (180.0,), 20.0, 10.0, "deg")
    assert arc.distance(np.array([[150.0], [-170.0], [190.0]])) == pytest.approx([10.0, 0.0, 0.0])
    corner = HeldoutRegion("quadrant", (0.3, 0.3), 0.0, 0.2, "ndc")
    # Three objects; the nearest one counts.
    assert corner.distance(np.array([0.0, 0.3, -0.5, -0.5, 0.3, 0.0])) == pytest.approx(0.3)
    assert corner.contains(np.array([0.0, 0.0, 0.5, 0.4, -0.5, 0.0]))
    assert HeldoutRegion.from_json(corner.to_json()) == corner
    assert pairwise_min_distance("arc", np.array([[359.0]]), np.array([[2.0], [100.0]])) == pytest.approx(3.0)


@pytest.mark.parametrize("dof", [1, 2, 6])
def test_train_and_val_keep_the_margin_and_heldout_is_scored(dof):
    cfg = RenderConfig(dof=dof, size=16, **({} if dof == 1 else dict(train_sequences=30, test_sequences=8)))
    region, f = heldout_region(cfg), split_factors(cfg)
    for split in ("train", "val"):
        assert region.distance(f[split]).min() >= region.margin - 1e-4
    scored = region.contains(f["heldout"])
    assert scored.any(axis=1).all()  # every heldout sequence passes through the region
    held, seen = f["heldout"].reshape(-1, f["heldout"].shape[-1]), np.concatenate(
        [f[s].reshape(-1, f[s].shape[-1]) for s in ("train", "val")])
    assert pairwise_min_distance(region.kind, held[scored.ravel()], seen) >= region.margin - 1e-4


def test_test_split_and_paper_protocol_are_the_v1_draws():
    # v1 drew test (and, without a cut, train) from [seed, split code, index]: unchanged.
    cfg, paper = RenderConfig(dof=2), RenderConfig(dof=2, protocol="paper")
    rng = np.random.default_rng(np.random.SeedSequence([0, 1, 4]))
    start = rng.uniform(0.0, 360.0, size=2)
    speed = rng.uniform(1.0, 3.0, size=2) * rng.choice([-1.0, 1.0], size=2)
    np.testing.assert_array_equal(sequence_factors(cfg, "test", 4), start + np.arange(50)[:, None] * speed)
    np.testing.assert_array_equal(sequence_factors(paper, "train", 4), sequence_factors(
        RenderConfig(dof=2, protocol="paper", train_sequences=5), "train", 4))
    assert split_shapes(paper)["heldout"] == (0, 50)
    one = RenderConfig(dof=1)
    np.testing.assert_array_equal(turn_angles(one, "heldout"), np.arange(360) + 0.5)  # v1's test turn
    train = turn_angles(one, "train")
    assert train[0] == 210.0 and train[-1] == 510.0 and np.all(np.diff(train) == 1.0)
    np.testing.assert_array_equal(turn_angles(one, "test"), np.arange(210, 510) + 0.5)


def test_quick_benchmark_configs_give_every_split():
    for dof in (1, 2, 6):
        frames = 24 if dof == 1 else 10
        cfg = RenderConfig(dof=dof, size=16, frames=frames, train_sequences=None if dof == 1 else 6,
                           test_sequences=None if dof == 1 else 3)
        shapes = split_shapes(cfg)
        assert all(n >= 1 and t >= 7 for n, t in shapes.values()), shapes
        f = split_factors(cfg)
        assert heldout_region(cfg).contains(f["heldout"]).any()


@pytest.mark.parametrize("kwargs, message", [
    (dict(dof=6, motion="zigzag"), "unknown --motion 'zigzag'"),
    (dict(dof=2, motion="bounce"), "--motion bounce is a dof 6 option"),
    (dict(dof=2, protocol="nope"), "unknown --protocol"),
    (dict(dof=2, heldout_margin=-1.0), "--heldout-margin must be a finite number >= 0"),
    (dict(dof=2, heldout_margin=150.0), "leaving no training data"),
    (dict(dof=1, heldout_margin=170.0), "leaving no training data"),
    (dict(dof=6, heldout_margin=1.0), "leaving no training motion"),
    (dict(dof=2, protocol="paper", heldout_sequences=3), "--protocol paper has no held-out region"),
])
def test_bad_task_options(kwargs, message):
    with pytest.raises(UserError, match=message):
        RenderConfig(**kwargs)


def test_camera_intrinsics_project_object_centres_to_their_documented_pixels():
    cfg = RenderConfig(dof=6, size=32)
    camera = camera_json(scene_for(cfg).camera, cfg.size)
    factors = sequence_factors(cfg, "train", 0)[:5]  # (5, 6)
    poses = poses_from_factors(cfg, factors)  # (5, 3, 4, 4)
    world_to_cv = np.linalg.inv(np.array(camera["opencv_pose"]))
    k = np.array(camera["intrinsics"])
    centres = np.einsum("ij,tkj->tki", world_to_cv, poses[..., :, 3])  # (5, 3, 4) camera coords
    u = k[0, 0] * centres[..., 0] + k[0, 2]  # orthographic: no division by z
    v = k[1, 1] * centres[..., 1] + k[1, 2]
    xy = factors.reshape(5, 3, 2)
    np.testing.assert_allclose(u - 0.5, (xy[..., 0] + 1) / 2 * 32 - 0.5, atol=1e-9)  # documented column
    np.testing.assert_allclose(v - 0.5, (1 - xy[..., 1]) / 2 * 32 - 0.5, atol=1e-9)  # documented row
    persp = camera_json(scene_for(RenderConfig(dof=2, size=32)).camera, 32)
    assert persp["type"] == "perspective" and persp["intrinsics"][0][2] == 16.0
    # The bounding sphere (radius 1 at the origin) just fits: its silhouette edge lands inside the frame.
    edge = persp["intrinsics"][0][0] * np.tan(np.arcsin(1 / 4)) + 16
    assert 30.0 < edge < 32.0
