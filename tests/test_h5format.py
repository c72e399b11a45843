"""HDF5 format v1: round trips, atomic writes, validation and verification (no GL)."""

import h5py
import numpy as np
import pytest

from ibdata import h5format
from ibutil.errors import UserError
from tests.conftest import write_tiny_dataset


def test_round_trip_preserves_arrays_and_header(tiny_h5):
    path, written = tiny_h5
    for split in ("train", "test"):
        arrays = h5format.read_split(path, split)
        frames, factors, masks = written[split]
        np.testing.assert_array_equal(arrays.frames, frames)
        np.testing.assert_array_equal(arrays.factors, factors)
        np.testing.assert_array_equal(arrays.masks, masks)
    with h5format.open_dataset(path) as f:
        h = h5format.read_header(f)
        assert f.attrs["format"] == "inbetween-sequences" and h.format_version == 2
        assert h.factor_names == ("teapot.f0", "teapot.f1") and h.objects[0]["name"] == "teapot"
        assert f["train/frames"].chunks[:2] == (1, 8)  # one sequence per chunk
        assert f["train/frames"].compression == "gzip"


def test_header_is_read_once_and_answers_every_fact(tiny_h5):
    path, written = tiny_h5
    h = h5format.read_header(path)  # from a path: opened, validated, closed
    assert h.path == path and h.splits == ("train", "val", "test", "heldout") and h.dof == 2 and h.image_size == 8
    assert h.shapes == {s: written[s][0].shape[:2] for s in h.splits} and h.shapes["train"] == (2, 8)
    assert h.n_frames("test") == written["test"][0].shape[1]
    assert h.sha256 == h5format.sha256_file(path) == h5format.manifest_path(path).read_text().split()[0]
    with h5format.open_dataset(path) as f:
        assert h5format.read_header(f) == h  # from an open file: the same header


def test_manifest_card_and_verify(tiny_h5):
    path, _ = tiny_h5
    manifest = h5format.manifest_path(path).read_text().split()
    assert manifest == [h5format.sha256_file(path), path.name]
    assert h5format.card_path(path).read_text().startswith("# test")
    result = h5format.verify(path)
    # 4 splits x (frames, factors, masks, poses) + heldout/scored
    assert result.manifest == "ok" and len(result.arrays) == 17 and "heldout/scored" in result.arrays
    h5format.manifest_path(path).unlink()
    assert h5format.verify(path).manifest == "missing"


def test_verify_detects_changed_content(tiny_h5):
    path, _ = tiny_h5
    with h5py.File(path, "r+") as f:
        f["test/frames"][0, 0, 0, 0, 0] ^= 1
    with pytest.raises(UserError, match="test/frames"):
        h5format.verify(path)


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "x.h5"
    with pytest.raises(RuntimeError):
        with h5format.DatasetWriter(path, _header(), {"train": (1, 3), "test": (1, 3)}, card="c") as w:
            w.write_sequence("train", 0, np.zeros((3, 8, 8, 3), np.uint8), np.zeros((3, 1)), np.zeros((3, 8, 8), np.uint8))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_incomplete_write_is_refused_and_removed(tmp_path):
    path = tmp_path / "x.h5"
    with pytest.raises(RuntimeError, match="not fully written"):
        with h5format.DatasetWriter(path, _header(), {"train": (2, 3), "test": (1, 3)}, card="c"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_existing_target_needs_overwrite(tiny_h5):
    path, _ = tiny_h5
    with pytest.raises(UserError, match="--overwrite"):
        h5format.check_target(path, overwrite=False)
    h5format.check_target(path, overwrite=True)


def test_unwritable_folder_is_refused(tmp_path):
    # A folder under a regular file cannot be created, even by root (whom permission bits don't stop).
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserError, match="cannot create output folder"):
        h5format.check_target(tmp_path / "file.txt" / "sub" / "x.h5", overwrite=False)
    with pytest.raises(UserError, match="is a folder"):
        h5format.check_target(tmp_path, overwrite=True)


def test_missing_non_hdf5_and_truncated_files(tmp_path, tiny_h5):
    with pytest.raises(UserError, match="no such file"):
        h5format.open_dataset(tmp_path / "nope.h5")
    text = tmp_path / "text.h5"
    text.write_text("hello")
    with pytest.raises(UserError, match="not an HDF5 file"):
        h5format.open_dataset(text)
    path, _ = tiny_h5
    cut = tmp_path / "cut.h5"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match="truncated or corrupt"):
        h5format.verify(cut)


def test_foreign_format_and_wrong_version(tmp_path, tiny_h5):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("images", data=np.zeros((2, 2)))
    with pytest.raises(UserError, match="not an inbetween-sequences dataset"):
        h5format.open_dataset(foreign)
    path, _ = tiny_h5
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 3
    with pytest.raises(UserError, match="format_version 3"):
        h5format.open_dataset(path)


def test_missing_split_and_bad_shapes(tmp_path):
    path = tmp_path / "a.h5"
    write_tiny_dataset(path)
    with h5py.File(path, "r+") as f:
        del f["test"]
    with pytest.raises(UserError, match="no 'test' group"):
        h5format.open_dataset(path)
    path2 = tmp_path / "b.h5"
    write_tiny_dataset(path2)
    with h5py.File(path2, "r+") as f:
        del f["train/masks"]
        f["train"].create_dataset("masks", data=np.zeros((2, 8, 4, 4), np.uint8))
    with pytest.raises(UserError, match="train/masks has shape"):
        h5format.open_dataset(path2)
    with pytest.raises(UserError, match="unknown split"):
        h5format.read_split(path2, "valid")


def _header():
    return h5format.Header(dof=1, preset="rotate-x", image_size=8, seed=0, factor_names=("a",), factor_units=("deg",),
                           objects=[], config={}, generator="test", renderer={})
