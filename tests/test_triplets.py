"""Tests of ibdata.triplets: triplet indexing, contents, lazy per-process reading and every bad input."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ibdata.h5format import read_split
from ibdata.triplets import TripletDataset, normalize_gaps, triplet_index
from ibutil.errors import UserError
from inbetween.toy import write_toy_dataset



@pytest.fixture
def toy(tmp_path):
    return write_toy_dataset(tmp_path / "toy.h5", image_size=8, frames=8, train=3, test=2)


def test_triplet_index_covers_every_valid_centre():
    idx = triplet_index(2, 8, (1, 3))
    assert len(idx) == 2 * 6 + 2 * 2
    for s, t, k in idx:
        assert k <= t < 8 - k
    assert {tuple(r) for r in idx if r[2] == 3} == {(0, 3, 3), (0, 4, 3), (1, 3, 3), (1, 4, 3)}


def test_items_are_the_stored_frames(toy):
    arrays = read_split(toy, "train")
    ds = TripletDataset(toy, "train", gaps=(1, 2))
    assert len(ds) == 3 * 6 + 3 * 4
    for i in (0, 7, len(ds) - 1):
        s, t, k = ds.index[i]
        item = ds[i]
        for j, d in enumerate((-k, 0, k)):
            x = item[f"x{j}"]
            assert x.shape == (3, 8, 8) and x.dtype == torch.float32
            expected = torch.from_numpy(arrays.frames[s, t + d]).permute(2, 0, 1).float() / 255
            assert torch.equal(x, expected)
        assert torch.equal(item["mask"], torch.from_numpy(arrays.masks[s, t]))
        assert torch.equal(item["factors"], torch.from_numpy(arrays.factors[s, t]))
        assert int(item["gap"]) == k
    assert 0.0 <= float(ds[0]["x1"].min()) and float(ds[0]["x1"].max()) <= 1.0


def test_batch_equals_stacked_items_and_is_contiguous(toy):
    ds = TripletDataset(toy, "test", gaps=2)
    idx = np.array([3, 0, 5])
    b = ds.batch(idx)
    assert b["x0"].shape == (3, 3, 8, 8) and b["x0"].is_contiguous()
    for j, i in enumerate(idx):
        assert torch.equal(b["x2"][j], ds[int(i)]["x2"])
    u = ds.batch_uint8(idx)
    assert u["x1"].dtype == torch.uint8 and torch.equal(u["x1"].float() / 255, b["x1"])


def test_lazy_mode_matches_memory_and_survives_workers(toy):
    mem = TripletDataset(toy, "train", gaps=1)
    lazy = TripletDataset(toy, "train", gaps=1, in_memory=False)
    assert mem.in_memory and not lazy.in_memory
    assert torch.equal(lazy.batch(np.arange(5))["x1"], mem.batch(np.arange(5))["x1"])
    assert lazy._file is not None  # opened on first use ...
    assert pickle.loads(pickle.dumps(lazy))._file is None  # ... but never shipped to a worker
    loader = DataLoader(lazy, batch_size=6, num_workers=2)
    got = torch.cat([b["x0"] for b in loader])
    assert torch.equal(got, mem.batch(np.arange(len(mem)))["x0"])


@pytest.mark.parametrize("gaps", [0, -1, (), (1, 0), "2", 1.5, True])
def test_bad_gaps(gaps):
    with pytest.raises(UserError, match="gaps must be"):
        normalize_gaps(gaps)


def test_gaps_are_sorted_and_deduplicated():
    assert normalize_gaps([3, 1, 3]) == (1, 3) and normalize_gaps(2) == (2,)


def test_gap_too_large_names_the_gap_and_length(toy):
    assert len(TripletDataset(toy, "train", gaps=3)) == 3 * 2  # 2k+1 = 7 <= 8 frames: fine
    with pytest.raises(UserError, match=r"gap 4 is too large.*T = 8"):
        TripletDataset(toy, "train", gaps=(1, 4))


def test_unknown_split(toy):
    with pytest.raises(UserError, match="unknown split 'valid'"):
        TripletDataset(toy, "valid")
    with pytest.raises(UserError, match="has no val split"):  # the toy file has train and test only
        TripletDataset(toy, "val")


def test_missing_split_group(toy):
    with h5py.File(toy, "r+") as f:
        del f["test"]
    with pytest.raises(UserError, match="no 'test' group"):
        TripletDataset(toy, "train")


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        TripletDataset(tmp_path / "absent.h5")


def test_foreign_hdf5_file(tmp_path):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(UserError, match="not an inbetween-sequences dataset"):
        TripletDataset(path)


def test_not_hdf5_at_all(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("hello")
    with pytest.raises(UserError, match="not an HDF5 file"):
        TripletDataset(path)


def test_wrong_format_version(toy):
    with h5py.File(toy, "r+") as f:
        f.attrs["format_version"] = np.int64(3)
    with pytest.raises(UserError, match="format_version 3"):
        TripletDataset(toy)


def test_truncated_file(toy, tmp_path):
    data = toy.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or corrupt"):
        TripletDataset(cut)


def test_empty_split(toy):
    # DatasetWriter cannot write an empty split (its chunks need one sequence), so empty one by hand.
    with h5py.File(toy, "r+") as f:
        for name in ("frames", "factors", "masks"):
            shape, dtype = f["test"][name].shape, f["test"][name].dtype
            del f["test"][name]
            f["test"].create_dataset(name, (0,) + shape[1:], dtype)
    assert len(TripletDataset(toy, "train")) == 18
    with pytest.raises(UserError, match="test split has no sequences"):
        TripletDataset(toy, "test")
