"""benchmarks.results.claims: cells over seeds, effect sizes and the tables docs/results.md cites, on known records."""

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmarks.results import claims, stats
from benchmarks.results.claims import ALPHA0, ALPHA100, COPY_X0


def _rec(dof, method, seed, value, alpha=None, kl=None, split="test", gap=2, metric="pose_error_deg"):
    return {"dof": dof, "split": split, "method": method, "alpha": alpha, "kl": kl, "gap": gap, "tau": 0.5,
            "well_posed": True, "seed": seed, metric: value, "mse": value / 1000}


RECORDS = ([_rec(1, "copy-x0", None, 10.0), _rec(1, "pixel-average", None, 6.0)]
           + [_rec(1, "alpha-vae", s, v, alpha=0.0) for s, v in enumerate((30.0, 32.0, 34.0))]
           + [_rec(1, "alpha-vae", s, v, alpha=100.0, kl="avg-gaussian") for s, v in enumerate((20.0, 22.0, 24.0))]
           + [{**_rec(1, "alpha-vae", 0, 99.0, alpha=0.0), "well_posed": False}])  # ambiguous: never counted


ROOT = Path(__file__).resolve().parents[1]


def invoke(*args):
    """`python -m benchmarks.results.claims ARGS`, through click."""
    return CliRunner().invoke(claims.main, [str(a) for a in args])


def test_markdown_names_the_claims_and_the_winner(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"records": RECORDS}))
    out = tmp_path / "claims.md"
    assert invoke(run, "--out", out).exit_code == 0
    md = out.read_text()
    assert "## Claim 1, DoF 1: α = 100 against α = 0" in md
    assert "| test | 2 | pose_error_deg | 22.00 ± 2.00 (n=3) | 32.00 ± 2.00 (n=3) | -10.00 | -5.00 | 0.004 |" in md
    # Who wins on pose error: pixel averaging (6) over copy-x0 (10); two seedless rows have no d or p.
    assert "| test | 2 | pose_error_deg | pixel-average: 6.00 | copy-x0: 10.00 | -4.00 | – | – |" in md


def test_missing_folder_is_a_user_error(tmp_path):
    from ibutil.errors import UserError
    with pytest.raises(UserError, match="does not exist"):
        claims.load([tmp_path / "nope"])
    r = invoke(tmp_path / "nope", "--out", tmp_path / "claims.md")  # one line on stderr, exit code 2, nothing written
    assert r.exit_code == 2 and not (tmp_path / "claims.md").exists()
    assert r.stderr.startswith("error: ") and "does not exist" in r.stderr and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    for args, message in (([tmp_path, "--figure", tmp_path / "w.png"], "pass it with --by-width"),
                          (["--primary", tmp_path, tmp_path], "--primary reads one results root")):
        r = invoke(*args)
        assert r.exit_code == 2 and r.output.strip() == r.stderr.strip() and message in r.stderr, r.output
        assert len(r.output.strip().splitlines()) == 1


def test_the_module_runs_as_the_claims_headers_say(tmp_path):
    """`python -m benchmarks.results.claims`, the command each claims file names in its header."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "benchmarks.results.claims", str(tmp_path / "nope")], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.startswith("error: ") and "does not exist" in r.stderr


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
    assert invoke("--by-width", *folders, "--out", out).exit_code == 0
    md = out.read_text()
    assert "| alpha-vae w=0.125 α=0 | 32.00 ± 2.00 (n=3) |" in md and "| alpha-vae w=0.5 α=0 | 37.00 ± 2.00 (n=3) |" in md
    assert "copy-x0" not in md  # only the alpha-VAE rows
    assert "### DoF 1, alpha-vae w=0.5: α = 100 against α = 0" in md
    assert "| test | 2 | pose_error_deg | 27.00 ± 2.00 (n=3) | 37.00 ± 2.00 (n=3) | -10.00 | -5.00 | 0.004 |" in md
    figure = tmp_path / "width.png"
    assert invoke("--by-width", *folders, "--out", out, "--figure", figure).exit_code == 0
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
    assert trip[(1, "test", 2, ALPHA100, "pose_error_deg")] == \
        {(0, 1): 11.0, (0, 2): 12.0, (0, 3): 13.0, (0, 4): 14.0}
    n, d_z, p = claims.paired(trip, 1, "test", 2, ALPHA100, ALPHA0, "pose_error_deg")
    # differences 1, 2, 3, 4: mean 2.5 over SD 1.291; all four of one sign is the exact two-sided p 2/16
    assert n == 4 and d_z == pytest.approx(2.5 / math.sqrt(5 / 3)) and p == pytest.approx(0.125)
    assert claims.paired(trip, 1, "test", 5, ALPHA100, ALPHA0, "pose_error_deg") is None


def test_pair_tables_gain_the_paired_columns_only_where_triplets_exist(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"records": RECORDS}))
    _write_triplets(tmp_path, [(*("alpha-vae", 0.0, None), 0, [1, 2, 3], [1, 1, 1], [30, 31, 32]),
                               (*("alpha-vae", 100.0, "avg-gaussian"), 0, [1, 2, 3], [1, 1, 1], [20, 20, 20])])
    out = tmp_path / "claims.md"
    assert invoke(tmp_path, "--out", out).exit_code == 0
    md = out.read_text()
    # d_z = mean(-10, -11, -12) / SD 1 = -11; three same-sign differences: exact p = 2/8
    assert "| test | 2 | pose_error_deg | 22.00 ± 2.00 (n=3) | 32.00 ± 2.00 (n=3) | -10.00 | -5.00 | 0.004 | 3 | " \
           "-11.00 | 0.250 |" in md
    assert "| test | 2 | mse | 0.02200 ± 0.00200 (n=3) | 0.03200 ± 0.00200 (n=3) | -0.01000 | -5.00 | 0.004 | – | – | – |" \
        in md
    assert "triplets | d_z" not in claims.markdown(RECORDS, ["run"])


def test_verdict_needs_the_adjusted_p_and_the_interval():
    e = stats.welch([1, 2, 3, 4, 5], [11, 12, 13, 14, 15])
    assert claims.verdict(e, 0.01, "α=100", "α=0") == "α=100 < α=0"
    assert claims.verdict(e, 0.06, "α=100", "α=0") == "no difference shown"  # Holm took it over 0.05
    assert claims.verdict(stats.welch([1, 2, 3, 4, 5], [1, 2, 3, 4, 6]), 0.01, "a", "b") == "no difference shown"


def _primary_root(tmp_path, seeds=claims.PRIMARY_SEEDS, dtype="fp32"):
    """A results root with every declared stage folder: alpha = 100 at 2 + seed/10 and alpha = 0 at 4 + seed/10 on
    every claim-1 cell, copy-x0 at 20 (dof 1) and 50 (dof 2), dof 6 test 3 or 3.5 px above train."""
    recs: dict[str, list[dict]] = {}
    for e in claims.PRIMARY + claims.SECONDARY:
        for arm, base in ((e.a, None), (e.b, None)):
            for seed in seeds:
                value = {ALPHA0: 4.0, ALPHA100: 2.0, claims.ALPHA100_MIXTURE: 3.0,
                         claims.AUTOENCODER: 5.0}[arm.row] + seed / 10
                if arm.dof == 6 and arm.split != "train":  # test and heldout 3 or 3.5 px above train
                    value += 3.0 + (seed % 2) / 2
                method, alpha, kl = arm.row.method, arm.row.alpha, arm.row.kl
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
    assert invoke("--primary", root, "--out", out).exit_code == 0
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
    mean, low, high = stats.mean_interval([1, 2, 3, 4, 5])  # SD 1.581, t(0.975, 4) = 2.776
    assert mean == 3.0 and high - mean == pytest.approx(2.7764451 * math.sqrt(2.5 / 5))


def test_mixture_reading_follows_the_declared_rule():
    below, across = stats.welch([1, 2, 3, 4, 5], [11, 12, 13, 14, 15]), stats.welch([1, 2, 3, 4, 5], [1, 2, 3, 4, 6])
    assert claims.mixture_reading(True, below) == "does not depend on the reading"
    assert claims.mixture_reading(True, across) == "holds for the avg-gaussian reading only"
    assert claims.mixture_reading(False, below) == "primary not supported: nothing to qualify"


@pytest.mark.parametrize("seeds, dtype, message", [
    (claims.PRIMARY_SEEDS[:4], "fp32", "has 4 seeds, fewer than 5"),
    ((0, 1, 2, 3, 4), "fp32", "the protocol declares new seeds 10-14 only"),
    (claims.PRIMARY_SEEDS, "bf16", "trained the alpha-VAE in bf16"),
])
def test_primary_refuses_cells_the_protocol_does_not_allow(tmp_path, seeds, dtype, message):
    root = _primary_root(tmp_path, seeds, dtype)
    r = invoke("--primary", root, "--out", tmp_path / "primary.md")
    assert r.exit_code == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "primary.md").exists()  # no table, so no verdict


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
    r = invoke(*shlex.split(command.group(1)), "--out", out)
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == committed.read_bytes()
