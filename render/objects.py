"""The object library: the Utah teapot and simple trimesh shapes, all normalised to one size (no GL)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import trimesh

from render import teapot

# Every object is centred on its bounding-box centre and scaled so its bounding sphere has this
# radius, so presets built from different objects are comparable in image size.
UNIT_RADIUS = 1.0

# Default RGB colour (linear, 0..1) of each object: distinct hues so multi-object frames are legible.
COLOURS: dict[str, tuple[float, float, float]] = {
    "teapot": (0.90, 0.55, 0.20),
    "cube": (0.25, 0.55, 0.95),
    "sphere": (0.35, 0.85, 0.35),
    "cylinder": (0.90, 0.30, 0.70),
    "cone": (0.95, 0.85, 0.25),
    "torus": (0.30, 0.85, 0.85),
}

OBJECT_NAMES: tuple[str, ...] = tuple(COLOURS)


def _raw_mesh(name: str) -> trimesh.Trimesh:
    if name == "teapot":
        # 8x8 quads per patch (4k triangles): smooth at the 128 px the default 32 px frames are
        # supersampled from, and a third of the raster cost of 12x12 on llvmpipe.
        vertices, faces = teapot.tessellate(resolution=8)
        return trimesh.Trimesh(vertices, faces, process=False)
    if name == "cube":
        return trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    if name == "sphere":
        return trimesh.creation.icosphere(subdivisions=3)
    if name == "cylinder":
        return trimesh.creation.cylinder(radius=0.5, height=1.2, sections=48)
    if name == "cone":
        return trimesh.creation.cone(radius=0.6, height=1.2, sections=48)
    if name == "torus":
        return trimesh.creation.torus(major_radius=0.7, minor_radius=0.25, major_sections=48, minor_sections=24)
    raise ValueError(f"unknown object {name!r}; choose one of {', '.join(OBJECT_NAMES)}")


@lru_cache(maxsize=None)
def _normalised(name: str) -> tuple[np.ndarray, np.ndarray]:
    mesh = _raw_mesh(name)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    centre = (vertices.min(0) + vertices.max(0)) / 2.0
    vertices = vertices - centre
    vertices *= UNIT_RADIUS / np.linalg.norm(vertices, axis=1).max()
    return vertices, np.asarray(mesh.faces, dtype=np.int64)


def load_mesh(name: str) -> trimesh.Trimesh:
    """A fresh copy of object `name`, centred at the origin with bounding-sphere radius UNIT_RADIUS."""
    vertices, faces = _normalised(name)
    return trimesh.Trimesh(vertices.copy(), faces.copy(), process=False)


def render_mesh(name: str) -> trimesh.Trimesh:
    """The mesh as the renderer draws it: smooth-shaded, and closed by back faces where it is open.

    The teapot is not watertight (the lid sits on the rim; spout and handle pierce the body), so
    its inside can show through. pyrender's doubleSided flag is ignored by its segmentation pass
    (which always culls back faces), so colour and mask would disagree there. Instead we add a
    reversed copy of every face, with its own vertices and normals pointing the other way, and
    keep back-face culling on in every pass.
    """
    mesh = load_mesh(name)
    if not mesh.is_watertight:
        back = trimesh.Trimesh(mesh.vertices.copy(), mesh.faces[:, ::-1].copy(), process=False)
        mesh = trimesh.util.concatenate([mesh, back])
    # smooth_shaded splits vertices along sharp edges (cube, caps) and smooths the rest.
    return mesh.smooth_shaded
