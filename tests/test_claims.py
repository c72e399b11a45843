"""benchmarks.results.claims: cells over seeds, effect sizes and the tables docs/results.md cites, on known records."""

import json
import math

import pytest

from benchmarks.results import claims


def _rec(dof, method, seed, value, alpha=None, kl=None, split="test", gap=2, metric="pose_error_deg"):
    return {"dof": dof, "split": split, "method": method, "alpha": alpha, "kl": kl, "gap": gap, "tau": 0.5,
            "well_posed": True, "seed": seed, metric: value, "mse": value / 1000}


RECORDS = ([_rec(1, "copy-x0", None, 10.0), _rec(1, "pixel-average", None, 6.0)]
           + [_rec(1, "alpha-vae", s, v, alpha=0.0) for s, v in enumerate((30.0, 32.0, 34.0))]
           + [_rec(1, "alpha-vae", s, v, alpha=100.0, kl="avg-gaussian") for s, v in enumerate((20.0, 22.0, 24.0))]
           + [{**_rec(1, "alpha-vae", 0, 99.0, alpha=0.0), "well_posed": False}])  # ambiguous: never counted


def test_cell_is_mean_and_sample_sd_over_seeds_of_well_posed_records():
    c = claims.cell(RECORDS, 1, "test", 2, "alpha-vae α=0", "pose_error_deg")
    assert c.values == (30.0, 32.0, 34.0) and c.mean == 32.0 and c.sd == pytest.approx(2.0)
    assert c.text("pose_error_deg") == "32.00 ± 2.00 (n=3)"
    assert claims.cell(RECORDS, 1, "heldout", 2, "alpha-vae α=0", "pose_error_deg") is None


def test_compare_gives_difference_in_seed_sds_and_welch_p():
    a = claims.cell(RECORDS, 1, "test", 2, "alpha-vae α=100 (avg-gaussian)", "pose_error_deg")
    b = claims.cell(RECORDS, 1, "test", 2, "alpha-vae α=0", "pose_error_deg")
    diff, d, p = claims.compare(a, b)
    assert diff == -10.0 and d == pytest.approx(-5.0)  # both SDs are 2
    assert p == pytest.approx(0.0036, abs=1e-4)  # Welch t = -6.12 on 4 degrees of freedom
    seedless = claims.cell(RECORDS, 1, "test", 2, "copy-x0", "pose_error_deg")
    diff, d, p = claims.compare(a, seedless)  # one-sample against the fixed value 10
    assert diff == 12.0 and d == pytest.approx(12.0 / math.sqrt(2)) and p < 0.01
    assert all(math.isnan(x) for x in claims.compare(seedless, seedless)[1:])


def test_markdown_names_the_claims_and_the_winner(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"records": RECORDS}))
    out = tmp_path / "claims.md"
    claims.main([str(run), "--out", str(out)])
    md = out.read_text()
    assert "## Claim 1, DoF 1: α = 100 against α = 0" in md
    assert "| test | 2 | pose_error_deg | 22.00 ± 2.00 (n=3) | 32.00 ± 2.00 (n=3) | -10.00 | -5.00 | 0.004 |" in md
    # Who wins on pose error: pixel averaging (6) over copy-x0 (10); two seedless rows have no d or p.
    assert "| test | 2 | pose_error_deg | pixel-average: 6.00 | copy-x0: 10.00 | -4.00 | – | – |" in md


def test_missing_folder_is_a_user_error(tmp_path, capsys):
    from ibutil.errors import UserError
    with pytest.raises(UserError, match="does not exist"):
        claims.load([tmp_path / "nope"])
    with pytest.raises(SystemExit) as exit_:  # the command line: one line on stderr, exit code 2, nothing written
        claims.main([str(tmp_path / "nope"), "--out", str(tmp_path / "claims.md")])
    assert exit_.value.code == 2 and not (tmp_path / "claims.md").exists()
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and "Traceback" not in err


def test_two_runs_that_disagree_on_a_cell_are_refused():
    from ibutil.errors import UserError
    other = [{**r, "pose_error_deg": r["pose_error_deg"] + 1} for r in RECORDS]
    assert claims.cell(RECORDS + RECORDS, 1, "test", 2, "copy-x0", "pose_error_deg").values == (10.0,)  # repeats: once
    with pytest.raises(UserError, match="two runs disagree on copy-x0"):
        claims.cell(RECORDS + other, 1, "test", 2, "copy-x0", "pose_error_deg")


def test_alpha_sweep_orders_alphas_and_compares_each_with_alpha_0(tmp_path):
    sweep = RECORDS + [_rec(1, "alpha-vae", s, v, alpha=10.0, kl="avg-gaussian") for s, v in enumerate((31., 33., 35.))]
    md = claims.markdown(sweep, ["run"])
    assert "## α sweep, DoF 1: pose_error_deg" in md
    body = md.split("## α sweep, DoF 1: pose_error_deg")[1]
    rows = [line.split(" |")[0] for line in body.splitlines() if line.startswith("| alpha-vae")][:3]
    assert rows == ["| alpha-vae α=0", "| alpha-vae α=10 (avg-gaussian)", "| alpha-vae α=100 (avg-gaussian)"]
    assert "| alpha-vae α=10 (avg-gaussian) | 33.00 ± 2.00 (n=3) [3.30×] |" in body  # against copy-x0's 10
    assert "| test | 2 | pose_error_deg | 33.00 ± 2.00 (n=3) | 32.00 ± 2.00 (n=3) | 1.00 | 0.50 |" in body
    assert "α sweep" not in claims.markdown(RECORDS, ["run"])  # two alphas are claim 1, not a sweep


def test_by_width_keeps_each_folders_width_apart(tmp_path):
    folders = []
    for width, shift in ((0.125, 0.0), (0.5, 5.0)):
        run = tmp_path / f"w{width}"
        run.mkdir()
        (run / "results.json").write_text(json.dumps({"records": [
            {**r, "pose_error_deg": r["pose_error_deg"] + shift} for r in RECORDS]}))
        (run / "config.json").write_text(json.dumps({"method_configs": {"alpha-vae": {"width": width}}}))
        folders.append(str(run))
    out = tmp_path / "width.md"
    claims.main(["--by-width", *folders, "--out", str(out)])
    md = out.read_text()
    assert "| alpha-vae w=0.125 α=0 | 32.00 ± 2.00 (n=3) |" in md and "| alpha-vae w=0.5 α=0 | 37.00 ± 2.00 (n=3) |" in md
    assert "copy-x0" not in md  # only the alpha-VAE rows
    assert "### DoF 1, alpha-vae w=0.5: α = 100 against α = 0" in md
    assert "| test | 2 | pose_error_deg | 27.00 ± 2.00 (n=3) | 37.00 ± 2.00 (n=3) | -10.00 | -5.00 | 0.004 |" in md
    figure = tmp_path / "width.png"
    claims.main(["--by-width", *folders, "--out", str(out), "--figure", str(figure)])
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # each wider width against the narrowest, per alpha: +5 degrees at equal SDs of 2 is d = 2.5
    assert "### DoF 1, α = 0: w=0.5 against w=0.125" in md and "### DoF 1, α = 100: w=0.5 against w=0.125" in md
    wider = md.split("### DoF 1, α = 0: w=0.5 against w=0.125")[1]
    assert "| test | 2 | pose_error_deg | 37.00 ± 2.00 (n=3) | 32.00 ± 2.00 (n=3) | 5.00 | 2.50 |" in wider


def _write_triplets(folder, rows):
    """A triplets.csv.gz as report.write_triplets writes it, from (method, alpha, kl, seed, t, well_posed, pose)."""
    from benchmarks.results.report import write_triplets
    import numpy as np
    write_triplets([{"dof": 1, "split": "test", "gap": 2, "method": m, "alpha": a, "kl": kl, "seed": seed,
                     "s": np.zeros(len(ts), int), "t": np.array(ts), "well_posed": np.array(wp),
                     "pose_error_deg": np.array(v, float)} for m, a, kl, seed, ts, wp, v in rows],
                   folder / "triplets.csv.gz")


def test_paired_test_over_triplets_averages_seeds_and_skips_ambiguous_targets(tmp_path):
    a100, a0 = ("alpha-vae", 100.0, "avg-gaussian"), ("alpha-vae", 0.0, None)
    _write_triplets(tmp_path, [
        (*a0, 0, [1, 2, 3, 4, 5], [1, 1, 1, 1, 0], [10, 10, 10, 10, 0]),
        (*a100, 0, [1, 2, 3, 4, 5], [1, 1, 1, 1, 0], [10, 11, 12, 13, 99]),  # t=5 is ambiguous: never paired
        (*a100, 1, [1, 2, 3, 4, 5], [1, 1, 1, 1, 0], [12, 13, 14, 15, 99]),  # seed mean: 11, 12, 13, 14
    ])
    trip = claims.load_triplets([tmp_path, tmp_path / "no-triplets-here"])
    assert trip[(1, "test", 2, "alpha-vae α=100 (avg-gaussian)", "pose_error_deg")] == \
        {(0, 1): 11.0, (0, 2): 12.0, (0, 3): 13.0, (0, 4): 14.0}
    n, d_z, p = claims.paired(trip, 1, "test", 2, "alpha-vae α=100 (avg-gaussian)", "alpha-vae α=0", "pose_error_deg")
    # differences 1, 2, 3, 4: mean 2.5 over SD 1.291; all four of one sign is the exact two-sided p 2/16
    assert n == 4 and d_z == pytest.approx(2.5 / math.sqrt(5 / 3)) and p == pytest.approx(0.125)
    assert claims.paired(trip, 1, "test", 5, "alpha-vae α=100 (avg-gaussian)", "alpha-vae α=0", "pose_error_deg") is None


def test_pair_tables_gain_the_paired_columns_only_where_triplets_exist(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"records": RECORDS}))
    _write_triplets(tmp_path, [(*("alpha-vae", 0.0, None), 0, [1, 2, 3], [1, 1, 1], [30, 31, 32]),
                               (*("alpha-vae", 100.0, "avg-gaussian"), 0, [1, 2, 3], [1, 1, 1], [20, 20, 20])])
    out = tmp_path / "claims.md"
    claims.main([str(tmp_path), "--out", str(out)])
    md = out.read_text()
    # d_z = mean(-10, -11, -12) / SD 1 = -11; three same-sign differences: exact p = 2/8
    assert "| test | 2 | pose_error_deg | 22.00 ± 2.00 (n=3) | 32.00 ± 2.00 (n=3) | -10.00 | -5.00 | 0.004 | 3 | " \
           "-11.00 | 0.250 |" in md
    assert "| test | 2 | mse | 0.02200 ± 0.00200 (n=3) | 0.03200 ± 0.00200 (n=3) | -0.01000 | -5.00 | 0.004 | – | – | – |" \
        in md
    assert "triplets | d_z" not in claims.markdown(RECORDS, ["run"])


def test_welch_by_hand():
    # a = 1..5 (mean 3, var 2.5), b = 2, 4, .., 10 (mean 6, var 10): se^2 = 2.5/5 + 10/5 = 2.5,
    # t = -3 / sqrt(2.5) = -1.897, df = 2.5^2 / (0.5^2/4 + 2^2/4) = 100/17, pooled SD sqrt((4*2.5 + 4*10)/8) = 2.5
    e = claims.welch([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert (e.n_a, e.n_b, e.mean_a, e.mean_b, e.diff) == (5, 5, 3.0, 6.0, -3.0)
    assert e.df == pytest.approx(100 / 17) and e.d == pytest.approx(-1.2)
    assert e.p == pytest.approx(0.10753, abs=1e-5)  # two-sided t of -1.897 on 5.88 df
    half = 3.8877416  # t(0.975, 100/17) * sqrt(2.5)
    assert (e.low, e.high) == (pytest.approx(-3 - half), pytest.approx(-3 + half))


def test_paired_t_by_hand():
    # per-seed differences 1, 2, 1, 2, 1: mean 1.4, SD sqrt(0.3), t = 1.4 / (sqrt(0.3)/sqrt(5)) = 5.715 on 4 df
    e = claims.paired_t([5, 6, 7, 8, 9], [4, 4, 6, 6, 8])
    assert e.diff == pytest.approx(1.4) and e.df == 4.0 and e.p == pytest.approx(0.004636, abs=1e-6)
    assert e.high - e.diff == pytest.approx(2.7764451 * math.sqrt(0.3 / 5))  # t(0.975, 4) = 2.776
    assert e.d == pytest.approx(1.4 / math.sqrt((2.5 + 2.8) / 2))  # pooled SD of the two arms (variances 2.5, 2.8)


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert claims.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert claims.holm([0.5, math.nan]) == [1.0, 1.0]  # capped at 1; a missing p counts as 1


def test_verdict_needs_the_adjusted_p_and_the_interval():
    e = claims.welch([1, 2, 3, 4, 5], [11, 12, 13, 14, 15])
    assert claims.verdict(e, 0.01, "α=100", "α=0") == "α=100 < α=0"
    assert claims.verdict(e, 0.06, "α=100", "α=0") == "no difference shown"  # Holm took it over 0.05
    assert claims.verdict(claims.welch([1, 2, 3, 4, 5], [1, 2, 3, 4, 6]), 0.01, "a", "b") == "no difference shown"


def _primary_root(tmp_path, seeds=claims.PRIMARY_SEEDS, dtype="fp32"):
    """A results root with every declared stage folder: alpha = 100 at 2 + seed/10 and alpha = 0 at 4 + seed/10 on
    every claim-1 cell, copy-x0 at 20 (dof 1) and 50 (dof 2), dof 6 test 3 or 3.5 px above train."""
    recs: dict[str, list[dict]] = {}
    for e in claims.PRIMARY + claims.SECONDARY:
        for arm, base in ((e.a, None), (e.b, None)):
            for seed in seeds:
                value = {claims.ALPHA0: 4.0, claims.ALPHA100: 2.0, claims.ALPHA100_MIXTURE: 3.0,
                         "autoencoder": 5.0}[arm.label] + seed / 10
                if arm.dof == 6 and arm.split != "train":  # test and heldout 3 or 3.5 px above train
                    value += 3.0 + (seed % 2) / 2
                method, alpha, kl = (("autoencoder", None, None) if arm.label == "autoencoder" else
                                     ("alpha-vae", 0.0 if arm.label == claims.ALPHA0 else 100.0,
                                      None if arm.label == claims.ALPHA0 else arm.label.split("(")[1][:-1]))
                recs.setdefault(arm.stage, []).append(_rec(arm.dof, method, seed, value, alpha, kl, arm.split, 20,
                                                           e.metric))
            if arm.dof == 6:  # the hedge claim 3's reading compares the train cell with
                recs[arm.stage].append(_rec(6, "mean-frame", None, 32.0, split=arm.split, gap=20, metric=e.metric))
            if arm.relative_to:
                recs[arm.stage].append(_rec(arm.dof, "copy-x0", None, 20.0 if arm.dof == 1 else 50.0, split=arm.split,
                                            gap=20))
    for stage, rs in recs.items():
        (tmp_path / stage).mkdir(exist_ok=True)
        (tmp_path / stage / "results.json").write_text(json.dumps({"records": rs}))
        (tmp_path / stage / "config.json").write_text(json.dumps({"method_configs": {"alpha-vae": {"dtype": dtype}}}))
    return tmp_path


def test_primary_table_from_the_declared_stages(tmp_path):
    root = _primary_root(tmp_path)
    out = tmp_path / "primary.md"
    claims.main(["--primary", str(root), "--out", str(out)])
    md = out.read_text()
    # alpha = 100 - alpha = 0 is -2 on every claim-1 cell with equal spreads: d = -2 / SD(10..14 / 10) = -12.6
    assert "| 1 | DoF 1, paper protocol, test | α=100 | α=0 | 5, 5 | 3.20 | 5.20 | -2.00 [" in md
    assert "α=100 < α=0 |" in md and md.count("| -12.65 |") >= 4
    # claim 2: alpha = 100 as multiples of copy-x0, (2 + s/10)/50 against (2 + s/10)/20
    assert "| 2 | α=100, test, pose error as a multiple of copy-x0's | DoF 2 | DoF 1 | 5, 5 | 0.06 | 0.16 | -0.10 [" \
        in md
    # claim 3: paired over seeds, differences 3, 3.5, 3, 3.5, 3 px (seeds 10-14): mean 3.20, 4 df
    assert "| 3 | DoF 6, α=100, position error test − train | test | train | 5, 5 | 6.40 | 3.20 | 3.20 [" in md
    line = next(x for x in md.splitlines() if x.startswith("| 3 | DoF 6, α=100"))
    assert "| 4.0 |" in line and line.endswith("| test > train |")
    assert "## Secondary (declared; unadjusted p, no verdict)" in md and "C: mixture, DoF 1, held-out poses" in md
    # run C: the mixture (3 + s/10) is 1 below alpha = 0 on every claim-1 cell of A, so the support stands either way
    assert "| DoF 1, paper protocol, test | α=100 < α=0 | -1.00 [" in md
    assert md.count("| does not depend on the reading |") == 3


def test_claim_3_reading_compares_the_train_cell_with_the_mean_frame_hedge(tmp_path):
    md = claims.primary_markdown(_primary_root(tmp_path))
    # alpha = 100 on train: 3.0..3.4, mean 3.2, far below mean-frame's 32 px
    assert "| alpha-vae α=100 (avg-gaussian) | 3.20 [" in md and "| 32.00 | places objects on training scenes |" in md
    assert claims.floor_reading(32.5, 32.0) == "not below the mean-frame hedge: a reconstruction failure on every split"
    mean, low, high = claims.mean_interval([1, 2, 3, 4, 5])  # SD 1.581, t(0.975, 4) = 2.776
    assert mean == 3.0 and high - mean == pytest.approx(2.7764451 * math.sqrt(2.5 / 5))


def test_mixture_reading_follows_the_declared_rule():
    below, across = claims.welch([1, 2, 3, 4, 5], [11, 12, 13, 14, 15]), claims.welch([1, 2, 3, 4, 5], [1, 2, 3, 4, 6])
    assert claims.mixture_reading(True, below) == "does not depend on the reading"
    assert claims.mixture_reading(True, across) == "holds for the avg-gaussian reading only"
    assert claims.mixture_reading(False, below) == "primary not supported: nothing to qualify"


@pytest.mark.parametrize("seeds, dtype, message", [
    (claims.PRIMARY_SEEDS[:4], "fp32", "has 4 seeds, fewer than 5"),
    ((0, 1, 2, 3, 4), "fp32", "the protocol declares new seeds 10-14 only"),
    (claims.PRIMARY_SEEDS, "bf16", "trained the alpha-VAE in bf16"),
])
def test_primary_refuses_cells_the_protocol_does_not_allow(tmp_path, capsys, seeds, dtype, message):
    root = _primary_root(tmp_path, seeds, dtype)
    with pytest.raises(SystemExit) as exit_:
        claims.main(["--primary", str(root), "--out", str(tmp_path / "primary.md")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "primary.md").exists()  # no table, so no verdict


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
CLAIMS_FILES = sorted((ROOT / "docs" / "results").glob("claims*.md"))


@pytest.mark.parametrize("committed", CLAIMS_FILES, ids=lambda p: p.name)
def test_each_committed_claims_file_regenerates_byte_identically_from_its_own_header(committed, tmp_path, monkeypatch):
    """docs/results.md cites these files: the command in each one's header must still write it, byte for byte."""
    import re
    import shlex

    header = committed.read_text().splitlines()[2]
    command = re.match(r"Written by `python -m benchmarks\.results\.claims ([^`]*)`", header)
    assert command, f"{committed.name}: line 3 does not name its command"
    monkeypatch.chdir(ROOT)  # the header's folders are relative to the repository root
    out = tmp_path / committed.name
    claims.main([*shlex.split(command.group(1)), "--out", str(out)])
    assert out.read_bytes() == committed.read_bytes()
