"""Write a benchmark's output folder: results.json/csv/md, config.json and the figures (matplotlib)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import platform
import sys
import textwrap
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.results import stats  # noqa: E402
from benchmarks.results.stats import REFERENCE_MARK, Row  # noqa: E402
from benchmarks.scoring.examples import HEADLINE_TAU, TRIPLET_KEYS, TRIPLET_ROW  # noqa: E402
from benchmarks.scoring.metrics import METRIC_NAMES, PSNR_CAP_DB, TABLE_METRIC_NAMES  # noqa: E402
from ibdata.h5format import sha256_file  # noqa: E402
from ibutil.errors import UserError  # noqa: E402
from ibutil.io import atomic_path  # noqa: E402
from ibutil.run import RECORD_KEYS as TRAIN_RECORD_KEYS  # noqa: E402

# sharpness, then the pose and the position metrics
NEW_METRICS = tuple(dict.fromkeys(n for names in TABLE_METRIC_NAMES.values() for n in names))
# A record: what it scores, its metrics, then its model's training summary (ibutil.run's fields) and lr_trials.
# "reference": the mark of a shipped reference model's rows (None for the rows trained here).
RECORD_KEYS = ("dof", "split", "method", "alpha", "kl", "gap", "tau", "well_posed", "seed", *METRIC_NAMES, *NEW_METRICS,
               "n_triplets", *TRAIN_RECORD_KEYS, "lr_trials", "reference")
PATH_KEYS = ("dof", "split", "method", "alpha", "kl", "gap", "well_posed", "seed", "smoothness", "n_paths",
             "n_undefined", "reference")
DIAGNOSTIC_SPLITS = ("train",)  # scored on request (--score-train), never a headline: a table of their own
DIAGNOSTIC_METRICS = ("mse", "table", "table3")
# The tables of each subset, in order: per DoF, the pose (1, 2) or position (6) metrics replace "table".
HEADLINE_METRICS = ("mse", "ssim", "table", "table2", "table3", "sharpness", "psnr", "iou", "centroid_error")
AMBIGUOUS_METRICS = ("mse", "ssim", "table", "sharpness")
METRIC_TITLES = {"mse": "MSE (lower is better)", "psnr": f"PSNR dB (higher; capped at {PSNR_CAP_DB:g})",
                 "ssim": "SSIM (higher)", "iou": "silhouette IoU (higher)",
                 "centroid_error": "centroid error px (lower)",
                 "sharpness": "sharpness: gradient energy / the truth's (1 = as sharp; < 1 blurred)",
                 "pose_error_deg": "pose error, degrees (geodesic; lower)",
                 "nn_distance": "nn_distance to the pose table (cosine; lower = on the image manifold)",
                 "position_error_px": "position error px (per object, earth mover's; lower)",
                 "position_found": "share of objects found (higher)",
                 "placement_error_px": "placement error px (colour-blind: all lit mass against all objects; lower)"}
PACKAGES = ("inbetween-bench", "torch", "numpy", "h5py", "opencv-python-headless", "scikit-image", "pyrender2",
            "trimesh", "PyOpenGL", "matplotlib")


def table_metric(dof: int, slot: str) -> str | None:
    """The metric behind a "table"/"table2"/"table3" slot of HEADLINE_METRICS for this DoF (None: no such metric)."""
    names = TABLE_METRIC_NAMES.get(dof, ())
    slots = {slot: names[i] if len(names) > i else None for i, slot in enumerate(("table", "table2", "table3"), 1)}
    return slots.get(slot, slot)


def side_by_side(records: list[dict], ceiling: list[dict] | None, dof: int, metric: str, splits: list[str],
                 well_posed: bool, tau: float | None = HEADLINE_TAU) -> list[str]:
    """A markdown table: one row per method, one column per (split, gap) scored, the splits side by side, each cell
    mean ± SD over seeds; the true frame's row under it when `ceiling` is given. [] when no record has the metric."""
    per = {sp: stats.cells(records, dof, metric, sp, tau, well_posed) for sp in splits}
    rows = list(dict.fromkeys(row for sp in splits for row, _ in per[sp]))
    cols = [(sp, g) for sp in splits for g in stats.gaps_of(per[sp])]
    if not rows:
        return []
    body = [(row.label, [per[sp][(row, g)].text(n=False) if (row, g) in per[sp] else stats.MISSING for sp, g in cols])
            for row in rows]
    if ceiling is not None:
        ceil = {(c["split"], c["gap"]): c[metric] for c in ceiling if c["dof"] == dof and c["tau"] == HEADLINE_TAU
                and c.get("well_posed", True) == well_posed and c.get(metric) is not None}
        body.append(("*true frame (ceiling)*", [stats.fmt(metric, ceil[c]) if c in ceil else stats.MISSING
                                                for c in cols]))
    return stats.grid(cols, body)


def table_line(info: dict | None, dof: int) -> str:
    """One line on the reference table behind the pose or position metrics of a DoF."""
    if info is None:
        return ("No reference table (the file has no render config written by render-dataset): pose and position "
                "metrics are absent.")
    if info["kind"] == "object-templates":
        return f"Position metrics: {info['frames']} object templates (one per object, supersampled)."
    coarse = info["step_deg"] > info["default_step_deg"]
    return (f"Pose metrics: nearest neighbour in a pose table every {info['step_deg']:g}° ({info['frames']:,} frames)"
            + (f", **coarser than the default {info['default_step_deg']:g}° (this profile's setting): pose errors "
               f"are resolved to about ±{info['step_deg'] / 2:g}° per axis only**" if coarse else "") + ".")


def markdown(config, result, references: list[dict] = ()) -> str:
    """results.md: per DoF, the well-posed headline tables (splits side by side, tau = 0.5), path smoothness,
    the ambiguous tables where ambiguous triplets exist, then compute and figures. `references`: the runs whose
    rows (in result.records, marked) stand beside the new ones (references_for)."""
    seeds = len({r["seed"] for r in result.records if r.get("seed") is not None and not r.get("reference")}) or 1
    lines = ["# Benchmark results", "",
             f"Mean ± standard deviation over {seeds} seed(s) for seeded methods (the others have one value). "
             "Each table scores the middle frame (tau = 0.5) of every window (t-k, t+k) of every sequence of a split; "
             "the `test` and `heldout` protocols stand side by side (columns `test k=…`, `heldout k=…`; heldout "
             "scores only windows whose middle frame lies in the held-out region). The headline tables hold the "
             "**well-posed** triplets (the target's factors equal the interpolation of the ends' factors within "
             "ibdata.tasks.TOLERANCES); ambiguous triplets get their own tables where there are any. copy-x0 and "
             "mean-frame are hedges: what a prediction that does not in-between earns. results.json holds every "
             "tau and both subsets. See docs/benchmark.md for the protocol and the metrics.", ""]
    for name, reason in result.skipped.items():
        lines += [f"**Skipped:** {reason}", ""]
    lines += reference_models_section(result)
    for ref in references:
        lines += [f"**Reference rows** (marked `{REFERENCE_MARK} {ref['name']}]`): the committed records of `{ref['run']}`, "
                  f"scored on byte-identical datasets (dof {', '.join(map(str, ref['dofs']))}: the same sha256). "
                  "They are read from that run, not recomputed; their splits, gaps and tau are those scored here.", ""]
    for dof in sorted(result.datasets):
        info = result.datasets[dof]
        splits = stats.splits_of(result.records, dof, leave_out=DIAGNOSTIC_SPLITS)
        lines += [f"## DoF {dof}", "", f"Data: `{info['file']}` (sha256 `{info['sha256'][:16]}…`). "
                  + table_line(result.tables.get(dof), dof), ""]
        counts = []
        for sp in splits:
            n = {}
            for c in result.ceiling:
                if c["dof"] == dof and c["split"] == sp and c["tau"] == HEADLINE_TAU:
                    n.setdefault(c["gap"], [0, 0])[0 if c.get("well_posed", True) else 1] += c["n_triplets"]
            counts.append(f"{sp}: " + ", ".join(f"k={g}: {w} well-posed" + (f" + {a} ambiguous" if a else "")
                                                 for g, (w, a) in sorted(n.items())))
        lines += ["Pairs at tau = 0.5: " + "; ".join(counts) + ".", ""]
        lines += ["### Well-posed triplets (headline), tau = 0.5", ""]
        for slot in HEADLINE_METRICS:
            metric = table_metric(dof, slot)
            body = side_by_side(result.records, result.ceiling, dof, metric, splits, True) if metric else []
            lines += [f"#### {METRIC_TITLES[metric]}", "", *body] if body else []
        lines += smoothness_section(result.paths, dof, splits, result.records)
        if any(r["dof"] == dof and r.get("well_posed") is False for r in result.records):
            lines += ["### Ambiguous triplets, tau = 0.5", "",
                      "The target is not the interpolation of its ends (e.g. an object bounced off a border between "
                      "them): no method can know it, and a blur is MSE's best answer. Not a ranking.", ""]
            for slot in AMBIGUOUS_METRICS:
                metric = table_metric(dof, slot)
                body = side_by_side(result.records, result.ceiling, dof, metric, splits, False) if metric else []
                lines += [f"#### {METRIC_TITLES[metric]}", "", *body] if body else []
        lines += diagnostic_section(result, dof)
    lines += compute_table(result.records)
    lines += evaluation_table(result.evaluation, result.records)
    lines += ["## Figures", ""]
    for dof in sorted(result.datasets):
        lines.append(f"![in-betweens dof {dof}](inbetween-dof{dof}.png)")
        lines.append(f"![interpolation paths dof {dof}](interpolation-dof{dof}.png)")
    lines += ["![MSE against gap](mse-vs-gap.png)"]
    if several_taus(result.records):
        lines.append("![error against tau](error-vs-tau.png)")
    if result.curves:
        lines.append("![training curves](training-curves.png)")
    if result.wall_s > 0:
        lines += ["", f"Wall time of this command: {result.wall_s / 60:.1f} min (models and evaluations found in the "
                      "cache are reused, not re-timed).", ""]
    else:
        lines += ["", "Built by --aggregate from job outputs in the cache: the jobs' wall times are not known here.", ""]
    return "\n".join(lines)


def reference_models_section(result) -> list[str]:
    """What the rows marked `[ref model RUN sSEED]` are: shipped trained models scored here (one line each, with
    the command that trained them), and the shipped models left out with why."""
    shown = [m for m in result.reference_models if m["dof"] in result.datasets]
    if not shown and not result.reference_models_left_out:
        return []
    lines = ["**Reference models** (rows marked `[ref model RUN sSEED]`): trained checkpoints from `--reference-models` "
             "(under --demo the repository's `reference/models/`), loaded and scored by the same code as the rows "
             "trained here, not trained by this run. Each trained on a dataset with the render identity of the one "
             "scored here (same DoF, seed, protocol, object, image size and supersampling; its sequence counts "
             "and lengths may differ, and its train sequences are never the scored ones).", ""]
    for m in shown:
        steps = f"selected step {m.get('selected_step')} of {m.get('steps')}" if m.get("steps") else "steps unknown"
        lines.append(f"- `{m['name']}` (dof {m['dof']}, seed {m['seed']}; {steps}; from `{m['run']}`): "
                     f"`{m['command']}`")
    lines += [f"- {line}" for line in result.reference_models_left_out]
    return lines + [""]


def several_taus(records: list[dict]) -> bool:
    """Whether the records score more than one tau (not so under --no-all-taus): only then is there a tau curve."""
    return len({r.get("tau") for r in records}) > 1


def diagnostic_section(result, dof: int) -> list[str]:
    """The train split's tables (--score-train): what a method does on the frames it learned from. Not a headline."""
    found = [sp for sp in DIAGNOSTIC_SPLITS if any(r["dof"] == dof and r["split"] == sp for r in result.records)]
    lines = []
    for sp in found:
        lines += [f"### Diagnostic: the {sp} split (not a headline), well-posed triplets, tau = 0.5", "",
                  "The frames the learned methods trained on: far better here than on test means they reconstruct "
                  "their training data but do not generalise.", ""]
        for slot in DIAGNOSTIC_METRICS:
            metric = table_metric(dof, slot)
            body = side_by_side(result.records, result.ceiling, dof, metric, [sp], True) if metric else []
            lines += [f"#### {METRIC_TITLES[metric]}", "", *body] if body else []
    return lines


def smoothness_section(paths: list[dict], dof: int, splits: list[str], records: list[dict]) -> list[str]:
    """ACAI's smoothness of the recovered poses along each path (dof 1, 2); what stands in for it on dof 6."""
    if dof == 6:
        return ["### Smoothness along the tau path", "",
                "Not computed for DoF 6: the position metric measures how far the predicted pixels lie from the "
                "truth, it does not recover a position, so there is no path of recovered positions to score."
                + (" error-vs-tau.png shows how evenly each method's position error runs along tau."
                   if several_taus(records) else ""), ""]
    body = side_by_side(paths, None, dof, "smoothness", splits, True, tau=None)
    if not body:
        return []
    return ["### Smoothness along the tau path (well-posed paths)", "",
            "ACAI's score on the recovered poses of the 2k-1 predicted frames between the true end poses: "
            "max step / end-to-end angle − 1/(2k), geodesic; 0 = evenly spaced, 1 − 1/(2k) = stand still then jump "
            "(copy-x0). Mean over paths whose ends differ in pose. The true frames' row is the table's floor.", "",
            *body]


def trained_models(records: list[dict]) -> dict[tuple, dict]:
    """(dof, label, seed) -> the first record of each model the run trained or loaded (records with params): the
    compute table's rows, and the training time the evaluation table sets against."""
    seen: dict[tuple, dict] = {}
    for r in records:
        if r.get("params") is not None:
            seen.setdefault((r["dof"], Row.of(r).label, r["seed"]), r)
    return seen


def compute_table(records: list[dict]) -> list[str]:
    """Markdown lines: each trained model's parameters, training time, FLOPs, selected step and lr (first DoF seen)."""
    seen = trained_models(records)
    if not seen:
        return []

    def show(v):
        return "–" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))

    lines = ["## Compute", "", "Per trained model (train split only; `–`: not counted yet).", "",
             "| dof | method | seed | params | train s | train FLOPs | selected step | lr | dtype |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (dof, label, seed), r in seen.items():
        lines.append(f"| {dof} | {label} | {show(seed)} | {show(r['params'])} | {show(r['train_seconds'])} | "
                     f"{show(r['train_flops'])} | {show(r['selected_step'])} | {show(r['lr'])} | {show(r.get('dtype'))} |")
    return lines + [""]


def evaluation_table(evaluation: dict[int, dict], records: list[dict]) -> list[str]:
    """Markdown lines: each DoF's evaluation wall time (the eval job, its table and rows) beside the training time of
    the rows it scored, then each row's. `evaluation`: RunResult.evaluation; `records` give the training seconds."""
    if not evaluation:
        return []
    trained = trained_models(records)  # one record per model, as in compute_table
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b > 0 else "–"

    lines = ["Evaluation wall time per DoF (seconds): the eval job (loading the models and the reference table, then "
             "scoring every row on every split, gap and tau), measured when it ran (a cached evaluation keeps the time "
             "of the run that made it). `table`: loading the reference table, or rendering it on its first use (then "
             "cached for every later run); `shared`: what the rows share (the ceiling, the targets' share of every "
             "metric, path smoothness, the figures); `train`: the summed training time of the models above, for this "
             "DoF (only the selected learning rate's, under --lr-trials).", "",
             "| dof | eval job | table | shared | rows | train | eval / train | eval without table / train |",
             "|---|---|---|---|---|---|---|---|"]
    for dof, t in sorted(evaluation.items()):
        rows_s = sum(r["seconds"] for r in t["rows"])
        train = sum(float(r.get("train_seconds") or 0.0) for (d, _, _), r in trained.items() if d == dof)
        job, table = t.get("job_seconds", t["seconds"]), t.get("table_seconds", 0.0)
        lines.append(f"| {dof} | {job:.3g} | {table:.3g} | {t['seconds'] - rows_s:.3g} | {rows_s:.3g} | {train:.3g} | "
                     f"{ratio(job, train)} | {ratio(job - table, train)} |")
    lines += ["", "| dof | row | seed | eval s | frames scored | ms per frame |", "|---|---|---|---|---|---|"]
    for dof, t in sorted(evaluation.items()):
        for r in t["rows"]:
            seed = "–" if r.get("seed") is None else r["seed"]
            lines.append(f"| {dof} | {Row.of(r).label} | {seed} | {r['seconds']:.3g} | {r['frames']} | "
                         f"{ratio(r['seconds'] * 1e3, r['frames'])} |")
    return lines + [""]


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
           "cpu_count": str(os.cpu_count())}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


# ----------------------------------------------------------------------------- figures


def _img(x: np.ndarray) -> np.ndarray:
    return np.clip(np.transpose(x, (1, 2, 0)), 0, 1)  # (3, H, W) -> (H, W, 3)


def figure_grid(rows: dict[str, np.ndarray], title: str, path: Path) -> None:
    """A grid: one row per label, one column per example; (n, 3, H, W) in [0, 1] per row."""
    n_rows, n_cols = len(rows), max(len(v) for v in rows.values())
    # Long labels (`... [ref model RUN sSEED]`) wrap at 26 characters, and the label column widens to the longest
    # line, so the image panels keep their size and the title keeps its own band above them.
    labels = [textwrap.fill(label, 26, break_on_hyphens=False) for label in rows]
    label_in = 0.4 + 0.065 * max(len(line) for label in labels for line in label.splitlines())
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.1 * n_cols + label_in, 1.1 * n_rows + 0.4), squeeze=False)
    for i, (label, imgs) in zip(range(n_rows), zip(labels, rows.values())):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            if j < len(imgs):
                ax.imshow(_img(imgs[j]), interpolation="nearest")
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # the title keeps its 0.3 in band at any height
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_mse_vs_gap(records: list[dict], dofs: list[int], path: Path) -> None:
    fig, axes = plt.subplots(1, len(dofs), figsize=(4.6 * len(dofs), 3.6), squeeze=False)
    for ax, dof in zip(axes[0], dofs):
        cells = stats.cells(records, dof, "mse")
        gaps = stats.gaps_of(cells)
        for row in dict.fromkeys(row for row, _ in cells):
            g = [k for k in gaps if (row, k) in cells]
            ax.errorbar(g, [cells[(row, k)].mean for k in g], yerr=[cells[(row, k)].sd for k in g], marker="o",
                        capsize=3, label=row.label)
        ax.set_title(f"DoF {dof}")
        ax.set_xlabel("gap k (frames)")
        ax.set_ylabel("MSE")
        ax.set_xticks(gaps)
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_error_vs_tau(records: list[dict], dofs: list[int], path: Path) -> None:
    """Error against tau at the largest gap (test split, well-posed triplets): MSE (log) on top, the pose (DoF 1, 2)
    or position (DoF 6) error below, one column per DoF, one line per method; the legend beside the panels."""
    fig, axes = plt.subplots(2, len(dofs), figsize=(4.2 * len(dofs) + 2.6, 6.6), squeeze=False)
    styles = [dict(color=plt.cm.tab10(i % 10), ls=("-", "--", ":")[i // 10 % 3]) for i in range(30)]
    handles: dict[str, Any] = {}
    order: list[str] = []
    for col, dof in enumerate(dofs):
        mine = [r for r in records if r["dof"] == dof and r["split"] == "test" and r.get("well_posed", True)]
        if not mine:
            continue
        k = max(r["gap"] for r in mine)
        second = table_metric(dof, "table")
        for row, metric in enumerate(("mse", second)):
            ax = axes[row, col]
            curves: dict[str, dict[float, list[float]]] = {}
            for r in (r for r in mine if r["gap"] == k and metric and r.get(metric) is not None):
                curves.setdefault(Row.of(r).label, {}).setdefault(r["tau"], []).append(r[metric])
            for label, by_tau in curves.items():
                if label not in order:
                    order.append(label)
                taus = sorted(by_tau)
                line, = ax.plot(taus, [np.mean(by_tau[t]) for t in taus], marker=".", markersize=4, lw=1.2,
                                **styles[order.index(label) % len(styles)])
                handles.setdefault(label, line)
            ax.set_title(f"DoF {dof}, gap {k}: {'MSE' if row == 0 else (metric or '')}", fontsize=9)
            ax.set_xlabel("tau (0 = x(t-k), 1 = x(t+k))", fontsize=8)
            ax.set_ylabel({"mse": "MSE", "pose_error_deg": "pose error (deg)",
                           "position_error_px": "position error (px)"}.get(metric, metric or ""), fontsize=8)
            if metric == "mse" and ax.lines:
                ax.set_yscale("log")  # hedges and untrained rows sit decades above the good methods
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    fig.legend([handles[label] for label in order], order, loc="center right", fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 2.4 / (4.2 * len(dofs) + 2.6), 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_curves(curves: dict[str, str], path: Path) -> None:
    """Training curves of every seed-0 trained model (from its log.csv), one column per DoF.

    Every learned method writes one log format (ibutil.run.TrainRun): step and the mean training loss
    of each block of steps. Top row: the alpha-VAE's (nats per triplet, train and, dashed, its val.csv
    evaluations: val loss, or test loss where it scored test instead). Bottom row: the other learned
    methods' (frame CNN: MSE; autoencoder and ACAI: reconstruction nats per triplet).
    """
    logs = {label: _read_log(log) for label, log in curves.items()}
    logs = {label: rows for label, rows in logs.items() if rows}
    if not logs:
        return
    dofs = sorted({label.split()[0] for label in logs}, key=lambda d: int(d[3:]))
    others = any(" alpha-vae" not in label for label in logs)
    fig, axes = plt.subplots(1 + others, len(dofs), figsize=(4.6 * len(dofs), 3.6 * (1 + others)), squeeze=False)
    for col, dof in enumerate(dofs):
        top, bottom = axes[0][col], axes[-1][col]
        for label, rows in logs.items():
            if not label.startswith(dof + " "):
                continue
            name = label[len(dof) + 1:]
            ax = top if name.startswith("alpha-vae") else bottom
            line, = ax.plot([int(r["step"]) for r in rows], [float(r["train_loss"]) for r in rows], marker=".",
                            markersize=3, label=name + (" train" if ax is top else ""))
            val = _read_log(str(Path(curves[label]).with_name("val.csv"))) if ax is top else []
            column = next((c for c in ("val_loss", "test_loss") if val and c in val[0]), None)
            if column:
                top.plot([int(r["step"]) for r in val], [float(r[column]) for r in val], ls="--",
                         color=line.get_color(), label="  " + column.split("_")[0])
        top.set_title(f"{dof}: alpha-VAE loss per triplet")
        if others:
            bottom.set_title(f"{dof}: training loss per step")
        for ax in {top, bottom}:
            ax.set_xlabel("step")
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _read_log(log: str | None) -> list[dict[str, str]]:
    """The rows of a training log.csv, or [] where there is none (e.g. a model cached before logs existed)."""
    if log is None or not Path(log).exists():
        return []
    with open(log) as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- the terminal summary


SUMMARY_METRICS = {"pose_error_deg": ("pose error", "°"), "position_error_px": ("position error", " px"), "mse": ("MSE", "")}


def summary_lines(records: list[dict], out: Path, mine: str | tuple[str, ...] = ()) -> list[str]:
    """The run in a few terminal lines: a header, one line per DoF (its place metric, pose or position error,
    at the smallest gap on the test split's well-posed middle frames: the best row, pixel averaging and every
    alpha-VAE row with its SSIM; with `mine` (a row label or several: the user's own rows), those rows and their
    rank among all rows, reference rows included, beside the best),
    where the tables are, and the figure to open first."""
    mine = (mine,) if isinstance(mine, str) else tuple(mine)
    dofs = sorted({r["dof"] for r in records})
    lines = ["Summary: test split, well-posed triplets, tau = 0.5, smallest gap; means over seeds."]
    for dof in dofs:
        metric = table_metric(dof, "table")
        if not any(r.get(metric) is not None for r in records if r["dof"] == dof):
            metric = "mse"  # a file without a reference table: no place metric
        place, ssim = stats.cells(records, dof, metric), stats.cells(records, dof, "ssim")
        if not place:
            continue
        k = stats.gaps_of(place)[0]
        rows = [row for row in dict.fromkeys(row for row, _ in place) if (row, k) in place]
        value = {row.label: place[(row, k)].mean for row in rows}
        ssim = {row.label: ssim[(row, k)].mean for row in rows
                if row.method.startswith("alpha-vae") and (row, k) in ssim}
        best = min(value, key=value.get)
        shown = dict.fromkeys([best, *(row.label for row in rows if row == Row("pixel-average")
                                       or row.method.startswith("alpha-vae"))])
        if mine:
            shown = dict.fromkeys(label for label in (*mine, best) if label in value)
        rank = {label: 1 + sum(v < value[label] for v in value.values()) for label in value}
        name, unit = SUMMARY_METRICS[metric]
        cells = [f"{label} {stats.fmt(metric, value[label])}{unit}"
                 + (f" (SSIM {ssim[label]:.2f})" if label in ssim else "")
                 + (f" (rank {rank[label]} of {len(value)} rows)" if label in mine else "")
                 + (" [best]" if label == best else "") for label in shown]
        lines.append(f"dof {dof}, k={k}, {name}: " + "; ".join(cells))
    lines.append(f"Tables (test and heldout, every metric, gap and seed count): {out}/results.md")
    if dofs:
        lines.append(f"Open {out}/inbetween-dof{dofs[-1]}.png first: every method's in-betweens beside the true frame.")
    return lines



def write_triplets(triplets: list[dict[str, Any]], path: Path) -> None:
    """triplets.csv.gz: one line per (row, split, gap, target frame (s, t)) at tau 0.5, the scoring's per-triplet
    metrics (the columns after TRIPLET_KEYS, empty where a row lacks one). Gzip without a timestamp, so the
    same results give the same bytes."""
    metric_cols = list(dict.fromkeys(k for tr in triplets for k in tr if k not in TRIPLET_KEYS))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([*TRIPLET_KEYS, *metric_cols])
    for tr in triplets:
        fixed = [("" if tr.get(k) is None else tr[k]) for k in ("dof", "split", "gap", *TRIPLET_ROW)]
        cols = [tr["s"], tr["t"], np.asarray(tr["well_posed"]).astype(int)] + \
            [tr.get(m, np.full(len(tr["s"]), np.nan)) for m in metric_cols]
        for values in zip(*cols):
            writer.writerow(fixed + [int(values[0]), int(values[1]), int(values[2])] +
                            ["" if np.isnan(v) else f"{v:.6g}" for v in values[3:]])
    with open(path, "wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
        gz.write(text.getvalue().encode())


# ----------------------------------------------------------------------------- reference runs


def read_references(runs) -> list[dict]:
    """Each committed run folder's results.json and config.json: {"run", "name", "doc", "config"}; UserError
    naming a folder that is not a run-benchmark (or score-predictions) output."""
    out = []
    for run in runs:
        folder = Path(run)
        try:
            doc = json.loads((folder / "results.json").read_text())
            datasets, records = doc["datasets"], doc["records"]
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"--reference {run} is not a results folder (no readable results.json with datasets and "
                            "records); give a run-benchmark output folder such as docs/results/grid") from None
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            config = {}
        out.append({"run": str(run), "name": folder.resolve().name, "doc": doc, "config": config})
    names = [ref["name"] for ref in out]
    for ref in out:  # two folders of the same name (a/grid, b/grid) are told apart by their paths
        if names.count(ref["name"]) > 1:
            ref["name"] = ref["run"].rstrip("/")
    return out


class OtherDataset(UserError):
    """A reference run scored other bytes for a DoF than this run (same_data). How to get its file depends on how
    that run made it, which the engine's profiles know and the results do not: the commands end the message with
    it (benchmarks.cli.reference_remedy)."""

    def __init__(self, ref: dict, dof: int, message: str):
        super().__init__(message)
        self.ref, self.dof = ref, dof  # the reference (read_references) and the DoF whose bytes differ


def same_data(ref: dict, datasets: dict[int, dict]) -> list[int]:
    """The DoFs of `datasets` (dof -> {"file", "sha256"}) that the reference run (read_references) scored too;
    OtherDataset naming the DoF where the bytes differ."""
    theirs = ref["doc"]["datasets"]
    common = [dof for dof in sorted(datasets) if str(dof) in theirs]
    for dof in common:
        mine, other = datasets[dof], theirs[str(dof)]
        if mine["sha256"] != other["sha256"]:
            raise OtherDataset(ref, dof, f"--reference {ref['run']}: its dof {dof} dataset is not the file scored "
                                         f"here ({mine['file']}: sha256 {mine['sha256'][:12]}…, theirs "
                                         f"{other['sha256'][:12]}…)")
    return common


def check_reference_data(runs, files: dict[int, Path]) -> None:
    """Before any work: the reference folders are readable and the dataset files present now (dof -> path; a
    file not rendered yet is checked when the run is written) are byte-identical to theirs (same_data)."""
    refs = read_references(runs)
    if not refs:
        return
    datasets = {dof: {"file": str(p), "sha256": sha256_file(p)} for dof, p in files.items() if Path(p).is_file()}
    for ref in refs:
        same_data(ref, datasets)


def references_for(runs, datasets: dict[int, dict], tables: dict[int, dict | None], records: list[dict],
                   paths: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """The reference runs and their records and path records to show beside this run's.

    Only DoFs whose dataset is byte-identical (the sha256 each run records) are compared, at the
    splits, gaps and taus scored here; a DoF scored in both on different bytes, or on a coarser or finer
    pose table, is a UserError that says how to get the reference data or table. Each record gets
    "reference": the run's name (its Row's label marks it).
    """
    refs, ref_records, ref_paths = [], [], []
    for ref in read_references(runs):
        common = same_data(ref, datasets)
        if not common:
            raise UserError(f"--reference {ref['run']} scored dof {', '.join(ref['doc']['datasets'])}, this run dof "
                            f"{', '.join(map(str, sorted(datasets)))}: no dataset to compare on")
        for dof in common:
            theirs_step = ((ref["doc"].get("tables") or {}).get(str(dof)) or {}).get("step_deg")
            mine_step = (tables.get(dof) or {}).get("step_deg")
            if theirs_step is not None and mine_step is not None and theirs_step != mine_step:
                raise UserError(f"--reference {ref['run']} resolved dof {dof} poses on a {theirs_step:g}° table, this "
                                f"run on a {mine_step:g}° one; pass --table-step-deg {theirs_step:g} so that pose errors "
                                "compare")
        scored = {(r["dof"], r["split"], r["gap"], r.get("tau")) for r in records}
        # A reference run's own reference-model rows are not its rows: left out.
        ref_records += [r | {"reference": ref["name"]} for r in ref["doc"]["records"] if not r.get("reference")
                        and (r["dof"], r.get("split", "test"), r["gap"], r.get("tau", HEADLINE_TAU)) in scored]
        scored_paths = {(p["dof"], p["split"], p["gap"]) for p in paths}
        ref_paths += [p | {"reference": ref["name"]} for p in ref["doc"].get("paths", [])
                      if not p.get("reference") and (p["dof"], p["split"], p["gap"]) in scored_paths]
        refs.append({"run": ref["run"], "name": ref["name"], "dofs": common})
    return refs, ref_records, ref_paths


def records_with_references(folder: Path) -> list[dict]:
    """An output folder's records and, marked, those of the reference runs it was written with."""
    doc = json.loads((Path(folder) / "results.json").read_text())
    refs = [ref["run"] for ref in doc.get("references", [])]
    _, ref_records, _ = references_for(refs, {int(d): v for d, v in doc["datasets"].items()},
                                       {int(d): v for d, v in doc["tables"].items()}, doc["records"], doc["paths"])
    return [*doc["records"], *ref_records]


# ----------------------------------------------------------------------------- the folder


def write_output(config, result, out: Path) -> Path:
    """Write everything into a temporary sibling folder, then rename it to `out` (ibutil.io.atomic_path).

    config.reference (run folders) puts those runs' records beside this run's in every table and figure
    (references_for); report.html shows the lot in one self-contained page.
    """
    from benchmarks.results import html_report

    refs, ref_records, ref_paths = references_for(getattr(config, "reference", ()), result.datasets, result.tables,
                                                  result.records, result.paths)
    shown = replace(result, records=[*result.records, *ref_records], paths=[*result.paths, *ref_paths])
    with atomic_path(out) as tmp:
        tmp.mkdir()
        records = [{k: r.get(k) for k in RECORD_KEYS} for r in result.records]
        doc = {"datasets": {str(d): v for d, v in sorted(result.datasets.items())}, "records": records,
               "ceiling": result.ceiling, "paths": [{k: p.get(k) for k in PATH_KEYS} for p in result.paths],
               "tables": {str(d): v for d, v in sorted(result.tables.items())}, "skipped": result.skipped,
               "references": refs,
               "reference_models": [m for m in result.reference_models if m["dof"] in result.datasets],
               "evaluation": {str(d): v for d, v in sorted(result.evaluation.items())}}
        (tmp / "results.json").write_text(json.dumps(doc, indent=1))
        with open(tmp / "results.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=RECORD_KEYS)
            writer.writeheader()
            writer.writerows(records)
        if result.triplets:
            write_triplets(result.triplets, tmp / "triplets.csv.gz")
        (tmp / "results.md").write_text(markdown(config, shown, refs))
        cfg = asdict(config) | {"versions": versions(), "wall_s": round(result.wall_s, 1),
                                "command": " ".join(sys.argv), "skipped": result.skipped}
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1, default=str))
        dofs = sorted(result.datasets)
        gap = max(r["gap"] for r in result.records)  # the figures' gap (examples.pick_figures): the largest scored
        for dof in dofs:
            figure_grid(result.examples[dof], f"DoF {dof}: in-betweens at gap {gap} (test set)",
                        tmp / f"inbetween-dof{dof}.png")
            figure_grid(result.strips[dof], f"DoF {dof}: every method from x(t-{gap}) to x(t+{gap}), tau = 0..1",
                        tmp / f"interpolation-dof{dof}.png")
        both = [{k: r.get(k) for k in RECORD_KEYS} for r in shown.records]
        headline = [r for r in both if r["split"] == "test" and r["tau"] == HEADLINE_TAU and r["well_posed"]]
        figure_mse_vs_gap(headline, dofs, tmp / "mse-vs-gap.png")
        if several_taus(records):
            figure_error_vs_tau(both, dofs, tmp / "error-vs-tau.png")
        if result.curves:
            figure_curves(result.curves, tmp / "training-curves.png")
        grids = [(f"{ref['name']}: dof {dof} in-betweens", Path(ref["run"]) / f"inbetween-dof{dof}.png")
                 for ref in refs for dof in ref["dofs"] if (Path(ref["run"]) / f"inbetween-dof{dof}.png").is_file()]
        html_report.write_html(tmp, title=f"Benchmark results: {out.name}", extra=grids)
    return out
