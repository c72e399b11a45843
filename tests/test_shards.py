"""Sharded rendering (--shard I/N), resume of complete shards, and merge-dataset."""

import pytest
from click.testing import CliRunner

from ibdata import h5format
from ibutil.errors import UserError
from render.cli import merge_dataset, render_dataset
from render.presets import RenderConfig, shard_ranges

ARGS = ["--dof", "2", "--size", "8", "--frames", "4", "--train-sequences", "5", "--test-sequences", "3", "--quiet",
        "--workers", "1"]


def test_shard_ranges_tile_each_split_in_order():
    cfg = RenderConfig(dof=2, train_sequences=10, test_sequences=3)
    parts = [shard_ranges(cfg, i, 3) for i in range(3)]
    assert [p["train"] for p in parts] == [(0, 3), (3, 6), (6, 10)]
    assert [p["test"] for p in parts] == [(0, 1), (1, 2), (2, 3)]
    with pytest.raises(UserError, match="at most 3 shards"):
        shard_ranges(cfg, 0, 4)
    with pytest.raises(UserError, match="0 <= I < N"):
        shard_ranges(cfg, 3, 3)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    runner = CliRunner()
    assert runner.invoke(render_dataset, [*ARGS, "--out", str(folder / "full.h5")]).exit_code == 0
    for i in range(3):
        r = runner.invoke(render_dataset, [*ARGS, "--shard", f"{i}/3", "--out", str(folder / f"s{i}.h5")])
        assert r.exit_code == 0, r.output
    return folder


def test_merged_shards_equal_the_unsharded_file_byte_for_byte(shards, tmp_path):
    out = tmp_path / "merged.h5"
    r = CliRunner().invoke(merge_dataset, [str(shards / f"s{i}.h5") for i in (2, 0, 1)] + ["--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert h5format.sha256_file(out) == h5format.sha256_file(shards / "full.h5")
    with h5format.open_dataset(out) as f:
        assert h5format.read_header(f).shard is None


def test_shard_files_say_which_sequences_they_hold(shards):
    with h5format.open_dataset(shards / "s1.h5") as f:
        h = h5format.read_header(f)
        assert h.shard == {"index": 1, "count": 3, "sequences": {"train": [1, 3], "val": [1, 2], "test": [1, 2],
                                                                   "heldout": [1, 2]}}
        assert f["train/frames"].shape[0] == 2
    assert "--shard 1/3" in h5format.card_path(shards / "s1.h5").read_text()


def test_rerun_skips_a_complete_shard_and_redoes_a_broken_one(shards, tmp_path):
    target = shards / "s0.h5"
    before = target.stat().st_mtime_ns
    r = CliRunner().invoke(render_dataset, [*ARGS, "--shard", "0/3", "--out", str(target)])
    assert r.exit_code == 0 and target.stat().st_mtime_ns == before  # not rewritten
    broken = tmp_path / "s1.h5"
    broken.write_bytes((shards / "s1.h5").read_bytes()[:2000])  # a killed copy
    r = CliRunner().invoke(render_dataset, [*ARGS, "--shard", "1/3", "--out", str(broken)])
    assert r.exit_code == 0, r.output
    assert h5format.sha256_file(broken) == h5format.sha256_file(shards / "s1.h5")


def test_merge_refuses_missing_duplicate_foreign_and_mixed_shards(shards, tmp_path):
    s = [str(shards / f"s{i}.h5") for i in range(3)]
    other = tmp_path / "other.h5"
    assert CliRunner().invoke(render_dataset, [*ARGS, "--seed", "1", "--shard", "2/3", "--out", str(other)]).exit_code == 0
    cases = [
        ([s[0], s[1]], "missing shard(s) 2 of 3"),
        ([s[0], s[0], s[1], s[2]], "given twice"),
        ([s[0], s[1], str(other)], "different config"),
        ([str(shards / "full.h5")], "is not a shard"),
    ]
    for paths, message in cases:
        out = tmp_path / "m.h5"
        r = CliRunner().invoke(merge_dataset, [*paths, "--out", str(out)])
        assert r.exit_code == 2 and message in r.output, r.output
        assert not out.exists()


def test_bad_shard_option_exits_2(tmp_path):
    for text, message in [("2", "I/N"), ("3/3", "0 <= I < N"), ("0/9", "at most 5 shards")]:
        r = CliRunner().invoke(render_dataset, [*ARGS, "--shard", text, "--out", str(tmp_path / "x.h5")])
        assert r.exit_code == 2 and message in r.output, r.output
    assert list(tmp_path.iterdir()) == []
