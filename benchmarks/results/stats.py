"""The cells of every results table (one row's metric over its seeds at a dof, split and gap) and their statistics.

One row type names a table row by the record fields that tell rows apart (Row: method, alpha, kl,
width, reference); its label is only ever written, never read back. results.md (report.py) and the
claims files (claims.py) aggregate records into cells, order their splits and gaps, format a cell
and lay out a rows x (split, gap) table here, once.

The statistics over seeds: a difference in seed SDs with Welch's p (compare), the declared endpoints'
estimate with its t-interval and Cohen's d (welch, paired_t), Holm's adjustment, and the paired test
over triplets (paired_test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.scoring.examples import HEADLINE_TAU
from ibutil.errors import UserError

DIGITS = {"mse": 5, "psnr": 2, "ssim": 4, "iou": 4, "centroid_error": 3, "sharpness": 3, "pose_error_deg": 2,
          "nn_distance": 4, "position_error_px": 2, "position_found": 3, "smoothness": 3,
          "placement_error_px": 2}  # decimals a metric is written with (3 for any other)
SPLIT_ORDER = ("test", "heldout")  # the two protocols, first in every table (other splits after them, by name)
REFERENCE_MARK = "[ref"  # a reference row's label ends "[ref NAME]"
MISSING = "–"  # a table's empty cell


@dataclass(frozen=True)
class Row:
    """What one table row is: the record fields that tell rows apart. Records with equal fields share a row."""

    method: str
    alpha: float | None = None  # the alpha-VAE's divergence weight (None: a method without one)
    kl: str | None = None  # the alpha-VAE's KL form (None: none, as at alpha = 0)
    width: float | None = None  # the alpha-VAE width of a one-width run (claims --by-width; None elsewhere)
    reference: str | None = None  # the reference run a record was read from (report.references_for), or a shipped model

    @classmethod
    def of(cls, record: dict[str, Any]) -> Row:
        return cls(record["method"], record.get("alpha"), record.get("kl") or None, record.get("width"),
                   record.get("reference") or None)  # "": a CSV's empty cell

    @property
    def label(self) -> str:
        """How tables write the row: "alpha-vae α=100 (avg-gaussian)", "alpha-vae w=0.5 α=0", "copy-x0 [ref grid]"."""
        return (self.method + (f" w={self.width:g}" if self.width is not None else "")
                + (f" α={self.alpha:g}" if self.alpha is not None else "") + (f" ({self.kl})" if self.kl else "")
                + (f" {REFERENCE_MARK} {self.reference}]" if self.reference else ""))


def digits(metric: str) -> int:
    """The decimals a metric is written with."""
    return DIGITS.get(metric, 3)


def fmt(metric: str, x: float) -> str:
    """A metric's value in its decimals."""
    return f"{x:.{digits(metric)}f}"


@dataclass(frozen=True)
class Cell:
    """One metric of one row at one (dof, split, gap): a value per seed, in seed order (one for a seedless method)."""

    row: Row
    dof: int
    split: str
    gap: int
    metric: str
    seeds: tuple[int | None, ...]  # (None,) for a seedless method
    values: tuple[float, ...]  # values[i] is seed seeds[i]'s

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def sd(self) -> float:
        """The sample standard deviation over seeds (0 for one value)."""
        return float(np.std(self.values, ddof=1)) if self.n > 1 else 0.0

    def by_seed(self) -> dict[int | None, float]:
        return dict(zip(self.seeds, self.values, strict=True))

    def text(self, n: bool = True) -> str:
        """Mean ± SD and the number of seeds: `32.00 ± 2.00 (n=3)` (`32.00 ± 2.00` with n=False); one value alone."""
        if self.n == 1:
            return fmt(self.metric, self.mean)
        return f"{fmt(self.metric, self.mean)} ± {fmt(self.metric, self.sd)}" + (f" (n={self.n})" if n else "")


def cells(records: list[dict], dof: int, metric: str, split: str = "test", tau: float | None = HEADLINE_TAU,
          well_posed: bool = True) -> dict[tuple[Row, int], Cell]:
    """(row, gap) -> cell of every record with the metric at (dof, split, tau, well-posedness), rows in first-seen
    order. tau None: records without tau (path smoothness); records of older files without tau, split or well_posed
    are the headline's (0.5, test, well-posed). A seed repeated by two runs (the same model) counts once; two
    runs that disagree on it are a UserError."""
    seen: dict[tuple[Row, int], dict[int | None, float]] = {}
    default_tau = None if tau is None else HEADLINE_TAU
    for r in records:
        if r["dof"] != dof or r.get("split", "test") != split or r.get("tau", default_tau) != tau \
                or r.get("well_posed", True) != well_posed or r.get(metric) is None:
            continue
        row, value, seed = Row.of(r), float(r[metric]), r.get("seed")
        by_seed = seen.setdefault((row, r["gap"]), {})
        if by_seed.setdefault(seed, value) != value and not (math.isnan(value) and math.isnan(by_seed[seed])):
            raise UserError(f"two runs disagree on {row.label}, seed {seed}, dof {dof} {split} k={r['gap']} "
                            f"({metric}); give runs of the same datasets and budget, or write their claims apart")
    out = {}
    for (row, gap), by_seed in seen.items():
        seeds = tuple(sorted(by_seed, key=lambda s: -1 if s is None else s))
        out[(row, gap)] = Cell(row, dof, split, gap, metric, seeds, tuple(by_seed[s] for s in seeds))
    return out


def cell(records: list[dict], dof: int, split: str, gap: int, row: Row, metric: str) -> Cell | None:
    """One row's cell at (dof, split, gap), well-posed middle frames (cells); None if absent."""
    return cells(records, dof, metric, split).get((row, gap))


def rows_of(records: list[dict], dof: int) -> list[Row]:
    """The rows of a DoF's records in first-seen order."""
    return list(dict.fromkeys(Row.of(r) for r in records if r["dof"] == dof))


def splits_of(records: list[dict], dof: int, leave_out: tuple[str, ...] = ()) -> list[str]:
    """The splits of a DoF's records but `leave_out`: test and heldout first (the two protocols), then by name."""
    found = {r.get("split", "test") for r in records if r["dof"] == dof} - set(leave_out)
    return [s for s in SPLIT_ORDER if s in found] + sorted(found - set(SPLIT_ORDER))


def gaps_of(keys) -> list[int]:
    """The gaps of records (dicts with "gap") or of cells' (row, gap) keys, in order."""
    return sorted({k["gap"] if isinstance(k, dict) else k[1] for k in keys})


def grid(cols: list[tuple[str, int]], body: list[tuple[str, list[str]]]) -> list[str]:
    """A markdown table: a "method" column, then one column per (split, gap); body: (label, one text per column)."""
    lines = ["| method | " + " | ".join(f"{s} k={k}" for s, k in cols) + " |", "|---|" + "---|" * len(cols)]
    return lines + [f"| {label} | " + " | ".join(texts) + " |" for label, texts in body] + [""]


# ----------------------------------------------------------------------------- comparisons over seeds
# Each test imports scipy.stats itself: results.md needs none of them, and the import takes about a second.


def num(x: float | None, decimals: int = 2) -> str:
    """A number in `decimals` decimals; "–" for none or nan, "∞" and "−∞" for infinities."""
    return MISSING if x is None or math.isnan(x) else ("∞" if math.isinf(x) and x > 0 else "−∞" if math.isinf(x)
                                                       else f"{x:.{decimals}f}")


def pval(p: float) -> str:
    """A p-value in 3 decimals, or as an upper bound where it would print as 0.000."""
    return "<0.001" if p < 0.001 else num(p, 3)


def _in_sds(diff: float, sd: float) -> float:
    return diff / sd if sd > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))


def compare(a: Cell, b: Cell) -> tuple[float, float, float]:
    """(a - b, the difference in seed SDs (over the root mean square of the two; a seedless cell has SD 0),
    Welch's two-sided p over seeds, or the one-sample t against a seedless cell's value); nan where the seeds
    cannot say."""
    import scipy.stats

    diff = a.mean - b.mean
    if a.n == 1 and b.n == 1:  # two seedless values: no spread to measure the difference in
        return diff, math.nan, math.nan
    d = _in_sds(diff, math.sqrt((a.sd ** 2 + b.sd ** 2) / 2))
    if a.n > 1 and b.n > 1:
        p = float(scipy.stats.ttest_ind(a.values, b.values, equal_var=False).pvalue)
    else:
        seeded, fixed = (a, b) if a.n > 1 else (b, a)
        p = float(scipy.stats.ttest_1samp(seeded.values, fixed.mean).pvalue)
    return diff, d, p


def paired_test(a: dict, b: dict) -> tuple[int, float, float] | None:
    """(targets both scored, d_z, Wilcoxon signed-rank p) of a - b over the targets two rows share (each a dict
    target -> value); d_z is the mean difference over the SD of the differences. None under two common targets."""
    import scipy.stats

    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return None
    diff = np.array([a[k] - b[k] for k in common])  # (N,)
    if not diff.any():
        return len(common), 0.0, 1.0
    sd = float(np.std(diff, ddof=1))
    d_z = float(diff.mean()) / sd if sd > 0 else math.copysign(math.inf, float(diff.mean()))
    return len(common), d_z, float(scipy.stats.wilcoxon(diff).pvalue)


@dataclass(frozen=True)
class Estimate:
    """A declared comparison over seeds: means, the difference a - b with its 95% t-interval, Cohen's d (pooled SD of
    the two arms) and the two-sided p (Welch's t, or the paired t over per-seed differences)."""

    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float
    df: float
    d: float
    p: float


def _pooled_sd(a: np.ndarray, b: np.ndarray) -> float:
    return math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))


def _estimate(a: np.ndarray, b: np.ndarray, diff: float, se: float, df: float) -> Estimate:
    import scipy.stats

    d = _in_sds(diff, _pooled_sd(a, b))
    if se > 0:
        half = float(scipy.stats.t.ppf(0.975, df)) * se
        p = float(2 * scipy.stats.t.sf(abs(diff) / se, df))
    else:  # no spread at all: no interval and no test
        half, p = math.nan, math.nan
    return Estimate(len(a), len(b), float(a.mean()), float(b.mean()), diff, diff - half, diff + half, df, d, p)


def welch(a: list[float], b: list[float]) -> Estimate:
    """a - b over two independent seed samples: Welch's t with the Welch-Satterthwaite degrees of freedom."""
    a, b = np.asarray(a, float), np.asarray(b, float)  # (n_a,), (n_b,)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 else math.nan
    return _estimate(a, b, float(a.mean() - b.mean()), se, df)


def paired_t(a: list[float], b: list[float]) -> Estimate:
    """a - b of the same models (a[i] and b[i] one seed): the t over the per-seed differences, n - 1 df."""
    a, b = np.asarray(a, float), np.asarray(b, float)  # (n,), (n,)
    diff = a - b
    return _estimate(a, b, float(diff.mean()), float(diff.std(ddof=1)) / math.sqrt(len(diff)), len(diff) - 1.0)


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values of one family, in the order given (nan counts as 1)."""
    ps = [1.0 if math.isnan(p) else p for p in ps]
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    adjusted, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        adjusted[i] = running
    return adjusted


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """The mean of seed values and its 95% t-interval (n - 1 df)."""
    import scipy.stats

    x = np.asarray(values, float)  # (n,)
    half = float(scipy.stats.t.ppf(0.975, len(x) - 1)) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return float(x.mean()), float(x.mean()) - half, float(x.mean()) + half
