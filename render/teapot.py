"""Tessellate Newell's Utah teapot Bezier patches (assets/newell-teapot.txt) into a triangle mesh in numpy."""

from __future__ import annotations

from importlib import resources

import numpy as np

# The data is famously squashed vertically; 1.3 restores the real pot's proportions.
Z_STRETCH = 1.3


def load_patches(text: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Parse the patch file; returns (patches (32, 4, 4) int, vertices (306, 3) float)."""
    if text is None:
        text = resources.files("render.assets").joinpath("newell-teapot.txt").read_text("utf-8")
    lines = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    n_patches = int(lines[0][1])
    patches = np.array(lines[1 : 1 + n_patches], dtype=np.int64).reshape(n_patches, 4, 4)
    n_vertices = int(lines[1 + n_patches][1])
    vertices = np.array(lines[2 + n_patches : 2 + n_patches + n_vertices], dtype=np.float64)
    if vertices.shape != (n_vertices, 3) or patches.max() >= n_vertices:
        raise ValueError("malformed teapot patch file")
    return patches, vertices


def bernstein3(t: np.ndarray) -> np.ndarray:
    """Cubic Bernstein basis at parameters t (N,); returns (N, 4)."""
    t = np.asarray(t, dtype=np.float64)[:, None]
    k = np.arange(4)[None, :]
    binom = np.array([1.0, 3.0, 3.0, 1.0])[None, :]
    return binom * t**k * (1.0 - t) ** (3 - k)


def tessellate(resolution: int = 12, text: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (vertices (V, 3) float64, faces (F, 3) int64) of the teapot, z-up, wound outward.

    Each patch is sampled on a (resolution+1)^2 grid. Coincident vertices (patch seams and the
    poles at the lid knob and bottom) are merged, and triangles that collapse are dropped.
    """
    patches, control = load_patches(text)
    control = control * np.array([1.0, 1.0, Z_STRETCH])
    n = resolution + 1
    basis = bernstein3(np.linspace(0.0, 1.0, n))  # (n, 4)
    cp = control[patches]  # (P, 4, 4, 3): control points, row u then column v
    # Surface point S(u, v) = sum_ij B_i(u) B_j(v) P_ij; evaluated for all patches at once.
    grid = np.einsum("ui,vj,pijc->puvc", basis, basis, cp)  # (P, n, n, 3)
    points = grid.reshape(-1, 3)

    # Two triangles per grid cell. As indexed, the data winds inward, so these are ordered
    # (a, c, b) rather than (a, b, c) to face outward.
    idx = np.arange(n * n).reshape(n, n)
    a, b = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel()
    c, d = idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()
    cell = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])  # (2 (n-1)^2, 3)
    offsets = (np.arange(len(patches)) * n * n)[:, None, None]
    faces = (cell[None] + offsets).reshape(-1, 3)

    # Merge vertices closer than 1e-6 (seams, poles) by rounding to a grid of that size.
    key = np.round(points / 1e-6).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    vertices = points[first]
    faces = inverse.reshape(-1)[faces]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    return vertices, faces[keep]
