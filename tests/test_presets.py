"""Scene maths and factor sampling of the presets (no GL)."""

import numpy as np
import pytest

from ibutil.errors import UserError
from render.presets import (SIX_DOF_SCALE, RenderConfig, factor_names, poses_from_factors, scene_for,
                            sequence_factors, split_shapes)
from ibdata.tasks import rotation_x, rotation_y
from render.scene import reflect


def test_dof1_train_is_integer_degrees_and_test_is_half_degrees():
    cfg = RenderConfig(dof=1, protocol="paper")
    train, test = sequence_factors(cfg, "train", 0), sequence_factors(cfg, "test", 0)
    assert train.shape == test.shape == (360, 1)
    np.testing.assert_array_equal(train[:, 0], np.arange(360.0))
    np.testing.assert_array_equal(test[:, 0], np.arange(360.0) + 0.5)
    assert not set(train[:, 0]) & set(test[:, 0])
    assert split_shapes(cfg) == {"train": (1, 360), "val": (1, 360), "test": (1, 360), "heldout": (0, 360)}


def test_dof1_frames_sets_steps_per_turn():
    f = sequence_factors(RenderConfig(dof=1, frames=4, protocol="paper"), "train", 0)
    np.testing.assert_array_equal(f[:, 0], [0, 90, 180, 270])


def test_dof2_sequences_are_straight_lines_with_speeds_in_range():
    cfg = RenderConfig(dof=2, rot_speed_deg=(1.0, 3.0))
    for i in range(5):
        f = sequence_factors(cfg, "train", i)
        assert f.shape == (cfg.frames, 2)
        speed = np.diff(f, axis=0)
        np.testing.assert_allclose(np.diff(speed, axis=0), 0, atol=1e-9)  # constant velocity
        assert np.all((np.abs(speed) >= 1.0) & (np.abs(speed) <= 3.0))
        assert np.all((f[0] >= 0) & (f[0] < 360))


def test_sequences_depend_on_seed_split_and_index_only():
    cfg = RenderConfig(dof=2, seed=3)
    a = sequence_factors(cfg, "train", 7)
    np.testing.assert_array_equal(a, sequence_factors(RenderConfig(dof=2, seed=3, train_sequences=8), "train", 7))
    assert not np.allclose(a, sequence_factors(cfg, "test", 7))  # disjoint streams
    assert not np.allclose(a, sequence_factors(cfg, "train", 6))
    assert not np.allclose(a, sequence_factors(RenderConfig(dof=2, seed=4), "train", 7))


def test_dof6_positions_stay_inside_and_reflect():
    cfg = RenderConfig(dof=6, frames=400, motion="bounce", protocol="paper")
    f = sequence_factors(cfg, "train", 0)
    assert f.shape == (400, 6)
    bound = 1 - SIX_DOF_SCALE
    assert np.all(np.abs(f) <= bound + 1e-12)
    # Over 400 frames at >= 0.02/frame every coordinate hits a wall: speed changes sign.
    signs = np.sign(np.diff(f, axis=0))
    assert np.all((signs > 0).any(0) & (signs < 0).any(0))
    # Away from walls the motion is linear.
    d = np.abs(np.diff(f, axis=0))
    assert np.all(d <= cfg.move_speed[1] + 1e-12)


def test_reflect_known_values():
    np.testing.assert_allclose(reflect(np.array([0.5, 1.2, 2.5, -0.3, 4.1]), 0.0, 1.0), [0.5, 0.8, 0.5, 0.3, 0.1])


def test_rotations_are_orthonormal_and_match_right_hand_rule():
    r = rotation_x(90.0)
    np.testing.assert_allclose(r @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    r = rotation_y(90.0)
    np.testing.assert_allclose(r @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    m = rotation_y(33.0) @ rotation_x(-71.0)
    np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)


def test_poses_follow_factors():
    cfg = RenderConfig(dof=6)
    f = sequence_factors(cfg, "test", 1)
    poses = poses_from_factors(cfg, f)
    assert poses.shape == (cfg.frames, 3, 4, 4)
    np.testing.assert_allclose(poses[:, :, :2, 3], f.reshape(-1, 3, 2))
    assert len(set(np.round(poses[0, :, 2, 3], 6))) == 3  # distinct depths: real occlusion order
    cfg2 = RenderConfig(dof=2)
    p2 = poses_from_factors(cfg2, np.array([[0.0, 0.0], [90.0, 0.0]]))
    assert p2.shape == (2, 1, 4, 4)
    # Rotating about x by 90 degrees maps the object's y axis onto z.
    np.testing.assert_allclose(p2[1, 0, :3, :3] @ np.linalg.inv(p2[0, 0, :3, :3]) @ [0, 1, 0], [0, 0, 1], atol=1e-9)


def test_factor_names_and_scene_objects():
    names, units = factor_names(RenderConfig(dof=6, object="cone"))
    assert names == ("cone.x", "cone.y", "cube.x", "cube.y", "torus.x", "torus.y")
    assert units == ("ndc",) * 6
    scene = scene_for(RenderConfig(dof=6, object="cube"))
    assert [o.name for o in scene.objects] == ["cube", "torus", "sphere"]
    assert len({o.colour for o in scene.objects}) == 3
    assert factor_names(RenderConfig(dof=1)) == (("teapot.rot_x",), ("deg",))


@pytest.mark.parametrize("kwargs, message", [
    (dict(dof=3), "--dof"), (dict(size=7), "--size"), (dict(size=1025), "--size"), (dict(frames=2), "--frames"),
    (dict(object="kettle"), "--object"), (dict(train_sequences=0), "--train-sequences"),
    (dict(dof=1, train_sequences=5), "dof 1"), (dict(seed=-1), "--seed"), (dict(supersample=0), "--supersample"),
])
def test_bad_configs_raise_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        RenderConfig(**kwargs)


def test_config_defaults_are_filled_and_json_round_trips():
    cfg = RenderConfig(dof=2)
    assert (cfg.frames, cfg.train_sequences, cfg.test_sequences, cfg.supersample) == (50, 200, 50, 3)
    assert RenderConfig(size=128).supersample == 2 and RenderConfig(size=512).supersample == 1
    js = cfg.to_json()
    assert js["objects"] == ["teapot"] and js["rot_speed_deg"] == [1.0, 3.0]
    rebuilt = RenderConfig(**{k: v for k, v in js.items() if k != "objects"})
    assert rebuilt == cfg
