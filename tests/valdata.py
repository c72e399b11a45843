"""Test helper: a toy moving-disk file with a val split, and reading it before render's SPLITS names 'val'."""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

import numpy as np

import inbetween.data
import render.h5format
from inbetween.toy import disk_sequence
from render.h5format import DatasetWriter, Header


def write_toy_with_val(path, image_size=8, frames=8, train=4, val=2, test=2, seed=0) -> Path:
    """Like inbetween.toy.write_toy_dataset, plus `val` sequences in a val group."""
    rng = np.random.default_rng(seed)
    header = Header(dof=2, preset="toy-disk", image_size=image_size, seed=seed, factor_names=("x", "y"),
                    factor_units=("px", "px"), objects=[{"name": "disk"}], config={"seed": seed},
                    generator="tests.valdata", renderer={"name": "numpy anti-aliased disk"})
    shapes = {"train": (train, frames), "val": (val, frames), "test": (test, frames)}
    with DatasetWriter(Path(path), header, shapes, "# toy with val\n") as w:
        for split, (n, _) in shapes.items():
            for i in range(n):
                w.write_sequence(split, i, *disk_sequence(rng, image_size, frames))
    return Path(path)


@contextmanager
def val_split_readable():
    """Until the tasks-v2 branch adds 'val' to render.h5format.SPLITS, let TripletDataset read it (no-op after)."""
    with ExitStack() as stack:
        if "val" not in render.h5format.SPLITS:
            splits = (*render.h5format.SPLITS, "val")
            stack.enter_context(mock.patch.object(render.h5format, "SPLITS", splits))
            stack.enter_context(mock.patch.object(inbetween.data, "SPLITS", splits))
        yield
