"""Format v2 on tiny real renders: splits, poses and camera, scored heldout frames, Croissant, v1 files (kills: test_kill.py)."""

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from ibdata import h5format
from ibdata.tasks import HeldoutRegion
from ibdata.triplets import TripletDataset
from render.cli import inspect_dataset, render_dataset
from render.dataset import config_from_json
from render.presets import heldout_region, poses_from_factors

TINY6 = ["--dof", "6", "--size", "16", "--frames", "10", "--train-sequences", "4", "--test-sequences", "3",
         "--quiet", "--workers", "1"]


@pytest.fixture(scope="module")
def dof6(tmp_path_factory):
    out = tmp_path_factory.mktemp("v2") / "d6.h5"
    r = CliRunner().invoke(render_dataset, [*TINY6, "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_every_split_with_poses_camera_and_scored_frames(dof6):
    with h5format.open_dataset(dof6) as f:
        h = h5format.read_header(f)
        assert h.format_version == 2 and h.splits == ("train", "val", "test", "heldout")
        assert {s: f[s]["frames"].shape[0] for s in h.splits} == {"train": 4, "val": 3, "test": 3, "heldout": 3}
        config = config_from_json(h.config)
        region = HeldoutRegion.from_json(h.heldout["region"])
        assert region == heldout_region(config) and h.heldout["protocol"] == "heldout"
        assert h.camera["type"] == "orthographic" and h.camera["intrinsics"][0][0] == 8.0
        for split in h.splits:
            factors, poses = f[split]["factors"][()], f[split]["poses"][()]
            assert poses.shape == factors.shape[:2] + (3, 4, 4)
            np.testing.assert_allclose(poses[1], poses_from_factors(config, factors[1]), atol=1e-5)
        scored = f["heldout/scored"][()].astype(bool)
        np.testing.assert_array_equal(scored, region.contains(f["heldout/factors"][()]))
        assert scored.any() and not scored.all()
        assert region.distance(f["train/factors"][()]).min() >= region.margin - 1e-5


def test_triplet_dataset_reads_every_split_and_keeps_scored_heldout_triplets(dof6):
    for split in ("train", "val", "test"):
        ds = TripletDataset(dof6, split, gaps=(1, 3))
        assert len(ds) == ds.n_seq * (8 + 4) and ds.well_posed().all()  # linear motion: all well-posed
    held = TripletDataset(dof6, "heldout", gaps=(1, 3))
    s, t, _ = held.index.T
    assert held.scored[s, t].all() and len(held) < held.n_seq * 12
    everything = TripletDataset(dof6, "heldout", gaps=(1, 3), scored_only=False)
    assert len(everything) == everything.n_seq * 12
    f0, f1, f2 = held.triplet_factors([0])
    b = held.batch_uint8([0])
    np.testing.assert_array_equal(f1, b["factors"].numpy())
    np.testing.assert_array_equal(f0, held.factors[s[0], t[0] - held.index[0, 2]][None])
    assert held.poses([0, 1]).shape == (2, 3, 3, 4, 4)
    with pytest.raises(Exception, match="tau"):
        held.triplet_factors([0], tau=0.3)


def test_croissant_beside_the_file_validates_with_mlcroissant(dof6):
    mlc = pytest.importorskip("mlcroissant")
    path = h5format.croissant_path(dof6)
    doc = json.loads(path.read_text())
    assert path.name == "d6.croissant.json"
    assert doc["distribution"][0]["sha256"] == h5format.sha256_file(dof6)
    assert "render-dataset --dof 6" in doc["citeAs"] and doc["license"].endswith("MIT")
    assert [r["name"] for r in doc["recordSet"]] == ["train", "val", "test", "heldout"]
    assert "heldout/scored" in [fl["name"] for fl in doc["recordSet"][3]["field"]]
    assert doc["rai:hasSyntheticData"] is True and doc["rai:personalSensitiveInformation"]
    dataset = mlc.Dataset(jsonld=str(path))  # raises on any validation error
    assert [r.name for r in dataset.metadata.record_sets] == ["train", "val", "test", "heldout"]


def _as_v1(src, dst):
    """Rewrite a v2 file the way v1 stored it: train and test only, no camera, poses or heldout."""
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        for split in ("val", "heldout"):
            del f[split]
        for split in ("train", "test"):
            del f[split]["poses"]
        for key in ("camera", "heldout"):
            del f.attrs[key]
        f.attrs["format_version"] = np.int64(1)


def test_v1_files_still_read_and_missing_v2_fields_exit_2(dof6, tmp_path):
    old = tmp_path / "v1.h5"
    _as_v1(dof6, old)
    assert h5format.verify(old).manifest == "missing"
    ds = TripletDataset(old, "train", gaps=1)
    np.testing.assert_array_equal(ds.factors, h5format.read_split(dof6, "train").factors)
    assert h5format.read_split(old, "test").poses is None
    for call, message in [(lambda: TripletDataset(old, "heldout", gaps=1), r"has no heldout split \(format v1\)"),
                          (lambda: ds.poses([0]), r"has no train/poses \(format v1")]:
        with pytest.raises(Exception, match=message):
            call()
    r = CliRunner().invoke(inspect_dataset, [str(old), "--sheet", str(tmp_path / "s.png"), "--split", "val"])
    assert r.exit_code == 2 and "has no val split" in r.output and "Traceback" not in r.output
    assert config_from_json({"dof": 6, "size": 16, "frames": 10, "train_sequences": 4, "test_sequences": 3}).motion \
        == "bounce"


@pytest.mark.parametrize("args, message", [
    (["--dof", "6", "--motion", "zigzag"], "unknown --motion 'zigzag'"),
    (["--dof", "2", "--heldout-margin", "-1"], "--heldout-margin must be a finite number >= 0"),
    (["--dof", "2", "--heldout-margin", "155"], "leaving no training data"),
    (["--dof", "6", "--heldout-margin", "0.96"], "leaving no training motion"),
    (["--dof", "2", "--protocol", "papers"], "unknown --protocol"),
])
def test_bad_task_options_exit_2_with_one_line_and_nothing_left(tmp_path, args, message):
    out = tmp_path / "x.h5"
    r = CliRunner().invoke(render_dataset, [*args, "--size", "8", "--out", str(out), "--quiet"])
    assert r.exit_code == 2, r.output
    assert message in r.output and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert list(tmp_path.iterdir()) == []


def test_scored_only_needs_the_heldout_split(dof6):
    with pytest.raises(Exception, match="no scored frames"):
        TripletDataset(dof6, "test", gaps=1, scored_only=True)
