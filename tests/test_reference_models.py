"""Reference models: a quick-trained model shipped with benchmarks.tools.ship_reference and scored by run-benchmark
--reference-models as a reference row (benchmarks.engine.reference_models), its bad and foreign folders."""

import csv
import gzip
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from benchmarks.cli import run_benchmark
from benchmarks.engine import reference_models
from benchmarks.engine.config import REFERENCE_MODELS, profile_config, quick_config, render_config
from benchmarks.tools.ship_reference import ship_reference
from ibdata import h5format

# One DoF, the alpha-VAE alone: the smallest run that trains a latent model (about 20 s on 2 loaded cores).
RUN = ["--quick", "--dof", "1", "--methods", "alpha-vae", "--quiet", "--threads", "1"]
NAME = "alpha-vae-a100-avg-gaussian-dof1-s0"
MARK = "alpha-vae α=100 (avg-gaussian) [ref model trained s0]"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A quick run (alpha 0 and 100) in a tmp cache, its RUN.md as the committed runs have one, and its alpha = 100
    model shipped into a reference-models folder by the tool."""
    root = tmp_path_factory.mktemp("refmodels")
    cache, trained, ref = root / "cache", root / "trained", root / "models"
    r = CliRunner().invoke(run_benchmark, [*RUN, "--alpha", "0", "100", "--cache", str(cache), "--out", str(trained)])
    assert r.exit_code == 0, r.output
    (trained / "RUN.md").write_text("# trained\n\nMade by `bash x.sh` at commit abc1234 on 2026-12-06:\n\n"
                                    "    run-benchmark --quick --dof 1 --methods alpha-vae --alpha 0 100\n")
    r = CliRunner().invoke(ship_reference, ["--run-cache", str(cache), "--results", str(trained), "--alpha", "100",
                                            "--dof", "1", "--seed", "0", "--out", str(ref)])
    assert r.exit_code == 0, r.output
    assert f"shipped alpha-vae a=100 avg-gaussian (dof 1, seed 0" in r.output
    return root, cache, trained, ref


def test_the_tool_ships_the_scored_model_with_its_manifest(shipped):
    root, cache, trained, ref = shipped
    folder = ref / NAME
    manifest = json.loads((folder / "model.json").read_text())
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "model.json", "summary.json"]
    assert manifest["files"] == {n: h5format.sha256_file(folder / n) for n in ("summary.json", "best.pt")}
    source = cache / "models" / manifest["cache_folder"]
    assert (folder / "best.pt").read_bytes() == (source / "best.pt").read_bytes()
    assert (manifest["method"], manifest["dof"], manifest["seed"], manifest["record"]) == \
        ("alpha-vae", 1, 0, {"alpha": 100.0, "kl": "avg-gaussian"})
    assert manifest["config"]["alphas"] == [100.0] and manifest["config"]["width"] == 0.05  # the quick architecture
    assert (manifest["command"], manifest["commit"]) == \
        ("run-benchmark --quick --dof 1 --methods alpha-vae --alpha 0 100", "abc1234")  # from RUN.md
    results = json.loads((trained / "results.json").read_text())
    assert manifest["dataset"]["sha256"] == results["datasets"]["1"]["sha256"]
    ident = manifest["dataset"]["identity"]
    assert (ident["dof"], ident["size"], ident["seed"], ident["frames"], ident["protocol"], ident["object"],
            ident["supersample"]) == (1, 16, 0, 24, "heldout", "teapot", 3)
    assert "train_sequences" not in ident
    record = next(r for r in results["records"] if r["alpha"] == 100.0)
    assert (manifest["selected_step"], manifest["steps"], manifest["best_val_loss"]) == \
        (record["selected_step"], record["steps"], record["best_val_loss"])
    again = CliRunner().invoke(ship_reference, ["--run-cache", str(cache), "--results", str(trained), "--alpha", "100",
                                                "--dof", "1", "--seed", "0", "--out", str(ref)])
    assert again.exit_code == 2 and "already exists" in again.output
    wrong = CliRunner().invoke(ship_reference, ["--run-cache", str(cache), "--results", str(trained), "--alpha", "10",
                                                "--dof", "1", "--seed", "0", "--out", str(root / "x")])
    assert wrong.exit_code == 2 and "no trained row" in wrong.output and "alpha-vae a=100 avg-gaussian seed 0" in wrong.output
    assert not (root / "x").exists()


def test_a_shipped_model_scores_as_a_reference_row_equal_to_the_same_model_trained_here(shipped):
    """Scored through --reference-models, the shipped model's records equal those of the run's own row of the same
    cached model (the same load, predict and scoring); it is in every table, the figures and triplets.csv.gz."""
    root, cache, trained, ref = shipped
    out = root / "scored"
    r = CliRunner().invoke(run_benchmark, [*RUN, "--alpha", "100", "--cache", str(cache), "--out", str(out),
                                           "--reference-models", str(ref)])
    assert r.exit_code == 0, r.output
    assert "not scored" not in r.output
    doc = json.loads((out / "results.json").read_text())
    mine = [rec for rec in doc["records"] if rec["reference"] is None]
    theirs = [rec for rec in doc["records"] if rec["reference"] == "model trained s0"]
    assert len(theirs) == len(mine) > 4

    def key(rec):
        return rec["split"], rec["gap"], rec["tau"], rec["well_posed"]

    by_key = {key(rec): rec for rec in mine}
    for rec in theirs:
        same = by_key[key(rec)]
        for metric in ("mse", "ssim", "psnr", "pose_error_deg", "nn_distance", "sharpness", "selected_step", "params"):
            assert rec[metric] == same[metric], metric
        assert (rec["method"], rec["alpha"], rec["kl"], rec["seed"]) == ("alpha-vae", 100.0, "avg-gaussian", 0)
    assert [m["name"] for m in doc["reference_models"]] == [NAME]
    md = (out / "results.md").read_text()
    assert md.count(f"| {MARK} |") >= 8  # every headline table, and the compute table
    assert "run-benchmark --quick --dof 1 --methods alpha-vae --alpha 0 100" in md
    assert "[ref model trained s0]" in r.output  # the terminal summary
    with gzip.open(out / "triplets.csv.gz", "rt", newline="") as fh:
        lines = list(csv.DictReader(fh))
    assert {x["reference"] for x in lines} == {"", "model trained s0"}
    examples = [torch.load(p, weights_only=False)["examples"] for p in (cache / "evals").glob("eval-dof1-*.pt")]
    assert any("alpha-vae a=100 avg-gaussian [ref model trained s0]" in ex for ex in examples)  # the figure's rows
    # A reference run's own reference-model rows are not its rows: --reference shows its trained row only.
    again = CliRunner().invoke(run_benchmark, [*RUN, "--alpha", "100", "--cache", str(cache), "--out",
                                               str(root / "vs"), "--reference", str(out)])
    assert again.exit_code == 0, again.output
    md = (root / "vs" / "results.md").read_text()
    assert "| alpha-vae α=100 (avg-gaussian) [ref scored] |" in md and "[ref model" not in md


def test_the_eval_job_hash_holds_the_shipped_files(shipped, tmp_path):
    root, cache, _, ref = shipped
    config = quick_config(dofs=(1,), methods=("alpha-vae",), cache=str(cache), progress=False)

    def eval_hash(**extra):
        from benchmarks.engine.plan import plan
        return next(j.hash for j in plan(replace(config, **extra) if extra else config) if j.kind == "eval")

    other = tmp_path / "models"
    shutil.copytree(ref, other)
    manifest = json.loads((other / NAME / "model.json").read_text())
    manifest["files"]["best.pt"] = "0" * 64  # other weights
    (other / NAME / "model.json").write_text(json.dumps(manifest))
    hashes = {eval_hash(), eval_hash(reference_models=str(ref)), eval_hash(reference_models=str(other))}
    assert len(hashes) == 3


def test_a_tampered_file_exits_2_with_one_line_and_no_output(shipped, tmp_path):
    root, cache, _, ref = shipped
    bad = tmp_path / "models"
    shutil.copytree(ref, bad)
    weights = bytearray((bad / NAME / "best.pt").read_bytes())
    weights[-100] ^= 1
    (bad / NAME / "best.pt").write_bytes(bytes(weights))
    out = tmp_path / "out"
    r = CliRunner().invoke(run_benchmark, [*RUN, "--alpha", "100", "--cache", str(cache), "--out", str(out),
                                           "--reference-models", str(bad)])
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and r.output.startswith(f"error: reference model {NAME}: ")
    assert "sha256" in r.output and not out.exists()
    (bad / NAME / "best.pt").unlink()
    r = CliRunner().invoke(run_benchmark, [*RUN, "--cache", str(cache), "--out", str(out), "--reference-models", str(bad)])
    assert r.exit_code == 2 and "is missing" in r.output and not out.exists()


def test_models_of_another_dof_or_dataset_are_skipped_with_the_reason(shipped, tmp_path):
    root, cache, _, ref = shipped
    models = tmp_path / "models"
    for name, change in (("other-seed", {"seed": 1}), ("other-dof", None)):
        shutil.copytree(ref / NAME, models / name)
        manifest = json.loads((models / name / "model.json").read_text())
        manifest["name"] = name
        if change:
            manifest["dataset"]["identity"] |= change
        else:
            manifest["dof"] = 2
        (models / name / "model.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    r = CliRunner().invoke(run_benchmark, [*RUN, "--alpha", "100", "--cache", str(cache), "--out", str(out),
                                           "--reference-models", str(models)])
    assert r.exit_code == 0, r.output
    assert ("reference model other-seed (alpha-vae, dof 1) not scored: its training data had another render "
            "identity: seed 1 (here 0)") in r.output
    assert "reference model other-dof (alpha-vae, dof 2) not scored: this run scores dof 1" in r.output
    doc = json.loads((out / "results.json").read_text())
    assert not any(rec["reference"] for rec in doc["records"]) and doc["reference_models"] == []
    assert "other-seed (alpha-vae, dof 1) not scored" in (out / "results.md").read_text()


def test_the_render_identity_ignores_sequence_counts_and_lengths_only():
    """The demo's dof 2 set (100 train sequences of 30 frames) has the identity of the preset's (200 of 50, the
    committed runs'); a seed, size or protocol of its own does not, nor dof 1's turn step."""
    demo, full = profile_config("demo"), profile_config("full")
    small, preset = render_config(demo, 2), render_config(full, 2)
    assert (small.frames, small.train_sequences) != (preset.frames, preset.train_sequences)
    ident = reference_models.render_identity
    assert ident(small) == ident(preset)
    assert reference_models.difference(ident(replace(preset, seed=3)), ident(small)) == "seed 3 (here 0)"
    assert "size 64 (here 32)" in reference_models.difference(ident(replace(preset, size=64)), ident(small))
    assert reference_models.difference(ident(replace(preset, protocol="paper", heldout_sequences=0)), ident(small)) \
        == "protocol paper (here heldout)"
    turn = render_config(demo, 1)
    assert reference_models.difference(ident(replace(turn, frames=720)), ident(turn)) == "frames 720 (here 360)"


def test_the_scored_sequences_are_never_training_sequences_of_a_model_of_the_same_identity():
    """Known answer behind the identity rule: every sequence is drawn from (seed, split, index) alone, so the demo's
    10 test sequences of 30 frames are the first 30 frames of the preset's test sequences, and none of them starts
    where any of the preset's 200 training sequences (the committed models' data) starts."""
    from render.presets import sequence_factors
    small, preset = render_config(profile_config("demo"), 2), render_config(profile_config("full"), 2)
    train_starts = {tuple(sequence_factors(preset, "train", j)[0]) for j in range(preset.train_sequences)}
    for split in ("test", "heldout"):
        for i in range(small.test_sequences):
            mine = sequence_factors(small, split, i)
            if split == "test":  # taken as drawn: a prefix of the longer sequence
                np.testing.assert_array_equal(mine, sequence_factors(preset, split, i)[:small.frames])
            assert not any(tuple(row) in train_starts for row in mine)


def test_the_demo_scores_the_repositorys_models_and_an_empty_option_turns_them_off():
    assert profile_config("demo").reference_models == (str(REFERENCE_MODELS) if REFERENCE_MODELS.is_dir() else None)
    assert profile_config("full").reference_models is None
    assert profile_config("demo", reference_models="").reference_models is None
    r = CliRunner().invoke(run_benchmark, ["--quick", "--reference-models", "/nonexistent/models", "--plan"])
    assert r.exit_code == 2 and "--reference-models /nonexistent/models is not a folder" in r.output
