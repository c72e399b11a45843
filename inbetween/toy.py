"""A toy HDF5 v1 file of a moving disk, drawn with numpy (no GL), for tests, benchmarks and smoke runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ibdata.h5format import DatasetWriter, Header


def disk_sequence(rng: np.random.Generator, size: int, frames: int):
    """One sequence of an anti-aliased disk moving on a straight line.

    Returns frames (T, H, W, 3) uint8, factors (T, 2) float32 (centre x, y in pixels), masks (T, H, W) uint8.
    """
    r = size / 6
    start, end = rng.uniform(r, size - r, size=(2, 2))  # (2,) each: centre at t = 0 and t = T-1
    colour = rng.uniform(0.3, 1.0, size=3)
    t = np.linspace(0, 1, frames)[:, None]
    centres = (1 - t) * start + t * end  # (T, 2)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    dist = np.hypot(xx[None] - centres[:, 0, None, None], yy[None] - centres[:, 1, None, None])  # (T, H, W)
    cover = np.clip(r + 0.5 - dist, 0, 1)  # (T, H, W): fraction of each pixel inside the disk
    img = 0.1 + cover[..., None] * (colour - 0.1)  # (T, H, W, 3) on a dark grey background
    return (np.round(img * 255).astype(np.uint8), centres.astype(np.float32), (cover > 0.5).astype(np.uint8))


def write_toy_dataset(path: str | os.PathLike, image_size: int = 16, frames: int = 8, train: int = 4,
                      test: int = 2, seed: int = 0, overwrite: bool = False, val: int = 0) -> Path:
    """Write `train` + `val` + `test` disk sequences of `frames` frames at image_size^2 to `path`; returns the path.

    val = 0 writes no val split (and the same bytes as before val existed)."""
    rng = np.random.default_rng(seed)
    header = Header(
        dof=2, preset="toy-disk", image_size=image_size, seed=seed, factor_names=("x", "y"),
        factor_units=("px", "px"), objects=[{"name": "disk"}],
        config={"image_size": image_size, "frames": frames, "train": train, "test": test, "seed": seed}
        | ({"val": val} if val else {}),
        generator="inbetween.toy", renderer={"name": "numpy anti-aliased disk"},
    )
    shapes = {"train": (train, frames)} | ({"val": (val, frames)} if val else {}) | {"test": (test, frames)}
    card = f"# toy-disk\n\n{train} train{f', {val} val' if val else ''} and {test} test sequences of a moving disk, {frames} frames, " \
           f"{image_size}x{image_size}, seed {seed}. Drawn by inbetween.toy for tests and benchmarks.\n"
    with DatasetWriter(Path(path), header, shapes, card, overwrite=overwrite) as w:
        for split, (n, _) in shapes.items():
            for i in range(n):
                w.write_sequence(split, i, *disk_sequence(rng, image_size, frames))
    return Path(path)
