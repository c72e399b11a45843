"""Scene description (objects, camera, lights) and pose maths, kept apart from the GL backend (no pyrender import).

The rotations of the factors (rotation_x, rotation_y) live in ibdata.tasks: readers need them too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ObjectSpec:
    """One object in the scene."""

    name: str  # a name from render.objects.OBJECT_NAMES
    colour: tuple[float, float, float]  # base colour, linear RGB in [0, 1]
    scale: float  # world-space bounding-sphere radius (meshes are normalised to radius 1)


@dataclass(frozen=True)
class CameraSpec:
    """A fixed camera on the +z axis looking at the origin down -z, y up."""

    kind: str  # "perspective" or "orthographic"
    distance: float  # camera z position in world units
    yfov_deg: float = 0.0  # perspective only: vertical field of view
    half_extent: float = 1.0  # orthographic only: world half-width (and half-height) of the frame
    znear: float = 0.1  # near clipping plane, world units in front of the camera

    @property
    def zfar(self) -> float:
        """Far clipping plane: 3 units behind the origin, past every object."""
        return self.distance + 3.0


@dataclass(frozen=True)
class SceneSpec:
    """Everything the backend needs besides per-frame poses."""

    objects: tuple[ObjectSpec, ...]
    camera: CameraSpec
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)  # RGB in [0, 1]
    ambient: float = 0.25  # ambient light intensity
    light_intensity: float = 2.5  # directional light, shining from the camera's upper left
    light_direction: tuple[float, float, float] = (-0.35, 0.45, 1.0)  # towards the light (world)


def pose_matrix(rotation: np.ndarray, translation: np.ndarray, scale: float) -> np.ndarray:
    """4x4 poses from rotations (..., 3, 3), translations (..., 3) and a uniform scale: (..., 4, 4)."""
    rotation = np.asarray(rotation, dtype=np.float64)
    out = np.zeros(rotation.shape[:-2] + (4, 4))
    out[..., :3, :3] = rotation * scale
    out[..., :3, 3] = translation
    out[..., 3, 3] = 1.0
    return out


def reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold unbounded straight-line positions x into [lo, hi] by reflecting off both ends.

    A triangle wave of period 2(hi - lo): the closed form of a point bouncing between walls,
    so the position at frame t needs no simulation of the frames before it.
    """
    span = hi - lo
    y = np.mod(np.asarray(x, dtype=np.float64) - lo, 2.0 * span)
    return lo + span - np.abs(span - y)


def camera_pose(camera: CameraSpec) -> np.ndarray:
    """The camera's 4x4 world pose (OpenGL convention: looks down its -z)."""
    pose = np.eye(4)
    pose[2, 3] = camera.distance
    return pose


def camera_json(camera: CameraSpec, size: int) -> dict:
    """The camera as a file stores it: type, projection, 3x3 pixel intrinsics and 4x4 world pose.

    `intrinsics` K maps a point (x, y, z) in OpenCV camera coordinates (x right, y down, z forward,
    i.e. `opencv_pose`) to pixel coordinates u = K[0,0] x/z + K[0,2], v = K[1,1] y/z + K[1,2]
    (orthographic: without the division by z), with (0, 0) the top-left corner of the top-left pixel,
    so pixel (row i, column j) has its centre at (u, v) = (j + 0.5, i + 0.5).
    """
    pose = camera_pose(camera)
    if camera.kind == "perspective":
        focal = (size / 2.0) / np.tan(np.deg2rad(camera.yfov_deg) / 2.0)
        projection = {"yfov_deg": camera.yfov_deg, "aspect_ratio": 1.0}
    else:
        focal = (size / 2.0) / camera.half_extent
        projection = {"xmag": camera.half_extent, "ymag": camera.half_extent}
    intrinsics = [[focal, 0.0, size / 2.0], [0.0, focal, size / 2.0], [0.0, 0.0, 1.0]]
    return {"type": camera.kind, **projection, "znear": camera.znear, "zfar": camera.zfar,
            "image_size": [size, size], "intrinsics": intrinsics, "pose": pose.tolist(),
            "opencv_pose": (pose @ np.diag([1.0, -1.0, -1.0, 1.0])).tolist(),
            "convention": "pose: camera-to-world, OpenGL (camera looks down its -z, y up); "
                          "opencv_pose = pose @ diag(1, -1, -1, 1) (looks down +z, y down), the frame K applies to"}


def light_pose(direction: tuple[float, float, float]) -> np.ndarray:
    """A 4x4 pose whose -z axis points along the light's travel, i.e. away from `direction`."""
    z = np.asarray(direction, dtype=np.float64)
    z = z / np.linalg.norm(z)
    x = np.cross([0.0, 1.0, 0.0], z)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, y, z], axis=1)
    return pose
