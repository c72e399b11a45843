"""export-triplets and score-predictions on a tiny real render: a built-in method's predictions, made outside the
benchmark, score exactly its run-benchmark records; bad predictions files exit 2 with one line; --reference; and
docs/your-method.md's worked example, whose render gives the committed grid's DoF 1 bytes."""

import json
import re
import shlex
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from benchmarks import methods
from benchmarks.cli import export_triplets, run_benchmark, score_predictions
from ibdata.h5format import sha256_file
from render.cli import render_dataset

TINY = ["--dof", "1", "--size", "16", "--frames", "24", "--workers", "1", "--quiet"]  # 85 frames, a few seconds
SCORE = ["--table-step-deg", "10", "--quiet"]  # a coarse pose table: 36 frames rendered once into the cache


def invoke(command, args):
    return CliRunner().invoke(command, [str(a) for a in args])


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A tiny rendered dof 1 file and run-benchmark's copy-x0 and pixel-average records on it."""
    root = tmp_path_factory.mktemp("pred")
    data, cache = root / "d1.h5", root / "cache"
    r = invoke(render_dataset, [*TINY, "--out", data])
    assert r.exit_code == 0, r.output
    r = invoke(run_benchmark, ["--data", data, "--methods", "copy-x0", "pixel-average", "--gap", 1, 3, "--cache", cache,
                               "--out", root / "rb", *SCORE])
    assert r.exit_code == 0, r.output
    return root, data, cache


def predict_file(inputs, out, method: str, dtype=np.float32) -> None:
    """What a user does elsewhere: read x0, x2 and tau, predict, write `frames` (here with a built-in method)."""
    module = methods.get(method)
    with h5py.File(inputs) as f:
        x0, x2 = (torch.from_numpy(f[n][()]).permute(0, 3, 1, 2).float() / 255 for n in ("x0", "x2"))
        tau = torch.from_numpy(f["tau"][()]).float()
    frames = module.predict(module.load(module.Config()), x0, x2, tau).permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)
    with h5py.File(out, "w") as f:
        f["frames"] = (frames * 255).round().astype(np.uint8) if dtype == np.uint8 else frames.astype(dtype)


def records(folder, method: str, **where) -> dict:
    doc = json.loads((folder / "results.json").read_text())
    return {(r["split"], r["gap"], r["tau"], r["well_posed"]): {k: v for k, v in r.items() if k != "method"}
            for r in doc["records"] if r["method"] == method and all(r[k] == v for k, v in where.items())}


@pytest.mark.parametrize("method, export_args, where", [
    ("pixel-average", [], {}),  # float32 predictions, every split and tau
    ("copy-x0", ["--split", "test", "--tau", 0.5], {"split": "test", "tau": 0.5}),  # uint8-exact, a subset
])
def test_predictions_of_a_builtin_method_score_its_benchmark_records(bench, tmp_path, method, export_args, where):
    root, data, cache = bench
    inputs, preds, out = tmp_path / "inputs.h5", tmp_path / "preds.h5", tmp_path / "out"
    r = invoke(export_triplets, ["--data", data, "--gap", 1, 3, *export_args, "--out", inputs, "--quiet"])
    assert r.exit_code == 0, r.output
    with h5py.File(inputs) as f:
        assert f.attrs["source_sha256"] == sha256_file(data) and f["x0"].dtype == np.uint8
        n = len(f["tau"])
        assert {f[k].shape for k in ("tau", "split", "sequence", "start", "gap", "j")} == {(n,)}
        assert np.allclose(f["tau"][()], f["j"][()] / (2 * f["gap"][()]))
        assert set(f["split"].asstr()[()]) == ({"test"} if where else {"test", "heldout"})
    predict_file(inputs, preds, method, np.uint8 if method == "copy-x0" else np.float32)
    r = invoke(score_predictions, ["--data", data, "--inputs", inputs, "--predictions", preds, "--name", "mine",
                                   "--cache", cache, "--out", out, *SCORE])
    assert r.exit_code == 0, r.output
    theirs, mine = records(root / "rb", method, **where), records(out, "mine")
    assert len(mine) >= 2 and mine == theirs  # every metric, n_triplets and well-posed subset, equal
    expected = {"results.json", "results.csv", "results.md", "config.json", "report.html", "triplets.csv.gz",
                "inbetween-dof1.png", "interpolation-dof1.png", "mse-vs-gap.png"}
    assert expected <= {p.name for p in out.iterdir()}
    if not where:  # every tau: the paths' smoothness too, and the tau figure
        paths = {(p["split"], p["gap"], p["well_posed"]): p["smoothness"]
                 for p in json.loads((out / "results.json").read_text())["paths"] if p["method"] == "mine"}
        ref = {(p["split"], p["gap"], p["well_posed"]): p["smoothness"]
               for p in json.loads((root / "rb" / "results.json").read_text())["paths"] if p["method"] == method}
        assert paths and paths == ref and (out / "error-vs-tau.png").exists()
    assert "| mine |" in (out / "results.md").read_text()
    # The interpolation strip draws the truth and, where every tau was exported, the predictions' own row
    # (report.figure_grid: 1.1 in per row + 0.4 in, at 110 dpi).
    rows = 1 if where else 2
    assert Image.open(out / "interpolation-dof1.png").size[1] == round((1.1 * rows + 0.4) * 110)


@pytest.fixture(scope="module")
def exported(bench, tmp_path_factory):
    root, data, cache = bench
    inputs = tmp_path_factory.mktemp("exp") / "inputs.h5"
    r = invoke(export_triplets, ["--data", data, "--gap", 1, 3, "--tau", 0.5, "--out", inputs, "--quiet"])
    assert r.exit_code == 0, r.output
    with h5py.File(inputs) as f:
        n, size = len(f["tau"]), f["x0"].shape[1]
    return inputs, n, size


def write(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name] = value
    return path


def bad_files(tmp_path, n, size, data):
    ok = np.zeros((n, size, size, 3), np.float32)
    nan = ok.copy()
    nan[3, 1, 1, 0] = np.nan
    other = tmp_path / "other.h5"  # a dataset file of other bytes
    with h5py.File(data) as f, h5py.File(other, "w") as g:
        for key in f:
            f.copy(key, g)
        g.attrs.update(f.attrs)
        g.attrs["generator"] = "edited"
    return {
        "count": ({"frames": ok[:-1]}, f"`frames` has {n - 1} rows but"),
        "channels-first": ({"frames": ok.transpose(0, 3, 1, 2)}, f"`frames` has shape {(n, 3, size, size)}, expected"),
        "dtype": ({"frames": ok.astype(np.int16)}, "`frames` is int16; write uint8 (0..255) or float"),
        "nan": ({"frames": nan}, "`frames` row 3 holds NaN; NaN predictions are refused"),
        "0-255": ({"frames": ok + 200.0}, "float `frames` must lie in [0, 1], found values in [200, 200]"),
        "no-frames": ({"pred": ok}, "has no dataset `frames`"),
        "sha256": ({"frames": ok, "data": other}, "is not the file"),
    }


@pytest.mark.parametrize("case", ["count", "channels-first", "dtype", "nan", "0-255", "no-frames", "sha256"])
def test_a_wrong_predictions_file_exits_2_with_one_line_and_no_output(bench, exported, tmp_path, case):
    root, data, cache = bench
    inputs, n, size = exported
    datasets, message = bad_files(tmp_path, n, size, data)[case]
    data_arg = datasets.pop("data", data)
    preds = write(tmp_path / "preds.h5", **datasets)
    out = tmp_path / "out"
    r = invoke(score_predictions, ["--data", data_arg, "--inputs", inputs, "--predictions", preds, "--name", "mine",
                                   "--cache", cache, "--out", out, *SCORE])
    assert r.exit_code == 2, r.output
    assert message in r.output and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not out.exists() and not list(tmp_path.glob(".out.tmp*"))


def test_bad_export_options_exit_2(bench, tmp_path):
    _, data, _ = bench
    for args, message in [(["--tau", 0.25], "--tau must be 0.5"), (["--split", "train"], "--split train: the benchmark"),
                          (["--gap", 20], "--gap 20 is too large")]:
        r = invoke(export_triplets, ["--data", data, *args, "--out", tmp_path / "i.h5", "--quiet"])
        assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1, r.output
        assert not (tmp_path / "i.h5").exists()


def test_a_builtin_name_is_refused(bench, exported, tmp_path):
    root, data, cache = bench
    r = invoke(score_predictions, ["--data", data, "--inputs", exported[0], "--predictions", tmp_path / "p.h5",
                                   "--name", "pixel-average", "--out", tmp_path / "o"])
    assert r.exit_code == 2 and "is a built-in method's name" in r.output


@pytest.fixture(scope="module")
def referenced(bench, exported, tmp_path_factory):
    """score-predictions with run-benchmark's folder on the same file as --reference."""
    root, data, cache = bench
    inputs = exported[0]
    tmp = tmp_path_factory.mktemp("ref")
    predict_file(inputs, tmp / "preds.h5", "pixel-average")
    out = tmp / "out"
    r = invoke(score_predictions, ["--data", data, "--inputs", inputs, "--predictions", tmp / "preds.h5", "--name",
                                   "mine", "--cache", cache, "--reference", root / "rb", "--out", out, *SCORE])
    assert r.exit_code == 0, r.output
    return out, tmp


def test_reference_rows_stand_beside_the_new_rows(bench, referenced):
    out, _ = referenced
    text = (out / "results.md").read_text()
    assert "| pixel-average [ref rb] |" in text and "| copy-x0 [ref rb] |" in text and "| mine |" in text
    assert "**Reference rows** (marked `[ref rb]`)" in text
    doc = json.loads((out / "results.json").read_text())
    assert doc["references"] == [{"run": str(bench[0] / "rb"), "name": "rb", "dofs": [1]}]
    assert {r["method"] for r in doc["records"]} == {"mine"}  # the reference's records stay in their own run
    # The tables' rows: mine and the reference's pixel-average score the same, row for row (same file, same blend).
    line = {row.split("|")[1].strip(): row.split("|")[2:] for row in text.splitlines() if row.startswith("| ")}
    assert line["mine"] == line["pixel-average [ref rb]"]


def test_reference_on_other_bytes_or_another_table_exits_2(bench, exported, referenced, tmp_path):
    root, data, cache = bench
    _, tmp = referenced
    fake = tmp_path / "fake"
    shutil.copytree(root / "rb", fake)
    doc = json.loads((fake / "results.json").read_text())
    doc["datasets"]["1"]["sha256"] = "0" * 64
    (fake / "results.json").write_text(json.dumps(doc))
    config = json.loads((fake / "config.json").read_text())
    (fake / "config.json").write_text(json.dumps(config | {"data": [], "profile": "full", "render_size": 32}))
    coarse = tmp_path / "coarse"
    shutil.copytree(root / "rb", coarse)
    doc = json.loads((coarse / "results.json").read_text())
    doc["tables"]["1"]["step_deg"] = 4.0
    (coarse / "results.json").write_text(json.dumps(doc))
    for ref, message in [(fake, "its dof 1 dataset is not the file scored here"),
                         (fake, "regenerate it with: render-dataset --dof 1 --size 32"),
                         (coarse, "pass --table-step-deg 4 so that pose errors compare"),
                         (tmp_path, "is not a results folder")]:
        out = tmp_path / "out"
        r = invoke(score_predictions, ["--data", data, "--inputs", exported[0], "--predictions", tmp / "preds.h5",
                                       "--name", "mine", "--cache", cache, "--reference", ref, "--out", out, *SCORE])
        assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1, r.output
        assert not out.exists() and not list(tmp_path.glob(".out.tmp*"))


def test_run_benchmark_takes_reference_rows_too(bench, tmp_path):
    root, data, cache = bench
    out = tmp_path / "out"
    r = invoke(run_benchmark, ["--data", data, "--methods", "copy-x0", "--gap", 1, 3, "--cache", cache,
                               "--reference", root / "rb", "--out", out, *SCORE])
    assert r.exit_code == 0, r.output
    text = (out / "results.md").read_text()
    assert "| copy-x0 |" in text and "| pixel-average [ref rb] |" in text
    assert "[ref rb]" in (out / "report.html").read_text()


ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "docs" / "results" / "grid"


def test_the_worked_example_runs_and_stands_beside_the_grid(tmp_path, monkeypatch):
    """docs/your-method.md's commands, as written: render-dataset gives the grid's DoF 1 bytes (the sha256 the grid
    recorded, rendered on another machine), and the numpy blend scores exactly the grid's pixel-average rows."""
    doc = (ROOT / "docs" / "your-method.md").read_text()
    section = doc[doc.index("### A worked example"):doc.index("### The inputs file")]
    commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    clis = {"render-dataset": render_dataset, "export-triplets": export_triplets, "score-predictions": score_predictions}
    ran = []
    for line in commands.splitlines():
        words = shlex.split(line.split("#")[0])
        if words == ["python", "predict.py"]:
            exec(script, {})
        else:
            args = [str(GRID) if w == "docs/results/grid" else w for w in words[1:]]
            r = CliRunner().invoke(clis[words[0]], [*args, "--quiet"])
            assert r.exit_code == 0, (line, r.output)
            if words[0] == "render-dataset":
                grid = json.loads((GRID / "results.json").read_text())["datasets"]["1"]["sha256"]
                assert sha256_file(tmp_path / "data" / "dof1.h5") == grid  # same options, same bytes, any machine
        ran.append(words[0])
    assert ran == ["render-dataset", "export-triplets", "python", "score-predictions"]
    assert "dof 1, k=2, pose error: my-model 1.00° (rank 1 of 13 rows)" in r.output
    mine = records(tmp_path / "results" / "my-model", "my-model")
    grid = records(GRID, "pixel-average", dof=1, split="test")
    metrics = ("mse", "psnr", "iou", "centroid_error", "sharpness", "pose_error_deg", "n_triplets")
    assert len(mine) == 4 and all(mine[key][m] == grid[key][m] for key in mine for m in metrics)  # bit for bit
    # SSIM's window sums are shifted-slice sums since SCORING_VERSION 4 (benchmarks/scoring/metrics.py): equal to 1e-12.
    assert all(mine[key]["ssim"] == pytest.approx(grid[key]["ssim"], rel=1e-12) for key in mine)
    # nn_distance is a float32 matrix product against the table: equal to BLAS rounding across machines.
    assert all(mine[key]["nn_distance"] == pytest.approx(grid[key]["nn_distance"], rel=1e-4) for key in mine)
    assert "| pixel-average [ref grid] |" in (tmp_path / "results" / "my-model" / "results.md").read_text()
