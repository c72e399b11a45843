"""The GL backend: downsampling maths (no GL) and tiny real renders (EGL or OSMesa)."""

import multiprocessing

import numpy as np
import pytest

from render import backend
from render.presets import RenderConfig, poses_from_factors, scene_for, sequence_factors


def test_box_downsample_averages_blocks():
    img = np.zeros((4, 4, 3), np.uint8)
    img[:2, :2] = 255
    img[2:, 2:] = [10, 20, 30]
    img[0, 2] = 4  # one of four subsamples: 1.0 rounds to 1
    out = backend.box_downsample(img, 2)
    np.testing.assert_array_equal(out[..., 0], [[255, 1], [0, 10]])
    np.testing.assert_array_equal(out[1, 1], [10, 20, 30])


def test_majority_downsample_picks_the_most_covered_label_ties_low():
    labels = np.array([[1, 1, 2, 0],
                       [1, 0, 2, 0],
                       [0, 0, 3, 3],
                       [0, 0, 3, 2]], np.uint8)
    out = backend.majority_downsample(labels, 2, n_objects=3)
    np.testing.assert_array_equal(out, [[1, 0], [0, 3]])  # 2-2 tie between 0 and 2 goes to 0


def _render(config, split="train", index=0, frames=None):
    """Render one sequence in a spawned process (the parent must not import OpenGL)."""
    info = backend.probe_platform()
    poses = poses_from_factors(config, sequence_factors(config, split, index))[:frames]
    with backend.render_pool(scene_for(config), config.size, config.supersample, info["platform"], 1) as pool:
        return pool.submit(backend.render_task, poses).result()


@pytest.fixture(scope="module")
def renders():
    return {
        "dof2_k1": _render(RenderConfig(dof=2, size=16, supersample=1, frames=4)),
        "dof2_ss": _render(RenderConfig(dof=2, size=8, frames=4)),
        "dof6_k1": _render(RenderConfig(dof=6, size=16, supersample=1, frames=40), frames=40),
    }


def test_frames_are_not_blank(renders):
    for frames, masks in renders.values():
        assert frames.dtype == np.uint8 and masks.dtype == np.uint8
        for frame, mask in zip(frames, masks):
            assert frame.max() > 60 and mask.any() and not mask.all()


def test_mask_is_exactly_the_object_pixels_without_supersampling(renders):
    frames, masks = renders["dof2_k1"]
    np.testing.assert_array_equal(masks > 0, frames.any(axis=-1))
    frames6, masks6 = renders["dof6_k1"]
    np.testing.assert_array_equal(masks6 > 0, frames6.any(axis=-1))


def test_supersampled_mask_marks_covered_pixels_only(renders):
    frames, masks = renders["dof2_ss"]
    assert frames.shape == (4, 8, 8, 3)
    assert np.all(frames[masks > 0].any(axis=-1))  # a mask pixel is never pure background
    # Anti-aliasing: some edge pixels are partly covered (neither background nor fully lit).
    assert np.any(frames[masks == 0].any(axis=-1))


def test_dof6_masks_label_three_objects_with_occlusion(renders):
    frames, masks = renders["dof6_k1"]
    assert set(np.unique(masks)) == {0, 1, 2, 3}
    # Each label's pixels carry that object's hue: its dominant channel matches the object colour.
    config = RenderConfig(dof=6)
    for k, obj in enumerate(scene_for(config).objects, start=1):
        px = frames[masks == k].astype(float)
        assert np.argmax(px.mean(0)) == int(np.argmax(obj.colour))


def test_bogus_platform_exits_with_install_hint(monkeypatch):
    monkeypatch.setenv("PYOPENGL_PLATFORM", "bogus")
    with pytest.raises(backend.UserError, match="libegl1 and libgl1-mesa-dri"):
        backend.probe_platform()


def test_main_process_never_imports_opengl():
    import sys
    assert "OpenGL" not in sys.modules  # all GL lives in spawned workers
    assert multiprocessing.get_start_method(allow_none=True) in (None, "fork", "spawn", "forkserver")
