"""benchmarks.claims: cells over seeds, effect sizes and the tables docs/results.md cites, on known records."""

import json
import math

import pytest

from benchmarks import claims


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
    from benchmarks.report import write_triplets
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
