"""--score-train through CliRunner on the --quick profile: train records for the diagnostic, never a headline;
and the colour-blind placement column wherever the position error is."""

from __future__ import annotations

import csv
import gzip
import json

import pytest
from click.testing import CliRunner

from benchmarks.cli import run_benchmark


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("score-train")
    base = ["--quick", "--dof", "6", "--methods", "copy-x0", "pixel-average", "--cache", str(root / "cache"),
            "--quiet", "--threads", "1"]
    out = {}
    for name, extra in (("with", ["--score-train"]), ("without", [])):
        result = CliRunner().invoke(run_benchmark, [*base, *extra, "--out", str(root / name)])
        assert result.exit_code == 0, result.output
        out[name] = root / name
    return out


def test_train_split_is_scored_only_on_request(runs):
    with_train = json.loads((runs["with"] / "results.json").read_text())
    without = json.loads((runs["without"] / "results.json").read_text())
    assert {r["split"] for r in with_train["records"]} == {"test", "heldout", "train"}
    assert {r["split"] for r in without["records"]} == {"test", "heldout"}
    assert json.loads((runs["with"] / "config.json").read_text())["score_train"] is True
    # The other splits are scored exactly as without the option.
    key = ("split", "method", "gap", "tau", "well_posed")
    same = {tuple(r[k] for k in key): r["mse"] for r in without["records"]}
    assert {tuple(r[k] for k in key): r["mse"] for r in with_train["records"] if r["split"] != "train"} == same
    train = [r for r in with_train["records"] if r["split"] == "train" and r["method"] == "copy-x0"]
    assert train and all(r["mse"] > 0 and r["placement_error_px"] > 0 for r in train)


def test_train_split_is_a_labelled_diagnostic_not_a_headline(runs):
    md = (runs["with"] / "results.md").read_text()
    head, _, diagnostic = md.partition("### Diagnostic: the train split (not a headline)")
    assert diagnostic and "train k=1" not in head and "train k=1" in diagnostic
    assert "placement error px" in diagnostic
    assert "Diagnostic" not in (runs["without"] / "results.md").read_text()


def test_placement_column_in_csv_triplets_and_tables(runs):
    out = runs["with"]
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert all(float(r["placement_error_px"]) >= 0 for r in rows if r["method"] == "copy-x0")
    with gzip.open(out / "triplets.csv.gz", "rt", newline="") as fh:
        lines = list(csv.DictReader(fh))
    assert lines and all(x["placement_error_px"] != "" for x in lines if x["method"] == "copy-x0")
    md = (out / "results.md").read_text().partition("### Diagnostic")[0]
    assert "#### placement error px" in md and "#### position error px" in md
