"""run-benchmark end to end (--quick, through CliRunner) and its bad inputs."""

import csv
import json
import subprocess
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from benchmarks.cli import run_benchmark
from tests.conftest import write_tiny_dataset


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    out, cache = root / "out", root / "cache"
    args = ["--quick", "--alpha", "0", "100", "--seeds", "2", "--out", str(out), "--cache", str(cache), "--quiet",
            "--threads", "1"]
    result = CliRunner().invoke(run_benchmark, args)
    assert result.exit_code == 0, result.output
    return out, cache, args, result


def test_quick_run_writes_every_output(quick_run):
    out, _, _, result = quick_run
    assert str(out) in result.output
    expected = {"results.json", "results.csv", "results.md", "config.json", "mse-vs-gap.png", "error-vs-tau.png",
                "training-curves.png", "triplets.csv.gz"}
    expected |= {f"inbetween-dof{d}.png" for d in (1, 2, 6)} | {f"interpolation-dof{d}.png" for d in (1, 2, 6)}
    assert expected <= {p.name for p in out.iterdir()}
    for name in expected:
        assert (out / name).stat().st_size > 100, name


def test_triplets_file_holds_every_middle_frame_behind_each_record(quick_run):
    import gzip
    import numpy as np
    out = quick_run[0]
    with gzip.open(out / "triplets.csv.gz", "rt", newline="") as fh:
        lines = list(csv.DictReader(fh))
    records = [r for r in json.loads((out / "results.json").read_text())["records"] if r["tau"] == 0.5]
    assert {int(x["dof"]) for x in lines} == {1, 2, 6} and len(records) > 20
    by_row: dict = {}
    for x in lines:
        key = (int(x["dof"]), x["split"], int(x["gap"]), x["method"], x["alpha"], x["seed"], x["well_posed"] == "1")
        by_row.setdefault(key, []).append(x)
    for r in records:  # each record's n_triplets and mean MSE are those of its lines
        key = (r["dof"], r["split"], r["gap"], r["method"], "" if r["alpha"] is None else str(r["alpha"]),
               "" if r["seed"] is None else str(r["seed"]), r["well_posed"])
        rows = by_row.pop(key)
        assert len(rows) == r["n_triplets"]
        assert np.mean([float(x["mse"]) for x in rows]) == pytest.approx(r["mse"], rel=1e-4)
        if r["dof"] == 1:
            assert np.mean([float(x["pose_error_deg"]) for x in rows]) == pytest.approx(r["pose_error_deg"], abs=1e-3)
    assert not by_row  # no line without its record


def test_run_ends_with_a_summary_naming_the_figure(quick_run):
    out, _, _, result = quick_run
    tail = result.output.strip().splitlines()[-6:]  # header, one line per dof (3), tables, figure
    assert tail[0].startswith("Summary: test split, well-posed")
    assert tail[1].startswith("dof 1, k=1, pose error: ") and "alpha-vae α=100 (avg-gaussian)" in tail[1]
    assert tail[3].startswith("dof 6, k=1, position error: ") and "[best]" in tail[3]
    assert tail[-1] == f"Open {out}/inbetween-dof6.png first: every method's in-betweens beside the true frame."


def test_demo_profile_plans_dof_1_and_2_with_every_method():
    r = CliRunner().invoke(run_benchmark, ["--demo", "--plan"])
    assert r.exit_code == 0, r.output
    jobs = [json.loads(line) for line in r.output.splitlines()]
    assert [j["id"] for j in jobs if j["kind"] != "train"] == ["render-dof1", "render-dof2", "eval-dof1", "eval-dof2"]
    trained = {m for j in jobs if j["kind"] == "train" for m in j.get("members", [j["id"]])}
    for dof in (1, 2):  # one seed of every learned method, alpha 0 and 100
        assert {f"train-{m}-dof{dof}-s0" for m in ("frame-cnn", "autoencoder", "acai", "alpha-vae-a0",
                                                   "alpha-vae-a100-avg-gaussian")} <= trained
    assert {j["lr"] for j in jobs if j["kind"] == "train" and j["method"] != "mean-frame"} == {1e-3}


def test_first_seed_plans_later_seeds_only():
    r = CliRunner().invoke(run_benchmark, ["--quick", "--dof", "1", "--methods", "alpha-vae", "copy-x0", "--seeds", "2",
                                           "--first-seed", "3", "--no-ensemble", "--plan"])
    assert r.exit_code == 0, r.output
    trained = [j for j in map(json.loads, r.output.splitlines()) if j["kind"] == "train"]
    assert sorted({j["seed"] for j in trained}) == [3, 4] and len(trained) == 4  # alpha 0 and 100, seeds 3 and 4
    bad = CliRunner().invoke(run_benchmark, ["--quick", "--first-seed", "-1", "--plan"])
    assert bad.exit_code == 2 and "--first-seed must be at least 0" in bad.output


def test_demo_profile_settings():
    from benchmarks.engine.config import profile_config, render_config
    c = profile_config("demo")
    assert (c.dofs, c.gaps, c.steps, c.batch_size, c.render_size, c.all_taus) == ((1, 2), (2, 5, 10), 250, 32, 32, False)
    assert c.method_configs["alpha-vae"].width == 0.125 and c.method_configs["alpha-vae"].latent == 32
    assert c.method_configs["acai"].width == 0.125 and c.method_configs["frame-cnn"].channels == 16
    dof2 = render_config(c, 2)
    assert (dof2.size, dof2.frames, dof2.train_sequences, dof2.test_sequences) == (32, 30, 100, 10)
    from benchmarks.engine.config import BenchmarkConfig
    assert render_config(c, 1) == render_config(BenchmarkConfig(render_size=32), 1)  # dof 1: the preset


def test_quick_and_demo_together_exit_2(tmp_path):
    r = CliRunner().invoke(run_benchmark, ["--quick", "--demo", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "give --quick or --demo, not both" in r.output


def test_results_json_has_one_record_per_combination(quick_run):
    out = quick_run[0]
    doc = json.loads((out / "results.json").read_text())
    assert set(doc["datasets"]) == {"1", "2", "6"}
    assert all(len(v["sha256"]) == 64 for v in doc["datasets"].values())
    recs = doc["records"]
    keys = {(r["dof"], r["split"], r["method"], r["alpha"], r["kl"], r["gap"], r["tau"], r["well_posed"], r["seed"])
            for r in recs}
    assert len(keys) == len(recs)  # one record per (dof, split, method, alpha, kl, gap, tau, well_posed, seed)
    # Gap 1 scores tau 1/2, gap 3 scores tau 1/6 .. 5/6: 6 (gap, tau) per row-maker and split.
    assert {(r["gap"], r["tau"]) for r in recs} == {(1, 0.5)} | {(3, j / 6) for j in range(1, 6)}
    assert {r["split"] for r in recs} == {"test", "heldout"}  # the two protocols
    # Row-makers: 5 unseeded (copy-x0, mean-frame, pixel-average, optical-flow, rife) + 2 seeds x (frame-cnn,
    # autoencoder, acai, alpha 0, alpha 100). Every (dof, split, gap, tau) has each row-maker's triplets once,
    # split between the well-posed and the ambiguous record as the ceiling rows split them.
    ceiling = doc["ceiling"]
    n_true = {}
    for c in ceiling:
        n_true.setdefault((c["dof"], c["split"], c["gap"], c["tau"]), {})[c["well_posed"]] = c["n_triplets"]
    counted = {}
    for r in recs:
        key = (r["dof"], r["split"], r["gap"], r["tau"], r["method"], r["alpha"], r["seed"])
        counted.setdefault(key, {})[r["well_posed"]] = r["n_triplets"]
    assert len(counted) == len(n_true) * (5 + 2 * 5)
    for key, n in counted.items():
        assert n == n_true[key[:4]], key
    assert len(n_true) == 3 * 2 * 6
    for r in recs:
        if r["method"] in ("pixel-average", "optical-flow", "copy-x0", "mean-frame", "rife"):
            assert r["alpha"] is None and r["kl"] is None and r["seed"] is None
        if r["method"] == "alpha-vae":
            assert r["alpha"] in (0.0, 100.0) and r["seed"] in (0, 1)
            assert (r["kl"] is None) == (r["alpha"] == 0.0)
        if r["method"] in ("frame-cnn", "autoencoder", "acai", "alpha-vae"):  # the training summary rides along
            # --quick: 30 steps, val every 10: the selected step is one of the evaluations.
            assert r["params"] > 0 and r["selected_step"] in (10, 20, 30) and r["lr"] > 0 and r["train_seconds"] > 0
            assert r["steps"] == 30 and 0 < r["train_flops"] <= 30 * r["flops_per_step"]  # epochs end in smaller batches
            assert r["train_flops"] == 30 * r["flops_per_step"] or r["method"] != "frame-cnn"  # full batches only
            assert r["best_val_loss"] > 0 and r["lr_trials"] == 1 and r["budget_gflop"] is None
        assert 0 <= r["mse"] <= 1 and 0 <= r["ssim"] <= 1 and 0 <= r["iou"] <= 1 and r["n_triplets"] > 0
        assert r["sharpness"] >= 0
        if r["dof"] == 6:
            assert r["position_error_px"] >= 0 and r["pose_error_deg"] is None
        else:
            assert 0 <= r["pose_error_deg"] <= 180 and 0 <= r["nn_distance"] <= 1 and r["position_error_px"] is None
    # Known answers at the coarse --quick table (10 deg): copy-x0 on dof 1 (15 deg per frame at 24 frames per
    # turn) is off by 15 deg at gap 1 and 45 deg at gap 3; its path stands still, then jumps: 1 - 1/(2k).
    for r in recs:
        if r["method"] == "copy-x0" and r["dof"] == 1 and r["tau"] == 0.5:
            assert r["pose_error_deg"] == pytest.approx(15.0 * r["gap"], abs=1e-6)
    for p in doc["paths"]:
        if p["method"] == "copy-x0" and p["dof"] == 1:
            assert p["smoothness"] == pytest.approx(1 - 1 / (2 * p["gap"]), abs=1e-6)
    assert {p["dof"] for p in doc["paths"]} == {1, 2} and doc["tables"]["2"]["step_deg"] == 10.0
    assert all(c["mse"] == 0 and c["sharpness"] == 1.0 for c in ceiling)
    with open(out / "results.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(recs)


def test_results_md_and_config(quick_run):
    out = quick_run[0]
    md = (out / "results.md").read_text()
    for dof in (1, 2, 6):
        assert f"## DoF {dof}" in md
    assert "| pixel-average |" in md and "alpha-vae α=100 (avg-gaussian)" in md and " ± " in md
    assert "| copy-x0 |" in md and "| mean-frame |" in md and "| autoencoder |" in md and "## Compute" in md
    assert "| method | test k=1 | test k=3 | heldout k=1 | heldout k=3 |" in md and "pose error, degrees" in md
    assert "coarser than the default 2°" in md and "Smoothness along the tau path" in md
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["method_configs"]["alpha-vae"]["alphas"] == [0.0, 100.0] and cfg["profile"] == "quick" and cfg["seeds"] == 2
    assert cfg["method_configs"]["frame-cnn"]["channels"] == 8  # the --quick profile of the method
    assert cfg["versions"]["torch"] and cfg["versions"]["inbetween-bench"] == "0.1.0"


def test_rerun_with_one_more_alpha_reuses_cached_models(quick_run, tmp_path):
    out, cache, args, _ = quick_run
    models_before = {p.name for p in (cache / "models").iterdir()}
    new_out = tmp_path / "again"
    a = list(args)
    a[a.index("--out") + 1] = str(new_out)
    a[a.index("100") + 1:a.index("100") + 1] = ["10"]
    result = CliRunner().invoke(run_benchmark, a)
    assert result.exit_code == 0, result.output
    added = {p.name for p in (cache / "models").iterdir()} - models_before
    # Only the alpha = 10 models are new: one per (dof, seed).
    assert len(added) == 3 * 2 and all(n.startswith("train-alpha-vae-a10-") for n in added)
    old = {(r["dof"], r["split"], r["method"], r["alpha"], r["gap"], r["tau"], r["well_posed"], r["seed"]): r["mse"]
           for r in json.loads((out / "results.json").read_text())["records"]}
    new = {(r["dof"], r["split"], r["method"], r["alpha"], r["gap"], r["tau"], r["well_posed"], r["seed"]): r["mse"]
           for r in json.loads((new_out / "results.json").read_text())["records"]}
    assert all(new[k] == v for k, v in old.items())  # cached models give the same numbers


@pytest.fixture
def tiny_data(tmp_path):
    path = tmp_path / "tiny.h5"
    write_tiny_dataset(path, n_frames=8, size=8)
    return path


def test_a_train_job_reads_its_dataset_header_once(tiny_data, tmp_path, monkeypatch):
    """ready_dataset reads the header (checking the gaps on it) and train_spec sizes the budget from the same one."""
    from benchmarks.engine import plan, run
    from benchmarks.engine.config import quick_config
    from ibdata import h5format
    config = quick_config(data=(str(tiny_data),), methods=("frame-cnn",), gaps=(1, 3), cache=str(tmp_path / "cache"),
                          out=str(tmp_path / "out"), progress=False)
    job = next(j for j in plan.plan(config) if j.kind == "train")
    opened, read_header = [], h5format.read_header
    monkeypatch.setattr(h5format, "read_header", lambda source: opened.append(source) or read_header(source))
    header = run.ready_dataset(config, job.dof)
    spec = run.train_spec(config, job, header)
    assert [s for s in opened if isinstance(s, (str, Path))] == [str(tiny_data)]  # the --data file, opened once
    assert spec.data == str(tiny_data) and header.shapes["train"][1] == 8


@pytest.mark.parametrize("args, message", [
    (["--alpha", "-1"], "--alpha must be a finite number >= 0"),
    (["--alpha", "nan"], "--alpha must be a finite number >= 0"),
    (["--methods", "magic"], "unknown method 'magic'"),
    (["--kl", "wasserstein"], "unknown KL form 'wasserstein'"),
    (["--gap", "5"], "--gap 5 is too large"),
])
def test_bad_options_exit_2_without_output(tmp_path, tiny_data, args, message):
    out = tmp_path / "out"
    r = CliRunner().invoke(run_benchmark, ["--quick", "--data", str(tiny_data), *args, "--out", str(out),
                                           "--cache", str(tmp_path / "c"), "--quiet"])
    assert r.exit_code == 2, r.output
    assert message in r.output and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not out.exists() and not list(tmp_path.glob(".out.tmp*"))


def test_bad_data_files_exit_2(tmp_path, tiny_data):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.attrs["format"] = "other"
    newer = tmp_path / "newer.h5"
    newer.write_bytes(tiny_data.read_bytes())
    with h5py.File(newer, "r+") as f:
        f.attrs["format_version"] = 9
    for path, message in [(tmp_path / "missing.h5", "no such file"), (foreign, "not an inbetween-sequences"),
                          (newer, "format_version 9")]:
        out = tmp_path / "out"
        r = CliRunner().invoke(run_benchmark, ["--quick", "--data", str(path), "--out", str(out), "--quiet"])
        assert r.exit_code == 2 and message in r.output, r.output
        assert not out.exists()


def test_unwritable_or_existing_out_exit_2(tmp_path, tiny_data):
    (tmp_path / "file").write_text("x")
    r = CliRunner().invoke(run_benchmark, ["--quick", "--data", str(tiny_data), "--out",
                                           str(tmp_path / "file" / "sub" / "out")])
    assert r.exit_code == 2 and "cannot create" in r.output
    (tmp_path / "exists").mkdir()
    r = CliRunner().invoke(run_benchmark, ["--quick", "--data", str(tiny_data), "--out", str(tmp_path / "exists")])
    assert r.exit_code == 2 and "--overwrite" in r.output


def test_train_inbetween_trains_and_reports_bad_input(tmp_path, tiny_data):
    from inbetween.cli import train_inbetween

    out = tmp_path / "run"
    r = CliRunner().invoke(train_inbetween, ["--data", str(tiny_data), "--out-dir", str(out), "--width", "0.05",
                                             "--latent", "4", "--steps", "3", "--batch-size", "4", "--gap", "1", "2",
                                             "--quiet"])
    assert r.exit_code == 0, r.output
    assert (out / "checkpoint.pt").exists() and (out / "log.csv").read_text().count("\n") == 4  # header, 3 steps
    r = CliRunner().invoke(train_inbetween, ["--data", str(tiny_data), "--out-dir", str(out), "--quiet"])
    assert r.exit_code == 2 and "already holds a run" in r.output
    r = CliRunner().invoke(train_inbetween, ["--data", str(tiny_data), "--alpha", "-2", "--out-dir", str(tmp_path / "b")])
    assert r.exit_code == 2 and "alpha must be" in r.output


def test_train_inbetween_has_every_train_config_field(tmp_path, tiny_data):
    import dataclasses

    from inbetween.cli import train_inbetween
    from inbetween import TrainConfig, checkpoint_config

    options = {o for p in train_inbetween.params for o in p.opts}
    renamed = {"gaps": "--gap", "kl_form": "--kl", "progress": "--quiet"}
    for f in dataclasses.fields(TrainConfig):
        assert renamed.get(f.name, "--" + f.name.replace("_", "-")) in options, f.name
    out = tmp_path / "run"
    r = CliRunner().invoke(train_inbetween, ["--data", str(tiny_data), "--out-dir", str(out), "--width", "0.05",
                                             "--latent", "4", "--steps", "2", "--batch-size", "4", "--quiet",
                                             "--likelihood", "gaussian", "--kl", "mixture", "--mixture-samples", "3",
                                             "--checkpoint-every", "1"])
    assert r.exit_code == 0, r.output
    cfg = checkpoint_config(out / "checkpoint.pt")
    assert (cfg.likelihood, cfg.kl_form, cfg.mixture_samples, cfg.checkpoint_every) == ("gaussian", "mixture", 3, 1)
    assert cfg.lr == TrainConfig.lr and cfg.epochs == TrainConfig.epochs  # untouched options keep the dataclass's default


def test_method_options_reach_their_method_only(tmp_path):
    def plan(*extra):
        r = CliRunner().invoke(run_benchmark, ["--quick", "--dof", "1", "--plan", "--cache", str(tmp_path), *extra])
        assert r.exit_code == 0, r.output
        return {j["id"]: j["hash"] for j in map(json.loads, r.output.strip().splitlines())}

    base, lr, width = plan(), plan("--frame-cnn-lr", "0.02"), plan("--width", "0.1")
    changed = {i for i in base if lr[i] != base[i]}
    assert changed == {"train-frame-cnn-dof1-s0", "eval-dof1"}
    # --width is shared by the latent models: the autoencoder, acai and every alpha-VAE change together.
    assert {i for i in base if width[i] != base[i]} == {"train-autoencoder-dof1-s0", "train-acai-dof1-s0",
                                                        "train-alpha-vae-ensemble-dof1-s0", "eval-dof1"}
    assert plan("--methods", "pixel-average", "alpha-vae", "--width", "0.1")  # shared: only chosen methods take it
    r = CliRunner().invoke(run_benchmark, ["--quick", "--plan", "--methods", "pixel-average", "--frame-cnn-lr", "0.1"])
    assert r.exit_code == 2 and "frame-cnn is not among --methods" in r.output


def test_the_committed_v3_run_keeps_its_cache_keys():
    """A model trained by benchmarks/tools/v2_run.sh's V3_D command is found as done by later code: its render,
    train and ensemble folders keep their `{id}-{hash}` names (known answers from commit a7559b1, which
    trained them). A change here re-trains every cached model of that run; make it on purpose only."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "tools" / "v2_run.sh"
    options = subprocess.run(["bash", "-c", f'eval "$(sed -n "/^COMMON=/,/^V3_STAGES=/p" {script})"; echo $V3_D'],
                             capture_output=True, text=True, check=True).stdout.split()

    def folders(*extra):
        r = CliRunner().invoke(run_benchmark, [*options, *extra, "--plan"])
        assert r.exit_code == 0, r.output
        return [f"{j['id']}-{j['hash']}" for j in map(json.loads, r.output.splitlines()) if j["kind"] != "eval"]

    assert folders("--no-ensemble") == [
        "render-dof2-90f9788550a6f52d", "train-mean-frame-dof2-09b233068aabfe0c",
        "train-alpha-vae-a0-dof2-s10-f60fea55a95f5202", "train-alpha-vae-a0-dof2-s11-da7d495d9b212a30",
        "train-alpha-vae-a0-dof2-s12-54d325d42cb33cfd", "train-alpha-vae-a0-dof2-s13-06c16faa9f9e5796",
        "train-alpha-vae-a0-dof2-s14-d89017cc9f316dbf",
        "train-alpha-vae-a100-avg-gaussian-dof2-s10-336624a0d18b2fdc",
        "train-alpha-vae-a100-avg-gaussian-dof2-s11-69306a1ce682c5e7",
        "train-alpha-vae-a100-avg-gaussian-dof2-s12-fc2fb2c4ef14e4a0",
        "train-alpha-vae-a100-avg-gaussian-dof2-s13-6b537617e5aa6954",
        "train-alpha-vae-a100-avg-gaussian-dof2-s14-8c2444183d6ac15a"]
    # The ensembles' batched checkpoints (cache.ensemble_dir of all members: the job's own hash).
    assert folders()[2:] == ["train-alpha-vae-ensemble-dof2-s10-d30a2f67bce2680b",
                             "train-alpha-vae-ensemble-dof2-s11-2f2690364cf2e4d6",
                             "train-alpha-vae-ensemble-dof2-s12-c18f9b4c7441565a",
                             "train-alpha-vae-ensemble-dof2-s13-9022fa0eb215ccbb",
                             "train-alpha-vae-ensemble-dof2-s14-2e6ddbf44bada8ad"]


def test_lr_trials_are_train_jobs_and_the_best_val_loss_is_scored(tmp_path, tiny_data):
    common = ["--quick", "--data", str(tiny_data), "--methods", "pixel-average", "frame-cnn", "autoencoder",
              "--cache", str(tmp_path / "cache"), "--quiet", "--threads", "1", "--gap", "1", "--lr-trials", "2",
              "--budget-gflop", "1.0", "--eval-every", "2"]
    r = CliRunner().invoke(run_benchmark, [*common, "--plan"])
    assert r.exit_code == 0, r.output
    trains = [j for j in map(json.loads, r.output.strip().splitlines()) if j["kind"] == "train"]
    # One job per (method, trial): the lr grid around each method's default, 1/3 and 1 of it; its hash includes lr.
    lrs = {(j["method"], j["id"][-3:]): j["lr"] for j in trains}
    assert lrs == pytest.approx({("frame-cnn", "lr0"): 1e-3 / 3, ("frame-cnn", "lr1"): 1e-3,
                                 ("autoencoder", "lr0"): 3e-4 / 3, ("autoencoder", "lr1"): 3e-4})
    assert len({j["hash"] for j in trains}) == 4
    r = CliRunner().invoke(run_benchmark, [*common, "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["budget_gflop"] == 1.0 and cfg["lr_trials"] == 2
    recs = json.loads((tmp_path / "out" / "results.json").read_text())["records"]
    for method in ("frame-cnn", "autoencoder"):
        trials = [j for j in trains if j["method"] == method]
        summaries = [json.loads((tmp_path / "cache" / "models" / f"{j['id']}-{j['hash']}" / "summary.json")
                                .read_text()) for j in trials]
        best = min(summaries, key=lambda s: s["best_val_loss"])
        for s in summaries:  # the same FLOPs for every trial, within one step of the budget
            assert s["budget_gflop"] == 1.0 and s["train_flops"] <= 1e9 < s["train_flops"] + s["flops_per_step"]
        for rec in (x for x in recs if x["method"] == method):
            assert rec["lr"] == best["lr"] and rec["best_val_loss"] == best["best_val_loss"] and rec["lr_trials"] == 2
            assert rec["budget_gflop"] == 1.0 and rec["train_flops"] == best["train_flops"]


def test_evaluation_wall_time_is_recorded_beside_training(quick_run):
    """results.json's "evaluation": per DoF the eval job's wall time, its table's, and each row's scoring with the
    frames it scored (every triplet of its records); results.md puts it beside the training seconds."""
    out = quick_run[0]
    doc = json.loads((out / "results.json").read_text())
    assert set(doc["evaluation"]) == {"1", "2", "6"}
    for dof, t in doc["evaluation"].items():
        rows_s = sum(r["seconds"] for r in t["rows"])
        assert 0 < rows_s <= t["seconds"] <= t["job_seconds"] and 0 <= t["table_seconds"] <= t["job_seconds"]
        assert len(t["rows"]) == 5 + 2 * 5  # every row-maker of the run, trained or not
        for r in t["rows"]:
            scored = sum(rec["n_triplets"] for rec in doc["records"] if rec["dof"] == int(dof)
                         and (rec["method"], rec["alpha"], rec["kl"], rec["seed"]) == (r["method"], r["alpha"],
                                                                                     r["kl"], r["seed"]))
            assert r["frames"] == scored > 0 and r["seconds"] > 0
    md = (out / "results.md").read_text()
    assert "| dof | eval job | table | shared | rows | train | eval / train | eval without table / train |" in md
    assert "| 2 | alpha-vae α=100 (avg-gaussian) | 1 |" in md  # a row's own line


def test_plan_jobs_one_by_one_then_aggregate_equal_the_plain_run(quick_run, tmp_path):
    out, cache, args, _ = quick_run
    plan_args = [a for a in args if a != "--quiet"]
    i = plan_args.index("--cache")
    plan_args[i + 1] = str(tmp_path / "cache")  # a fresh cache: every job really runs
    plan_args[plan_args.index("--out") + 1] = str(tmp_path / "agg")
    r = CliRunner().invoke(run_benchmark, [*plan_args, "--plan"])
    assert r.exit_code == 0, r.output
    jobs = [json.loads(line) for line in r.output.strip().splitlines()]
    kinds = [j["kind"] for j in jobs]
    assert kinds == sorted(kinds, key=["render", "train", "eval"].index)  # dependency order
    # Per DoF: mean-frame once, 2 seeds x (frame-cnn, autoencoder, acai, one ensemble of alpha 0 and 100).
    assert len({j["id"] for j in jobs}) == len(jobs) == 3 + 3 * (1 + 2 * 4) + 3
    assert by_id_members(jobs)["train-alpha-vae-ensemble-dof2-s1"] == ["train-alpha-vae-a0-dof2-s1",
                                                                       "train-alpha-vae-a100-avg-gaussian-dof2-s1"]
    # One hash per job, and it names the job's cache entry.
    assert len({j["hash"] for j in jobs}) == len(jobs)
    # Each job's needs come earlier in the plan; an evaluation needs its render and every training of its DoF.
    position = {j["id"]: i for i, j in enumerate(jobs)}
    assert all(position[need] < position[j["id"]] for j in jobs for need in j["needs"])
    by_id = {j["id"]: j for j in jobs}
    assert by_id["render-dof2"]["needs"] == [] and by_id["train-frame-cnn-dof2-s0"]["needs"] == ["render-dof2"]
    assert set(by_id["eval-dof2"]["needs"]) == {"render-dof2"} | {j["id"] for j in jobs
                                                                  if j["kind"] == "train" and j["dof"] == 2}
    # A job run before what it needs says which job to run first.
    r = CliRunner().invoke(run_benchmark, [*plan_args, "--quiet", "--only", "train-frame-cnn-dof2-s0"])
    assert r.exit_code == 2 and "run the job render-dof2 first" in r.output
    # Aggregating before the evaluations names what is missing.
    r = CliRunner().invoke(run_benchmark, [*plan_args, "--aggregate", "--quiet"])
    assert r.exit_code == 2 and "nothing to aggregate" in r.output and "eval-dof1" in r.output
    for job in jobs:
        r = CliRunner().invoke(run_benchmark, [*plan_args, "--quiet", "--only", job["id"]])
        assert r.exit_code == 0, (job, r.output)
        if job["id"] == "eval-dof1":
            partial = CliRunner().invoke(run_benchmark, [*plan_args, "--aggregate", "--quiet", "--overwrite"])
            assert partial.exit_code == 0 and "missing" in partial.output and "eval-dof2" in partial.output
    r = CliRunner().invoke(run_benchmark, [*plan_args, "--aggregate", "--quiet", "--overwrite"])
    assert r.exit_code == 0 and "missing" not in r.output, r.output
    for j in jobs:
        if j["kind"] == "train":  # a trained model's folder; an ensemble's members each have theirs
            folders = ([f"{j['id']}-{j['hash']}"] if "members" not in j else
                       [p.name for p in (tmp_path / "cache" / "models").glob("*") if p.name.rsplit("-", 1)[0] in j["members"]])
            assert len(folders) == len(j.get("members", [0]))
            assert all((tmp_path / "cache" / "models" / f / "summary.json").exists() for f in folders)
    plain = json.loads((out / "results.json").read_text())
    fanned = json.loads((tmp_path / "agg" / "results.json").read_text())

    def untimed(records):  # the training wall time is a measurement, not a result
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in records]

    assert untimed(fanned["records"]) == untimed(plain["records"]) and fanned["ceiling"] == plain["ceiling"]
    r = CliRunner().invoke(run_benchmark, [*plan_args, "--only", "train-nothing"])
    assert r.exit_code == 2 and "no job 'train-nothing'" in r.output


def by_id_members(jobs):
    return {j["id"]: j["members"] for j in jobs if "members" in j}


def test_ensemble_members_equal_models_trained_alone(quick_run, tmp_path):
    """--no-ensemble trains each alpha-VAE alone; its records equal the ensemble's within float rounding."""
    out, _, args, _ = quick_run
    alone = [a for a in args]
    alone[alone.index("--cache") + 1] = str(tmp_path / "cache")
    alone[alone.index("--out") + 1] = str(tmp_path / "alone")
    alone += ["--dof", "1", "--methods", "alpha-vae", "--no-ensemble"]
    r = CliRunner().invoke(run_benchmark, [*alone, "--plan"])
    plan = [json.loads(line) for line in r.output.splitlines()]
    assert not by_id_members(plan) and len([j for j in plan if j["kind"] == "train"]) == 2 * 2
    r = CliRunner().invoke(run_benchmark, alone)
    assert r.exit_code == 0, r.output

    def metrics(path):
        return {(r["split"], r["alpha"], r["gap"], r["tau"], r["well_posed"], r["seed"]): r
                for r in json.loads((path / "results.json").read_text())["records"]
                if r["dof"] == 1 and r["method"] == "alpha-vae"}

    ours, theirs = metrics(out), metrics(tmp_path / "alone")
    assert ours.keys() == theirs.keys() and len(ours) >= 8
    for key, rec in ours.items():
        assert rec["steps"] == theirs[key]["steps"] and rec["selected_step"] == theirs[key]["selected_step"]
        assert rec["mse"] == pytest.approx(theirs[key]["mse"], rel=1e-4), key
        assert rec["ssim"] == pytest.approx(theirs[key]["ssim"], rel=1e-4, abs=1e-5), key
    # A member of an ensemble is not a job of its own while ensembles are on.
    r = CliRunner().invoke(run_benchmark, [*args, "--only", "train-alpha-vae-a0-dof1-s0"])
    assert r.exit_code == 2 and "trains in the ensemble train-alpha-vae-ensemble-dof1-s0" in r.output


def test_auto_dtype_is_measured_once_per_shape_and_recorded(quick_run, tmp_path):
    """--alpha-vae-dtype auto: one measurement per model shape on this machine, cached, written beside every
    model and carried by its records; the --quick profile pins fp32, and methods without the choice record none."""
    out, cache, args, _ = quick_run
    records = json.loads((out / "results.json").read_text())["records"]
    assert {r["dtype"] for r in records if r["method"] == "alpha-vae"} == {"fp32"}
    assert {r["dtype"] for r in records if r["method"] in ("frame-cnn", "pixel-average")} == {None}
    data = next((cache / "data").glob("*dof1*.h5"))
    auto = ["--quick", "--dof", "1", "--data", str(data), "--methods", "alpha-vae", "--alpha", "0", "100",
            "--seeds", "1", "--alpha-vae-dtype", "auto", "--out", str(tmp_path / "out"),
            "--cache", str(tmp_path / "cache"), "--quiet", "--threads", "1"]
    r = CliRunner().invoke(run_benchmark, auto)
    assert r.exit_code == 0, r.output
    measured = list((tmp_path / "cache" / "dtype-choice").glob("*.json"))
    assert len(measured) == 1  # one shape, so one measurement for both members
    choice = json.loads(measured[0].read_text())
    assert choice["dtype"] in ("fp32", "bf16") and choice["fp32_s"] > 0 and choice["reason"]
    beside = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "models").glob("*/dtype_choice.json")]
    assert len(beside) == 3 and {b["key"] for b in beside} == {choice["key"]}  # two members and their ensemble
    records = json.loads((tmp_path / "out" / "results.json").read_text())["records"]
    assert {r["dtype"] for r in records if r["method"] == "alpha-vae"} == {choice["dtype"]}
    assert f"| {choice['dtype']} |" in (tmp_path / "out" / "results.md").read_text()


def test_training_curves_figure_takes_every_learned_log_and_skips_missing_ones(tmp_path):
    from benchmarks.results.report import figure_curves

    vae = tmp_path / "vae.csv"  # the one log format (ibutil.run.TrainRun), with the alpha-VAE's val.csv beside it
    vae.write_text("step,train_loss,train_recon,train_kl,train_d\n10,500.0,480.0,20.0,1.0\n20,400.0,380.0,20.0,1.0\n")
    (tmp_path / "val.csv").write_text("step,val_loss,test_loss\n10,520.0,530.0\n20,450.0,460.0\n")
    cnn = tmp_path / "cnn.csv"
    cnn.write_text("step,train_loss\n50,0.02\n100,0.01\n")
    out = tmp_path / "curves.png"
    figure_curves({"dof1 alpha-vae a=0": str(vae), "dof1 frame-cnn": str(cnn),
                   "dof2 frame-cnn": str(tmp_path / "gone.csv")}, out)
    assert out.stat().st_size > 1000
    figure_curves({"dof1 frame-cnn": str(tmp_path / "gone.csv")}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()  # nothing to draw: no empty figure
