"""The teapot tessellation and the object library (no GL)."""

import numpy as np
import pytest
import trimesh

from render import objects, teapot


def test_patch_file_has_32_patches_over_306_points():
    patches, vertices = teapot.load_patches()
    assert patches.shape == (32, 4, 4)
    assert vertices.shape == (306, 3)
    assert patches.min() == 0 and patches.max() == 305


def test_bernstein_basis_is_a_partition_of_unity():
    basis = teapot.bernstein3(np.linspace(0, 1, 7))
    np.testing.assert_allclose(basis.sum(1), 1.0)
    np.testing.assert_allclose(basis[0], [1, 0, 0, 0])
    np.testing.assert_allclose(basis[-1], [0, 0, 0, 1])


def test_tessellation_is_merged_outward_and_free_of_degenerate_faces():
    v, f = teapot.tessellate(8)
    mesh = trimesh.Trimesh(v, f, process=False)
    # No face repeats a vertex, and every vertex is used (seams and poles were merged).
    assert np.all((f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2]))
    assert len(np.unique(f)) == len(v)
    # Merging leaves no two vertices at the same place.
    assert len(np.unique(np.round(v, 5), axis=0)) == len(v)
    # Outward winding gives a positive signed volume (the mesh is nearly closed).
    assert mesh.volume > 0
    # The lid knob is a pole: the topmost point is a single merged vertex on the axis.
    top = v[np.argmax(v[:, 2])]
    np.testing.assert_allclose(top[:2], 0.0, atol=1e-9)
    assert (np.abs(v[:, 2] - top[2]) < 1e-9).sum() == 1


def test_z_is_stretched_to_real_proportions():
    v, _ = teapot.tessellate(4)
    assert v[:, 2].max() == pytest.approx(3.15 * teapot.Z_STRETCH)


@pytest.mark.parametrize("name", objects.OBJECT_NAMES)
def test_every_object_is_normalised_to_the_unit_sphere(name):
    mesh = objects.load_mesh(name)
    v = np.asarray(mesh.vertices)
    assert np.linalg.norm(v, axis=1).max() == pytest.approx(objects.UNIT_RADIUS)
    np.testing.assert_allclose((v.min(0) + v.max(0)) / 2, 0.0, atol=1e-9)


def test_unknown_object_is_refused():
    with pytest.raises(ValueError, match="unknown object"):
        objects.load_mesh("kettle")
