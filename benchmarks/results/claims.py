"""The numbers behind docs/results.md's claims: cells of committed runs, seed statistics and effect sizes.

    python -m benchmarks.results.claims docs/results/main docs/results/kl-ablation --out docs/results/claims.md
    python -m benchmarks.results.claims --by-width docs/results/width-dof1/w* --out docs/results/claims-width-dof1.md \
        --figure docs/results/width-dof1/width-curve.png
    python -m benchmarks.results.claims --primary docs/results --out docs/results/claims-primary.md

Reads the results.json of each run folder and writes markdown tables that docs/results.md cites:
every cell is a mean ± sample standard deviation over seeds (n given) of the test split's or the
heldout split's well-posed middle frames (tau = 0.5). A comparison gives the difference, its size
in seed standard deviations (d = difference / the root mean square of the two SDs; a method
without seeds has SD 0) and Welch's t-test over seeds (one-sample against a seedless method's
value). With 3 seeds a p-value below 0.05 needs a large, consistent difference; treat d and p as
what they are, a seed-to-seed comparison. The cells, their text and the tests are benchmarks.results.stats';
a row is a stats.Row (method, alpha, KL form, width), read from the records' fields.

Where the run folders hold triplets.csv.gz (runs scored since SCORING_VERSION 3), each comparison also gets
a paired test over triplets: every well-posed test target scored by both rows (each row's value averaged
over its seeds), d_z = mean difference / SD of the differences, and the Wilcoxon signed-rank p over them.
That test says how two trained models differ on these frames; only the seed columns say whether
another seed would differ as much. It is what a single-seed comparison has.

--primary reads the declared endpoints of docs/results.md's Protocol (PRIMARY, SECONDARY) from the v3 stage
folders: per endpoint the seeds per arm, the means, a - b with its 95% t-interval (Welch-Satterthwaite df),
Cohen's d (pooled SD), the p-value, Holm's adjustment across the primary family and a verdict from the adjusted
p and the interval alone. It refuses (exit 2) a declared cell with fewer than 5 seeds or with seeds other than
the declared new ones, rather than print a verdict.
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass, replace
from pathlib import Path

import click

from benchmarks.results import stats
from benchmarks.results.stats import MISSING, Estimate, Row, num, pval
from benchmarks.scoring.examples import TRIPLET_KEYS
from ibutil.cli import DataclassOptions, user_errors
from ibutil.errors import UserError
from ibutil.io import write_text_atomic

PLACE = {1: "pose_error_deg", 2: "pose_error_deg", 6: "position_error_px"}  # the paper's terms: pose and place
ALPHA0, ALPHA100 = Row("alpha-vae", 0.0), Row("alpha-vae", 100.0, "avg-gaussian")
COPY_X0 = Row("copy-x0")  # the hedge every [r×] is a multiple of


def load(folders: list[str | Path]) -> list[dict]:
    """Every record of the runs' results.json files (later folders add rows; they do not replace)."""
    records: list[dict] = []
    for folder in folders:
        path = Path(folder) / "results.json"
        if not path.exists():
            raise UserError(f"{path} does not exist; give run-benchmark output folders")
        records += json.loads(path.read_text())["records"]
    return records


Triplets = dict  # (dof, split, gap, Row, metric) -> {(s, t): the row's value averaged over its seeds}


def load_triplets(folders: list[str | Path], add_fields=None) -> Triplets:
    """The well-posed per-triplet metrics of every folder's triplets.csv.gz (a folder without one adds nothing);
    add_fields(folder, record) -> record gives each line the fields its folder adds to its records (with_width)."""
    sums: dict[tuple, dict[tuple[int, int], list[float]]] = {}
    for folder in folders:
        path = Path(folder) / "triplets.csv.gz"
        if not path.exists():
            continue
        with gzip.open(path, "rt", newline="") as fh:
            reader = csv.DictReader(fh)
            metrics = [c for c in reader.fieldnames if c not in TRIPLET_KEYS]  # what scoring kept per triplet
            for r in reader:
                if r["well_posed"] != "1":
                    continue
                r = {**r, "alpha": float(r["alpha"]) if r["alpha"] else None, "kl": r["kl"] or None}
                r = add_fields(folder, r) if add_fields else r
                head = (int(r["dof"]), r["split"], int(r["gap"]), Row.of(r))
                for metric in metrics:
                    if r[metric]:
                        acc = sums.setdefault((*head, metric), {}).setdefault((int(r["s"]), int(r["t"])), [0.0, 0])
                        acc[0] += float(r[metric])
                        acc[1] += 1
    return {key: {st: total / n for st, (total, n) in per.items()} for key, per in sums.items()}


def paired(trip: Triplets, dof: int, split: str, gap: int, a: Row, b: Row, metric: str) -> tuple | None:
    """(triplets both rows scored, d_z, Wilcoxon signed-rank p) of a - b (stats.paired_test); None without two
    common triplets."""
    return stats.paired_test(trip.get((dof, split, gap, a, metric), {}), trip.get((dof, split, gap, b, metric), {}))


def axes(records: list[dict], dof: int) -> tuple[list[str], list[int]]:
    """The DoF's splits (test and heldout first) and gaps."""
    return stats.splits_of(records, dof), stats.gaps_of(r for r in records if r["dof"] == dof)


def pair_table(records: list[dict], dof: int, a: Row, b: Row, metrics: tuple[str, ...],
               names: tuple[str, str] = ("a", "b"), trip: Triplets | None = None) -> list[str]:
    """Rows a vs b on every split and gap: both cells, the difference a - b, d and p, per metric; with
    per-triplet data (trip), also the paired test over triplets (N, d_z, Wilcoxon p)."""
    extra = bool(trip)
    lines = [f"| split | k | metric | {names[0]} | {names[1]} | {names[0]} − {names[1]} | d (seed SDs) | p (Welch) |"
             + (" triplets | d_z (paired) | p (Wilcoxon) |" if extra else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|---|---|" if extra else "")]
    splits, gaps = axes(records, dof)
    for split in splits:
        per = {m: stats.cells(records, dof, m, split) for m in metrics}
        for k in gaps:
            for m in metrics:
                ca, cb = per[m].get((a, k)), per[m].get((b, k))
                if ca is None or cb is None:
                    continue
                diff, d, p = stats.compare(ca, cb)
                line = (f"| {split} | {k} | {m} | {ca.text()} | {cb.text()} | {num(diff, stats.digits(m))} | {num(d)} "
                        f"| {pval(p)} |")
                if extra:
                    pt = paired(trip, dof, split, k, a, b, m)
                    line += " – | – | – |" if pt is None else f" {pt[0]} | {num(pt[1])} | {pval(pt[2])} |"
                lines.append(line)
    return lines + [""]


def grid_table(records: list[dict], dof: int, metric: str, rows: list[Row] | None = None,
               relative_to: Row | None = None) -> list[str]:
    """Rows x (split, gap) of one metric (a row without any cell left out); with relative_to, each cell also as a
    fraction of that row's mean."""
    splits, gaps = axes(records, dof)
    per = {s: stats.cells(records, dof, metric, s) for s in splits}
    cols = [(s, k) for s in splits for k in gaps]
    body = []
    for row in rows or stats.rows_of(records, dof):
        texts = []
        for s, k in cols:
            c, ref = per[s].get((row, k)), per[s].get((relative_to, k))
            text = MISSING if c is None else c.text()
            if c is not None and ref is not None and ref.mean > 0:
                text += f" [{c.mean / ref.mean:.2f}×]"
            texts.append(text)
        if any(t != MISSING for t in texts):
            body.append((row.label, texts))
    return stats.grid(cols, body)


def winners_table(records: list[dict], dof: int, metrics: tuple[str, ...]) -> list[str]:
    """Per split, gap and metric: the best row, the runner-up, and how far apart they are (d, p)."""
    lines = ["| split | k | metric | best | runner-up | gap to runner-up | d | p |", "|---|---|---|---|---|---|---|---|"]
    splits, gaps = axes(records, dof)
    rows = stats.rows_of(records, dof)
    for split in splits:
        per = {m: stats.cells(records, dof, m, split) for m in metrics}
        for k in gaps:
            for m in metrics:
                higher = m in ("ssim", "psnr", "iou")
                cells = {row: per[m][(row, k)] for row in rows if (row, k) in per[m]}
                if len(cells) < 2:
                    continue
                order = sorted(cells, key=lambda row: -cells[row].mean if higher else cells[row].mean)
                best, second = cells[order[0]], cells[order[1]]
                diff, d, p = stats.compare(best, second)
                lines.append(f"| {split} | {k} | {m} | {best.row.label}: {best.text()} | {second.row.label}: "
                             f"{second.text()} | {num(diff, stats.digits(m))} | {num(d)} | {pval(p)} |")
    return lines + [""]


def kl_table(records: list[dict], metric: str = "pose_error_deg", dof: int = 1) -> list[str]:
    """The KL-form ablation: alpha x form cells on the test split at every gap, alpha = 0 (no form) first."""
    rows = [row for row in stats.rows_of(records, dof) if row.method == ALPHA0.method]
    return grid_table(records, dof, metric, sorted(rows, key=lambda row: (row.kl is not None, row.kl or "", row.alpha)))


def alpha_rows(records: list[dict], dof: int) -> list[Row]:
    """The DoF's alpha-VAE rows without a KL form or with the paper's (avg-gaussian), in order of alpha."""
    rows = [row for row in stats.rows_of(records, dof)
            if row == ALPHA0 or (row.alpha is not None and row == replace(ALPHA100, alpha=row.alpha))]
    return sorted(rows, key=lambda row: row.alpha)


def alpha_sweep(records: list[dict], dof: int, trip: Triplets | None = None) -> list[str]:
    """alpha = 0, ... in the paper's terms (pose or place) at every split and gap, then each alpha > 0 against
    alpha = 0, and MSE beside it (a hedge lowers MSE without placing anything)."""
    rows = alpha_rows(records, dof)
    out = [f"## α sweep, DoF {dof}: {PLACE[dof]}", ""] + grid_table(records, dof, PLACE[dof], rows, COPY_X0)
    out += [f"### DoF {dof}: MSE", ""] + grid_table(records, dof, "mse", rows)
    for a in rows:
        if a != ALPHA0 and ALPHA0 in rows:
            out += [f"### DoF {dof}: α = {a.alpha:g} against α = 0", ""]
            out += pair_table(records, dof, a, ALPHA0, (PLACE[dof], "mse", "sharpness"), (f"α={a.alpha:g}", "α=0"),
                              trip)
    return out


def markdown(records: list[dict], sources: list[str], trip: Triplets | None = None) -> str:
    dofs = sorted({r["dof"] for r in records})
    out = ["# Claims: the cells behind docs/results.md", "",
           f"Written by `python -m benchmarks.results.claims {' '.join(sources)}`. Cells: mean ± sample SD over seeds "
           "(n), well-posed middle frames (tau = 0.5); d: difference in seed SDs (root mean square of the two); "
           "p: Welch's t-test over seeds (one-sample against a method without seeds). `[r×]`: the cell as a "
           "multiple of the copy-x0 hedge's, which makes gaps and DoFs of different motion comparable.", ""]
    for dof in (d for d in (1, 2) if d in dofs):
        if {ALPHA0, ALPHA100} <= set(stats.rows_of(records, dof)):
            out += [f"## Claim 1, DoF {dof}: α = 100 against α = 0", ""]
            out += pair_table(records, dof, ALPHA100, ALPHA0, ("pose_error_deg", "mse", "ssim", "sharpness"),
                              ("α=100", "α=0"), trip)
    if {1, 2} & set(dofs):
        out += ["## Claim 2: pose error on DoF 1 and DoF 2, as multiples of copy-x0's", ""]
        for dof in (d for d in (1, 2) if d in dofs):
            out += [f"### DoF {dof}", ""] + grid_table(records, dof, "pose_error_deg", relative_to=COPY_X0)
    if 6 in dofs:
        out += ["## Claim 3: DoF 6 (three objects), position error in pixels", ""]
        out += grid_table(records, 6, "position_error_px", relative_to=COPY_X0)
        out += ["Objects found (share of object instances a prediction shows at all):", ""]
        out += grid_table(records, 6, "position_found")
    for dof in dofs:
        out += [f"## Who wins, DoF {dof}", ""] + winners_table(records, dof, (PLACE[dof], "mse", "ssim"))
    for dof in dofs:  # a sweep of the paper's divergence: more alphas than the claim's two
        if len(alpha_rows(records, dof)) > 2:
            out += alpha_sweep(records, dof, trip)
    if any(r.get("kl") not in (None, "avg-gaussian") for r in records):
        out += ["## KL-form ablation, DoF 1: pose error", ""] + kl_table(records)
        out += ["## KL-form ablation, DoF 1: MSE", ""] + kl_table(records, "mse")
        present = set(stats.rows_of(records, 1))
        forms = ("avg-gaussian", "mixture", "jensen")
        for i, f in enumerate(forms):  # form against form at the paper's alpha
            for g in forms[i + 1:]:
                a, b = replace(ALPHA100, kl=f), replace(ALPHA100, kl=g)
                if {a, b} <= present:
                    out += [f"### α = 100: {f} against {g}, pose error", ""]
                    out += pair_table(records, 1, a, b, ("pose_error_deg",), (f, g), trip)
        for alpha in (1, 10):  # a weak divergence against none
            for f in forms:
                a = Row(ALPHA0.method, alpha, f)
                if {a, ALPHA0} <= present:
                    out += [f"### α = {alpha} ({f}) against α = 0, pose error", ""]
                    out += pair_table(records, 1, a, ALPHA0, ("pose_error_deg",), (f"α={alpha}", "α=0"), trip)
    return "\n".join(out)


def with_width(folder: str | Path, record: dict) -> dict:
    """An alpha-VAE record of a one-width run folder with its "width" (the folder's config.json), so that the cells
    of one width never mix with another's; other methods' records unchanged."""
    path = Path(folder) / "config.json"
    if not path.exists():
        raise UserError(f"{path} does not exist; give run-benchmark output folders")
    width = json.loads(path.read_text())["method_configs"]["alpha-vae"]["width"]
    return {**record, "width": float(width)} if record["method"] == ALPHA0.method else record


def load_widths(folders: list[str | Path]) -> list[dict]:
    """The alpha-VAE records of runs that differ in width, one width per folder, with their width (with_width)."""
    return [with_width(folder, r) for folder in folders for r in load([folder]) if r["method"] == ALPHA0.method]


def width_markdown(records: list[dict], sources: list[str], trip: Triplets | None = None) -> str:
    """Per DoF: the place metric, MSE and sharpness of every (width, alpha), then alpha = 100 against alpha = 0
    at each width, and each wider width against the narrowest at each alpha."""
    out = ["# Width: the cells behind docs/results.md", "",
           f"Written by `python -m benchmarks.results.claims --by-width {' '.join(sources)}`. Cells: mean ± sample SD over "
           "seeds (n), well-posed middle frames (tau = 0.5); d and p as in claims.md.", ""]
    for dof in sorted({r["dof"] for r in records}):
        rows = sorted(stats.rows_of(records, dof), key=lambda row: (row.width, row.alpha))
        out += [f"## DoF {dof}: training (per seed)", "", "| method | params | steps | selected step | best val loss "
                "| train s |", "|---|---|---|---|---|---|"]
        for row in rows:
            runs = {r["seed"]: r for r in records if r["dof"] == dof and Row.of(r) == row}
            col = [runs[seed] for seed in sorted(runs)]
            out.append(f"| {row.label} | {col[0].get('params', '–')} | " + " | ".join(
                ", ".join(num(r.get(key), 0) if not isinstance(r.get(key), int) else str(r[key]) for r in col)
                for key in ("steps", "selected_step", "best_val_loss", "train_seconds")) + " |")
        out.append("")
        for metric in (PLACE[dof], "mse", "sharpness"):
            out += [f"## DoF {dof}: {metric}", ""] + grid_table(records, dof, metric, rows)
        widths = list(dict.fromkeys(row.width for row in rows))  # narrowest first
        for width in widths:
            a, b = replace(ALPHA100, width=width), replace(ALPHA0, width=width)
            if {a, b} <= set(rows):
                out += [f"### DoF {dof}, {Row(ALPHA0.method, width=width).label}: α = 100 against α = 0", ""]
                out += pair_table(records, dof, a, b, (PLACE[dof], "mse"), ("α=100", "α=0"), trip)
        for alpha, kl in dict.fromkeys((row.alpha, row.kl) for row in rows):  # each wider width against the narrowest
            for width in widths[1:]:
                a, b = Row(ALPHA0.method, alpha, kl, width), Row(ALPHA0.method, alpha, kl, widths[0])
                if {a, b} <= set(rows):
                    names = (f"w={width:g}", f"w={widths[0]:g}")
                    out += [f"### DoF {dof}, α = {alpha:g}: {names[0]} against {names[1]}", ""]
                    out += pair_table(records, dof, a, b, (PLACE[dof], "mse"), names, trip)
    return "\n".join(out)


def width_figure(records: list[dict], path: str | Path) -> None:
    """The width curve: per DoF, the test split's place metric against width for each alpha at the smallest and
    the largest gap (mean over seeds, bars one sample SD), each width's parameters and steps written above it."""
    import matplotlib
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    dofs = sorted({r["dof"] for r in records})
    fig, axs = plt.subplots(1, len(dofs), figsize=(5.2 * len(dofs), 4.0), squeeze=False)
    for ax, dof in zip(axs[0], dofs):
        rows = stats.rows_of(records, dof)
        gaps = axes(records, dof)[1]
        test = stats.cells(records, dof, PLACE[dof], "test")
        alphas = dict.fromkeys((row.alpha, row.kl) for row in rows)
        for (alpha, kl), colour in zip(alphas, ("tab:blue", "tab:red", "tab:green", "tab:purple")):
            line = sorted((row for row in rows if (row.alpha, row.kl) == (alpha, kl)), key=lambda row: row.width)
            for k, style in ((gaps[0], "-"), (gaps[-1], "--")):
                pts = [test[(row, k)] for row in line if (row, k) in test]
                ax.errorbar([c.row.width for c in pts], [c.mean for c in pts], yerr=[c.sd for c in pts], color=colour,
                            linestyle=style, marker="o", capsize=3, label=f"α={alpha:g}, k={k}")
        widths = sorted({row.width for row in rows})
        for width in widths:  # what each width is: its parameters and steps
            r = next(r for r in records if r["dof"] == dof and r["width"] == width)
            note = "\n".join(x for x in (f"{r['params'] / 1e6:.2g} M params" if r.get("params") else "",
                                          f"{r['steps']} steps" if r.get("steps") else "") if x)
            ax.annotate(note, (width, 1), xycoords=("data", "axes fraction"), xytext=(0, 4),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(widths, [f"{w:g}" for w in widths])
        ax.set_xlabel("width (1 = the paper's network)")
        ax.set_ylabel(f"{PLACE[dof]} (test, mean ± SD over seeds)")
        ax.set_title(f"DoF {dof}: the α-VAE at each width", pad=28)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(Path(path), dpi=110)
    plt.close(fig)


# ---- The declared primary endpoints (docs/results.md, *Protocol*) ----------------------------------------------
# Declared before the runs they govern (benchmarks/tools/v2_run.sh, stages v3-*): new seed indices, 5 per arm, one command
# per stage, fp32. A primary arm with fewer seeds, other seeds or another dtype is refused, never printed with a
# verdict.
PRIMARY_SEEDS = tuple(range(10, 15))  # seeds no committed run used before (those used 0, 1 and 2)
MIN_SEEDS = 5
PRIMARY_GAP = 20  # the largest gap: the paper's "large displacement", where the in-between is most needed
ALPHA100_MIXTURE = replace(ALPHA100, kl="mixture")
AUTOENCODER = Row("autoencoder")
STAGES = {"A-paper": "v3-a-paper-dof1", "A-arc": "v3-a-arc-dof1", "B": "v3-b-dof6", "D": "v3-d-dof2"}


@dataclass(frozen=True)
class Arm:
    """One side of a declared comparison: a row's cell in one stage folder, per seed; with relative_to, each seed's
    value divided by that seedless row's value on the same cell (a multiple of the copy-x0 hedge)."""

    name: str  # what the table calls it ("α=100", "DoF 2")
    stage: str  # the stage folder under the results root (docs/results/<stage>)
    dof: int
    split: str
    row: Row
    relative_to: Row | None = None


@dataclass(frozen=True)
class Endpoint:
    """A declared comparison a - b of one metric at one gap. paired: a and b are the same models (seeds) scored on
    two splits, so the test is over per-seed differences (t with n - 1 df); otherwise Welch over two seed samples."""

    claim: int
    name: str
    metric: str
    a: Arm
    b: Arm
    gap: int = PRIMARY_GAP
    paired: bool = False


def _claim1(cell_name: str, stage: str, dof: int, split: str, a: Row = ALPHA100, a_name: str = "α=100") -> Endpoint:
    return Endpoint(1, cell_name, "pose_error_deg", Arm(a_name, stage, dof, split, a),
                    Arm("α=0", stage, dof, split, ALPHA0))


PRIMARY = (
    _claim1("DoF 1, paper protocol, test", STAGES["A-paper"], 1, "test"),
    _claim1("DoF 1, held-out-arc protocol, test", STAGES["A-arc"], 1, "test"),
    _claim1("DoF 1, held-out poses", STAGES["A-arc"], 1, "heldout"),
    _claim1("DoF 2, test", STAGES["D"], 2, "test"),
    Endpoint(2, "α=100, test, pose error as a multiple of copy-x0's", "pose_error_deg",
             Arm("DoF 2", STAGES["D"], 2, "test", ALPHA100, COPY_X0),
             Arm("DoF 1", STAGES["A-arc"], 1, "test", ALPHA100, COPY_X0)),
    Endpoint(3, "DoF 6, α=100, position error test − train", "position_error_px",
             Arm("test", STAGES["B"], 6, "test", ALPHA100), Arm("train", STAGES["B"], 6, "train", ALPHA100),
             paired=True),
)
SECONDARY = (  # declared too, read as the Protocol says, never a verdict on their own (no Holm, no verdict column)
    _claim1("C: mixture, DoF 1, paper protocol, test", STAGES["A-paper"], 1, "test", ALPHA100_MIXTURE, "α=100 mix"),
    _claim1("C: mixture, DoF 1, held-out-arc protocol, test", STAGES["A-arc"], 1, "test", ALPHA100_MIXTURE,
            "α=100 mix"),
    _claim1("C: mixture, DoF 1, held-out poses", STAGES["A-arc"], 1, "heldout", ALPHA100_MIXTURE, "α=100 mix"),
    Endpoint(1, "A: α=100, held-out-arc − paper protocol, test (protocol at equal budget)", "pose_error_deg",
             Arm("arc", STAGES["A-arc"], 1, "test", ALPHA100), Arm("paper", STAGES["A-paper"], 1, "test", ALPHA100)),
    _claim1("DoF 2, held-out poses", STAGES["D"], 2, "heldout"),
    Endpoint(3, "DoF 6, α=0, position error test − train", "position_error_px",
             Arm("test", STAGES["B"], 6, "test", ALPHA0), Arm("train", STAGES["B"], 6, "train", ALPHA0), paired=True),
    Endpoint(3, "DoF 6, autoencoder, position error test − train", "position_error_px",
             Arm("test", STAGES["B"], 6, "test", AUTOENCODER), Arm("train", STAGES["B"], 6, "train", AUTOENCODER),
             paired=True),
    Endpoint(3, "DoF 6, held-out corner − test, α=100", "position_error_px",
             Arm("heldout", STAGES["B"], 6, "heldout", ALPHA100), Arm("test", STAGES["B"], 6, "test", ALPHA100),
             paired=True),
)


def verdict(e: Estimate, adjusted_p: float, a: str, b: str, level: float = 0.05) -> str:
    """What the family-adjusted p and the interval allow: a direction only where both exclude no difference."""
    if adjusted_p < level and (e.low > 0 or e.high < 0):
        return f"{a} > {b}" if e.low > 0 else f"{a} < {b}"
    return "no difference shown"


def _stage(root: Path, stage: str, loaded: dict) -> list[dict]:
    """The records of one stage folder, checked once: its alpha-VAE trained in fp32 (the declared dtype)."""
    if stage not in loaded:
        config = root / stage / "config.json"
        if not config.exists():
            raise UserError(f"{root / stage} holds no run (config.json); run its stage first "
                            "(`bash benchmarks/tools/v2_run.sh v3`)")
        dtype = json.loads(config.read_text()).get("method_configs", {}).get("alpha-vae", {}).get("dtype")
        if dtype not in (None, "fp32"):
            raise UserError(f"{root / stage} trained the alpha-VAE in {dtype}; the protocol declares fp32")
        loaded[stage] = load([root / stage])
    return loaded[stage]


def seed_values(records: list[dict], dof: int, split: str, gap: int, row: Row, metric: str) -> dict:
    """Seed -> value of one row's cell (stats.cell; seed None for a seedless method); empty if absent."""
    c = stats.cell(records, dof, split, gap, row, metric)
    return c.by_seed() if c else {}


def arm_values(root: Path, arm: Arm, gap: int, metric: str, loaded: dict) -> dict[int, float]:
    """Seed -> value of one arm, refused (UserError) unless it has the declared seeds, at least MIN_SEEDS of them."""
    records = _stage(root, arm.stage, loaded)
    values = seed_values(records, arm.dof, arm.split, gap, arm.row, metric)
    where = f"{arm.row.label}, dof {arm.dof} {arm.split} k={gap} in {root / arm.stage}"
    if len(values) < MIN_SEEDS:
        raise UserError(f"declared cell {where} has {len(values)} seeds, fewer than {MIN_SEEDS}; "
                        f"train seeds {PRIMARY_SEEDS[0]}-{PRIMARY_SEEDS[-1]} before reading a verdict")
    if not set(values) <= set(PRIMARY_SEEDS):
        raise UserError(f"declared cell {where} has seeds {sorted(values, key=str)}; the protocol declares "
                        f"new seeds {PRIMARY_SEEDS[0]}-{PRIMARY_SEEDS[-1]} only")
    if arm.relative_to:
        ref = seed_values(records, arm.dof, arm.split, gap, arm.relative_to, metric)
        if list(ref) != [None] or not ref[None] > 0:
            raise UserError(f"{arm.relative_to.label} (seedless, positive) is missing at dof {arm.dof} {arm.split} "
                            f"k={gap} in {root / arm.stage}")
        values = {seed: v / ref[None] for seed, v in values.items()}
    return values


def evaluate(root: str | Path, endpoints: tuple[Endpoint, ...]) -> list[Estimate]:
    """The estimate of every endpoint from the stage folders under root (docs/results)."""
    loaded: dict[str, list[dict]] = {}
    out = []
    for e in endpoints:
        a, b = (arm_values(Path(root), arm, e.gap, e.metric, loaded) for arm in (e.a, e.b))
        if e.paired:
            if set(a) != set(b):
                raise UserError(f"paired endpoint {e.name!r}: the two splits were scored for other seeds "
                                f"({sorted(a)} against {sorted(b)})")
            out.append(stats.paired_t([a[s] for s in sorted(a)], [b[s] for s in sorted(a)]))
        else:
            out.append(stats.welch(list(a.values()), list(b.values())))
    return out


def primary_markdown(root: str | Path) -> str:
    """The primary table (Holm across the family, a verdict from the adjusted p and the interval), then the declared
    secondary comparisons (unadjusted, no verdict)."""
    head = "| claim | endpoint (k = {k}) | a | b | n (a, b) | mean a | mean b | a − b [95% CI] | df | d | p |{adj}"
    out = ["# Primary endpoints: the verdicts of docs/results.md's Protocol", "",
           f"Written by `python -m benchmarks.results.claims --primary {root}`. Seeds {PRIMARY_SEEDS[0]}–{PRIMARY_SEEDS[-1]} "
           f"(the unit); a − b with its 95% t-interval over seeds (Welch–Satterthwaite df; paired rows: the t over "
           "per-seed differences, n − 1 df), d: Cohen's d (a − b over the pooled SD of the two arms), p: two-sided "
           "(Welch, or paired t). Holm p: adjusted across the primary family. Verdict: a direction only where the "
           "Holm p is below 0.05 and the interval excludes 0. Claim 2's arms are multiples of copy-x0's error on the "
           "same cell.", "", "## Primary", ""]
    def row(e: Endpoint, est: Estimate) -> str:
        digits = stats.digits(e.metric) if not e.a.relative_to else 2
        return (f"| {e.claim} | {e.name} | {e.a.name} | {e.b.name} | {est.n_a}, {est.n_b} | {num(est.mean_a, digits)} "
                f"| {num(est.mean_b, digits)} | {num(est.diff, digits)} [{num(est.low, digits)}, "
                f"{num(est.high, digits)}] | {num(est.df, 1)} | {num(est.d)} | {pval(est.p)} |")
    primary = evaluate(root, PRIMARY)
    adjusted = stats.holm([e.p for e in primary])
    out += [head.format(k=PRIMARY_GAP, adj=" Holm p | verdict |"), "|---" * 13 + "|"]
    out += [row(e, est) + f" {pval(adj)} | {verdict(est, adj, e.a.name, e.b.name)} |"
            for e, est, adj in zip(PRIMARY, primary, adjusted, strict=True)]
    secondary = evaluate(root, SECONDARY)
    out += ["", "## Secondary (declared; unadjusted p, no verdict)", "",
            head.format(k=PRIMARY_GAP, adj=""), "|---" * 11 + "|"]
    out += [row(e, est) for e, est in zip(SECONDARY, secondary, strict=True)]
    out += ["", "## Run C, read as declared: does claim 1 depend on the avg-gaussian reading?", "",
            "| cell | primary verdict | mixture − α=0 [95% CI] | reading |", "|---|---|---|---|"]
    for e, est, adj in zip(PRIMARY, primary, adjusted, strict=True):
        for m, mest in zip(SECONDARY, secondary, strict=True):
            if m.a.row == ALPHA100_MIXTURE and (m.a.stage, m.a.dof, m.a.split) == (e.a.stage, e.a.dof, e.a.split):
                said = verdict(est, adj, e.a.name, e.b.name)
                ci = f"{num(mest.diff)} [{num(mest.low)}, {num(mest.high)}]"
                reading = mixture_reading(said == f"{e.a.name} < {e.b.name}", mest)
                out.append(f"| {e.name} | {said} | {ci} | {reading} |")
    out += ["", "## Claim 3, read as declared: does the model place objects on training scenes?", "",
            f"| row (DoF 6, train, k = {PRIMARY_GAP}) | position error [95% CI] | {FLOOR.label} | reading |",
            "|---|---|---|---|"]
    loaded: dict[str, list[dict]] = {}
    for model in (ALPHA100, ALPHA0, AUTOENCODER):
        values = arm_values(Path(root), Arm("train", STAGES["B"], 6, "train", model), PRIMARY_GAP, "position_error_px",
                            loaded)
        floor = seed_values(loaded[STAGES["B"]], 6, "train", PRIMARY_GAP, FLOOR, "position_error_px").get(None)
        if floor is None:
            raise UserError(f"{FLOOR.label} was not scored on the train split of {Path(root) / STAGES['B']}; "
                            "run its stage with --score-train")
        mean, low, high = stats.mean_interval(list(values.values()))
        out.append(f"| {model.label} | {num(mean)} [{num(low)}, {num(high)}] | {num(floor)} | "
                   f"{floor_reading(high, floor)} |")
    return "\n".join(out)


FLOOR = Row("mean-frame")  # the hedge that ignores its input: the level of a model that places nothing


def floor_reading(high: float, floor: float) -> str:
    """The Protocol's reading of claim 3's train cell: below the mean-frame hedge (the interval's top under its
    value) the model places objects on training scenes; otherwise it fails on every split."""
    return ("places objects on training scenes" if high < floor
            else "not below the mean-frame hedge: a reconstruction failure on every split")


def mixture_reading(supported: bool, mixture: Estimate) -> str:
    """The Protocol's reading of run C on a claim-1 cell: only where the primary endpoint supports the claim does the
    mixture's interval (mixture alpha = 100 - alpha = 0) say whether the support needs the avg-gaussian form."""
    if not supported:
        return "primary not supported: nothing to qualify"
    return "does not depend on the reading" if mixture.high < 0 else "holds for the avg-gaussian reading only"


@dataclass(frozen=True)
class ClaimsConfig:
    """What `python -m benchmarks.results.claims` writes from which run folders."""

    folders: tuple[str, ...]  # run-benchmark output folders (their results.json)
    out: str | None = None  # write the markdown here instead of printing it
    by_width: bool = False  # the folders are one alpha-VAE width each: compare the widths (width_markdown)
    figure: str | None = None  # with --by-width: also draw the width curve (width_figure) to this png
    primary: bool = False  # the one folder is the results root (docs/results): its declared endpoints; < 5 seeds: exit 2

    def __post_init__(self):
        if not self.folders:
            raise UserError("give the run folders to read (e.g. docs/results/main)")
        if self.figure and not self.by_width:
            raise UserError("--figure draws the width curve; pass it with --by-width")
        if self.primary and (self.by_width or len(self.folders) != 1):
            raise UserError("--primary reads one results root (e.g. docs/results), without --by-width")


def claims_markdown(config: ClaimsConfig) -> str:
    """The markdown `config` asks for (and, with --figure, the width curve drawn)."""
    folders = list(config.folders)
    if config.primary:
        return primary_markdown(folders[0])
    if config.by_width:
        records = load_widths(folders)
        text = width_markdown(records, folders, load_triplets(folders, with_width))
        if config.figure:
            width_figure(records, config.figure)
        return text
    return markdown(load(folders), folders, load_triplets(folders))


OPTIONS = DataclassOptions()
OPTIONS.add(ClaimsConfig, "claims", skip=("folders",))


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("folders", nargs=-1, required=True)
def main(folders, **options):
    """The numbers behind docs/results.md's claims, from run folders (FOLDERS: their results.json).

    Example: python -m benchmarks.results.claims docs/results/main docs/results/kl-ablation --out docs/results/claims.md
    """
    with user_errors():
        config = ClaimsConfig(folders=folders, **OPTIONS.values(options).get("claims", {}))
        text = claims_markdown(config)
    if config.out:
        write_text_atomic(Path(config.out), text + "\n")
    else:
        click.echo(text)


OPTIONS.extend(main)

if __name__ == "__main__":
    main(prog_name="python -m benchmarks.results.claims")
