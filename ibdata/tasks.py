"""What a triplet asks (no GL): per-triplet well-posedness and the held-out region of factor space.

Both work on factors alone, so they apply to any file, including bounce files and users' files. The
rotation convention of the angle factors (rotation_x, rotation_y) is here too: the renderer poses
objects with it and the held-out region measures with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Largest |deviation| of x_tau's factors from the interpolation of x0's and x2's at which a triplet
# still counts as well-posed, per factor unit. deg: 0.5 degrees of rotation moves the rim of the
# default teapot (radius ~16 px at 32 px) by ~0.14 px. ndc: 0.01 of the half-width is 0.16 px at
# 32 px and 0.64 px at 128 px. px: half a pixel. All far above float32 storage error (~1e-4).
TOLERANCES = {"deg": 0.5, "ndc": 0.01, "px": 0.5}


def wrap_deg(x: np.ndarray) -> np.ndarray:
    """Angles in degrees wrapped to [-180, 180)."""
    return np.mod(np.asarray(x, dtype=np.float64) + 180.0, 360.0) - 180.0


def interpolation_error(f0, f_tau, f2, tau, units) -> np.ndarray:
    """x_tau's factors minus (1 - tau) f0 + tau f2, per factor: (..., F) float64.

    f0, f_tau, f2: (..., F); tau: scalar or (...,) broadcastable; units: F strings. For `deg`
    columns x2 is first taken the short way round from x0 (a rotation of 180 degrees or more between
    the end frames cannot be told from the shorter one the other way), and the error is wrapped, so
    wrapped and unwrapped angle files give the same answer.
    """
    f0, f_tau, f2 = (np.asarray(a, dtype=np.float64) for a in (f0, f_tau, f2))
    tau = np.asarray(tau, dtype=np.float64)[..., None]  # (..., 1)
    is_deg = np.array([u == "deg" for u in units])  # (F,)
    if f0.shape[-1] != len(is_deg):
        raise ValueError(f"factors have {f0.shape[-1]} columns but {len(is_deg)} units were given")
    f2 = np.where(is_deg, f0 + wrap_deg(f2 - f0), f2)
    err = f_tau - ((1.0 - tau) * f0 + tau * f2)
    return np.where(is_deg, wrap_deg(err), err)


def well_posed(f0, f_tau, f2, tau, units, tolerances: dict[str, float] | None = None) -> np.ndarray:
    """True where every factor of x_tau is within its unit's tolerance of the interpolation: (...,) bool.

    f0, f_tau, f2: (..., F) factors of frames t-k, t-k+j, t+k; tau = j / (2k) (0.5 for the middle
    frame), a scalar or (...,); units: F unit strings (the file's `factor_units`).
    """
    tol = TOLERANCES if tolerances is None else {**TOLERANCES, **tolerances}
    unknown = sorted({u for u in units if u not in tol})
    if unknown:
        raise ValueError(f"no well-posedness tolerance for factor unit(s) {', '.join(unknown)}; "
                         "pass tolerances={unit: value}")
    limit = np.array([tol[u] for u in units])  # (F,)
    return np.all(np.abs(interpolation_error(f0, f_tau, f2, tau, units)) <= limit, axis=-1)


# ----------------------------------------------------------------------------- held-out region


def rotation_x(deg: np.ndarray) -> np.ndarray:
    """Rotation matrices about x for angles in degrees: (...,) -> (..., 3, 3)."""
    a = np.deg2rad(np.asarray(deg, dtype=np.float64))
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def rotation_y(deg: np.ndarray) -> np.ndarray:
    """Rotation matrices about y for angles in degrees: (...,) -> (..., 3, 3)."""
    a = np.deg2rad(np.asarray(deg, dtype=np.float64))
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def rotations(factors: np.ndarray) -> np.ndarray:
    """Ry(rot_y) Rx(rot_x) of (..., 2) factors (rot_x, rot_y) in degrees: (..., 3, 3).

    The file's pose is this times a fixed base rotation, which cancels in every geodesic distance.
    """
    factors = np.asarray(factors, dtype=np.float64)
    return rotation_y(factors[..., 1]) @ rotation_x(factors[..., 0])


def geodesic_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation angle of a^T b in degrees for rotations a, b (..., 3, 3) (broadcast): (...,)."""
    trace = np.einsum("...ij,...ij->...", a, b)  # trace(a^T b)
    return np.degrees(np.arccos(np.clip((trace - 1.0) / 2.0, -1.0, 1.0)))


@dataclass(frozen=True)
class HeldoutRegion:
    """A region of factor space whose frames only the heldout split shows, and the margin kept around it.

    kind "arc" (dof 1): rot_x within `radius` degrees of centre[0] (mod 360).
    kind "so3_ball" (dof 2): pose within `radius` degrees (geodesic on SO(3)) of the pose at
        (rot_x, rot_y) = centre.
    kind "quadrant" (dof 6): some object's centre has x >= centre[0] and y >= centre[1] (ndc);
        `radius` is unused (0).
    Train and val frames are at distance >= margin from the region; heldout's scored frames lie in it.
    """

    kind: str
    centre: tuple[float, ...]
    radius: float
    margin: float
    unit: str  # "deg" or "ndc": the unit of radius, margin and distances

    def distance(self, factors: np.ndarray) -> np.ndarray:
        """Distance of frames (..., F) from the region in its metric, 0 inside: (...,) float64."""
        factors = np.asarray(factors, dtype=np.float64)
        if self.kind == "arc":
            return np.maximum(np.abs(wrap_deg(factors[..., 0] - self.centre[0])) - self.radius, 0.0)
        if self.kind == "so3_ball":
            centre = rotations(np.array(self.centre))
            return np.maximum(geodesic_deg(rotations(factors[..., :2]), centre) - self.radius, 0.0)
        if self.kind == "quadrant":
            xy = factors.reshape(factors.shape[:-1] + (-1, 2))  # (..., K, 2)
            gap = np.maximum(np.array(self.centre) - xy, 0.0)  # (..., K, 2): how far below each bound
            return np.sqrt((gap ** 2).sum(-1)).min(-1)  # the nearest object counts
        raise ValueError(f"unknown held-out region kind {self.kind!r}")

    def contains(self, factors: np.ndarray) -> np.ndarray:
        """Frames (..., F) inside the region (the heldout split's scored frames): (...,) bool."""
        return self.distance(factors) <= 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "centre": list(self.centre)}

    @classmethod
    def from_json(cls, values: dict) -> HeldoutRegion:
        return cls(values["kind"], tuple(values["centre"]), float(values["radius"]), float(values["margin"]),
                   values["unit"])


def pairwise_min_distance(kind: str, a: np.ndarray, b: np.ndarray, block: int = 256) -> float:
    """Smallest factor distance between any frame of a (N, F) and any frame of b (M, F).

    The metric of a region kind: |rot_x difference| mod 360 (arc), SO(3) geodesic (so3_ball),
    Euclidean over all positions (quadrant). Blocks of `block` rows of a bound the memory.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    best = np.inf
    if kind == "so3_ball":
        rb = rotations(b).reshape(len(b), 9)  # (M, 9): trace(Ra^T Rb) is a dot product of flattened matrices
    for i in range(0, len(a), block):
        chunk = a[i:i + block]
        if kind == "arc":
            d = np.abs(wrap_deg(chunk[:, None, 0] - b[None, :, 0]))
        elif kind == "so3_ball":
            trace = rotations(chunk).reshape(len(chunk), 9) @ rb.T
            d = np.degrees(np.arccos(np.clip((trace - 1.0) / 2.0, -1.0, 1.0)))
        else:
            d = np.sqrt(((chunk[:, None, :] - b[None, :, :]) ** 2).sum(-1))
        best = min(best, float(d.min()))
    return best
