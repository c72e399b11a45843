"""Shared fixtures: tiny datasets written without GL, and a tiny rendered one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ibdata.h5format import DatasetWriter, Header
from render.scene import CameraSpec, camera_json


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests use tiny tensors, which gain nothing from intra-op threads; on a busy 2-core machine
    the threads' barriers made small convolutions ~50x slower than one thread."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def write_tiny_dataset(path, n_seq=(2, 1), n_frames=8, size=8, n_factors=2, seed=0, dof=2):
    """Write a random, GL-free v2 file (all four splits, camera, poses); returns the arrays written per split.

    train and test draw first, as in the v1 version of this helper, so their arrays are unchanged.
    """
    rng = np.random.default_rng(seed)
    camera = camera_json(CameraSpec("perspective", 4.0, yfov_deg=30.0), size)
    header = Header(dof=dof, preset="rotate-xy", image_size=size, seed=seed,
                    factor_names=tuple(f"teapot.f{i}" for i in range(n_factors)),
                    factor_units=("deg",) * n_factors,
                    objects=[{"index": 1, "name": "teapot", "colour": [1, 0, 0], "scale": 1.0}],
                    config={"dof": dof}, generator="test", renderer={"platform": "none"}, camera=camera,
                    heldout={"protocol": "heldout", "region": None})
    shapes = {"train": (n_seq[0], n_frames), "test": (n_seq[1], n_frames), "val": (1, n_frames),
              "heldout": (1, n_frames)}
    written, poses = {}, np.broadcast_to(np.eye(4, dtype=np.float32), (n_frames, 1, 4, 4))
    with DatasetWriter(path, header, shapes, card="# test\n") as w:
        for split, (s, t) in shapes.items():
            frames = rng.integers(0, 256, (s, t, size, size, 3), dtype=np.uint8)
            factors = rng.normal(size=(s, t, n_factors)).astype(np.float32)
            masks = rng.integers(0, 2, (s, t, size, size), dtype=np.uint8)
            for i in range(s):
                scored = (np.arange(t) % 2 == 0) if split == "heldout" else None
                w.write_sequence(split, i, frames[i], factors[i], masks[i], poses, scored)
            written[split] = (frames, factors, masks)
    return written


@pytest.fixture
def tiny_h5(tmp_path):
    path = tmp_path / "tiny.h5"
    return path, write_tiny_dataset(path)
