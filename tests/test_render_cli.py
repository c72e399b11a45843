"""render-dataset and inspect-dataset through click's CliRunner: tiny renders, determinism, bad input."""

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from ibdata import h5format
from render.cli import inspect_dataset, render_dataset

TINY = ["--size", "8", "--frames", "4", "--train-sequences", "3", "--test-sequences", "2", "--quiet"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The same tiny 2-DoF dataset rendered with 1 and with 2 workers."""
    folder = tmp_path_factory.mktemp("render")
    paths = {}
    for workers in (1, 2):
        paths[workers] = folder / f"w{workers}.h5"
        result = CliRunner().invoke(render_dataset, ["--dof", "2", *TINY, "--workers", str(workers),
                                                     "--out", str(paths[workers])])
        assert result.exit_code == 0, result.output
    return paths


def test_render_writes_a_valid_file_with_sidecars(rendered):
    path = rendered[1]
    assert h5format.verify(path).manifest == "ok"
    with h5format.open_dataset(path) as f:
        h = h5format.read_header(f)
        assert f["train/frames"].shape == (3, 4, 8, 8, 3) and f["test/masks"].shape == (2, 4, 8, 8)
        assert h.dof == 2 and h.preset == "rotate-xy" and h.seed == 0
        assert h.config["frames"] == 4 and h.renderer["platform"] in ("egl", "osmesa")
        assert h.renderer["gl_renderer"] and h.generator.startswith("inbetween-bench")
    card = h5format.card_path(path).read_text()
    assert ("render-dataset --dof 2 --size 8 --frames 4 --train-sequences 3 --val-sequences 2 --test-sequences 2 "
            "--heldout-sequences 2 --protocol heldout --heldout-margin 10.0") in card


def test_same_seed_gives_identical_arrays_for_any_worker_count(rendered):
    with h5py.File(rendered[1]) as a, h5py.File(rendered[2]) as b:
        for split in ("train", "test"):
            for name in ("frames", "factors", "masks"):
                np.testing.assert_array_equal(a[split][name][()], b[split][name][()])
    # HDF5 stores no timestamps, so even the files' bytes (and manifests) agree.
    assert h5format.sha256_file(rendered[1]) == h5format.sha256_file(rendered[2])


def test_dof1_and_dof6_render(tmp_path):
    out1 = tmp_path / "d1.h5"
    r = CliRunner().invoke(render_dataset, ["--dof", "1", "--size", "8", "--frames", "8", "--protocol", "paper",
                                            "--quiet", "--out", str(out1)])
    assert r.exit_code == 0, r.output
    with h5py.File(out1) as f:  # the paper's protocol: full training turn, test at half steps, no heldout
        np.testing.assert_array_equal(f["train/factors"][0, :, 0], np.arange(8) * 45.0)
        np.testing.assert_array_equal(f["test/factors"][0, :, 0], np.arange(8) * 45.0 + 22.5)
        np.testing.assert_array_equal(f["val/factors"][0, :, 0], np.arange(8) * 45.0 + 11.25)
        assert f["heldout/frames"].shape[0] == 0
        assert not np.array_equal(f["train/frames"][()], f["test/frames"][()])
    out6 = tmp_path / "d6.h5"
    r = CliRunner().invoke(render_dataset, ["--dof", "6", *TINY, "--out", str(out6)])
    assert r.exit_code == 0, r.output
    with h5py.File(out6) as f:
        assert f["train/factors"].shape == (3, 4, 6)
        assert set(np.unique(f["train/masks"][()])) <= {0, 1, 2, 3}


def test_inspect_prints_summary_and_draws(rendered, tmp_path):
    sheet, gif = tmp_path / "sheet.png", tmp_path / "seq.gif"
    r = CliRunner().invoke(inspect_dataset, [str(rendered[1]), "--sheet", str(sheet), "--gif", str(gif)])
    assert r.exit_code == 0, r.output
    assert "rotate-xy" in r.output and "3 sequences x 4 frames" in r.output and "manifest ok" in r.output
    from PIL import Image
    assert Image.open(sheet).size == (4 * 8 * 2, 3 * 2 * 8 * 2)  # 4 frames wide; frames + masks rows; x2
    assert Image.open(gif).n_frames == 4


@pytest.mark.parametrize("args, message", [
    (["--dof", "3"], "--dof must be 1, 2 or 6"),
    (["--size", "4"], "--size must be between 8 and 1024"),
    (["--size", "2048"], "--size must be between 8 and 1024"),
    (["--frames", "2"], "--frames must be at least 3"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--object", "kettle"], "unknown --object"),
])
def test_bad_render_options_exit_2_with_one_line(tmp_path, args, message):
    out = tmp_path / "x.h5"
    r = CliRunner().invoke(render_dataset, [*args, "--out", str(out), "--quiet"])
    assert r.exit_code == 2
    assert message in r.output and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_output_and_unwritable_folder(rendered, tmp_path):
    before = h5format.sha256_file(rendered[1])
    r = CliRunner().invoke(render_dataset, [*TINY, "--out", str(rendered[1])])
    assert r.exit_code == 2 and "--overwrite" in r.output
    assert h5format.sha256_file(rendered[1]) == before
    (tmp_path / "file").write_text("x")
    r = CliRunner().invoke(render_dataset, [*TINY, "--out", str(tmp_path / "file" / "x.h5")])
    assert r.exit_code == 2 and "cannot create output folder" in r.output


def test_inspect_bad_files_exit_2(tmp_path, rendered):
    text = tmp_path / "t.h5"
    text.write_text("not hdf5")
    foreign = tmp_path / "f.h5"
    with h5py.File(foreign, "w") as f:
        f.attrs["format"] = "something-else"
    newer = tmp_path / "v2.h5"
    newer.write_bytes(rendered[1].read_bytes())
    with h5py.File(newer, "r+") as f:
        f.attrs["format_version"] = 3
    cut = tmp_path / "cut.h5"
    cut.write_bytes(rendered[1].read_bytes()[:3000])
    for path, message in [(tmp_path / "missing.h5", "no such file"), (text, "not an HDF5 file"),
                          (foreign, "not an inbetween-sequences dataset"), (newer, "format_version 3"),
                          (cut, "truncated or corrupt")]:
        r = CliRunner().invoke(inspect_dataset, [str(path)])
        assert r.exit_code == 2, (path, r.output)
        assert message in r.output and "Traceback" not in r.output
