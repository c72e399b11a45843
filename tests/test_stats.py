"""benchmarks.results.stats: the row a record belongs to, cells over seeds and the statistics that compare them."""

import math

import pytest

from benchmarks.results import stats
from benchmarks.results.stats import Row
from tests.test_claims import ALPHA0, ALPHA100, COPY_X0, RECORDS


def test_a_row_is_the_records_fields_and_its_label_is_written_from_them():
    assert Row.of(RECORDS[-2]) == ALPHA100 == Row("alpha-vae", 100, "avg-gaussian")  # 100 and 100.0: one row
    assert ALPHA100.label == "alpha-vae α=100 (avg-gaussian)" and ALPHA0.label == "alpha-vae α=0"
    assert Row("alpha-vae", 0.0, width=0.5).label == "alpha-vae w=0.5 α=0"
    assert Row.of({"method": "copy-x0", "alpha": None, "kl": "", "reference": "grid"}).label == "copy-x0 [ref grid]"
    assert stats.rows_of(RECORDS, 1) == [COPY_X0, Row("pixel-average"), ALPHA0, ALPHA100]


def test_cells_of_a_split_ordered_splits_and_the_grid():
    cells = stats.cells(RECORDS, 1, "pose_error_deg", well_posed=False)  # the one ambiguous record
    assert list(cells) == [(ALPHA0, 2)] and cells[(ALPHA0, 2)].values == (99.0,)
    assert cells[(ALPHA0, 2)].text() == "99.00"  # one value: no spread
    records = [{**r, "split": split} for split in ("train", "val", "heldout", "test") for r in RECORDS]
    assert stats.splits_of(records, 1) == ["test", "heldout", "train", "val"]
    assert stats.splits_of(records, 1, leave_out=("train",)) == ["test", "heldout", "val"]
    assert stats.grid([("test", 2), ("heldout", 5)], [("copy-x0", ["10.00", "–"])]) == [
        "| method | test k=2 | heldout k=5 |", "|---|---|---|", "| copy-x0 | 10.00 | – |", ""]


def test_cell_is_mean_and_sample_sd_over_seeds_of_well_posed_records():
    c = stats.cell(RECORDS, 1, "test", 2, ALPHA0, "pose_error_deg")
    assert c.values == (30.0, 32.0, 34.0) and c.mean == 32.0 and c.sd == pytest.approx(2.0)
    assert c.text() == "32.00 ± 2.00 (n=3)" and c.text(n=False) == "32.00 ± 2.00"  # the claims' and results.md's
    assert c.seeds == (0, 1, 2) and c.by_seed() == {0: 30.0, 1: 32.0, 2: 34.0}
    assert stats.cell(RECORDS, 1, "heldout", 2, ALPHA0, "pose_error_deg") is None


def test_compare_gives_difference_in_seed_sds_and_welch_p():
    a = stats.cell(RECORDS, 1, "test", 2, ALPHA100, "pose_error_deg")
    b = stats.cell(RECORDS, 1, "test", 2, ALPHA0, "pose_error_deg")
    diff, d, p = stats.compare(a, b)
    assert diff == -10.0 and d == pytest.approx(-5.0)  # both SDs are 2
    assert p == pytest.approx(0.0036, abs=1e-4)  # Welch t = -6.12 on 4 degrees of freedom
    seedless = stats.cell(RECORDS, 1, "test", 2, COPY_X0, "pose_error_deg")
    diff, d, p = stats.compare(a, seedless)  # one-sample against the fixed value 10
    assert diff == 12.0 and d == pytest.approx(12.0 / math.sqrt(2)) and p < 0.01
    assert all(math.isnan(x) for x in stats.compare(seedless, seedless)[1:])


def test_two_runs_that_disagree_on_a_cell_are_refused():
    from ibutil.errors import UserError
    other = [{**r, "pose_error_deg": r["pose_error_deg"] + 1} for r in RECORDS]
    assert stats.cell(RECORDS + RECORDS, 1, "test", 2, COPY_X0, "pose_error_deg").values == (10.0,)  # repeats: once
    with pytest.raises(UserError, match="two runs disagree on copy-x0"):
        stats.cell(RECORDS + other, 1, "test", 2, COPY_X0, "pose_error_deg")


def test_welch_by_hand():
    # a = 1..5 (mean 3, var 2.5), b = 2, 4, .., 10 (mean 6, var 10): se^2 = 2.5/5 + 10/5 = 2.5,
    # t = -3 / sqrt(2.5) = -1.897, df = 2.5^2 / (0.5^2/4 + 2^2/4) = 100/17, pooled SD sqrt((4*2.5 + 4*10)/8) = 2.5
    e = stats.welch([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert (e.n_a, e.n_b, e.mean_a, e.mean_b, e.diff) == (5, 5, 3.0, 6.0, -3.0)
    assert e.df == pytest.approx(100 / 17) and e.d == pytest.approx(-1.2)
    assert e.p == pytest.approx(0.10753, abs=1e-5)  # two-sided t of -1.897 on 5.88 df
    half = 3.8877416  # t(0.975, 100/17) * sqrt(2.5)
    assert (e.low, e.high) == (pytest.approx(-3 - half), pytest.approx(-3 + half))


def test_paired_t_by_hand():
    # per-seed differences 1, 2, 1, 2, 1: mean 1.4, SD sqrt(0.3), t = 1.4 / (sqrt(0.3)/sqrt(5)) = 5.715 on 4 df
    e = stats.paired_t([5, 6, 7, 8, 9], [4, 4, 6, 6, 8])
    assert e.diff == pytest.approx(1.4) and e.df == 4.0 and e.p == pytest.approx(0.004636, abs=1e-6)
    assert e.high - e.diff == pytest.approx(2.7764451 * math.sqrt(0.3 / 5))  # t(0.975, 4) = 2.776
    assert e.d == pytest.approx(1.4 / math.sqrt((2.5 + 2.8) / 2))  # pooled SD of the two arms (variances 2.5, 2.8)


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, math.nan]) == [1.0, 1.0]  # capped at 1; a missing p counts as 1


def test_a_nan_value_repeated_by_two_runs_is_one_value_not_a_disagreement():
    records = [{**RECORDS[0], "pose_error_deg": math.nan}] * 2
    c = stats.cell(records, 1, "test", 2, COPY_X0, "pose_error_deg")
    assert c.n == 1 and math.isnan(c.mean) and c.text() == "nan"
