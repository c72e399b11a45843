"""Write a benchmark's output folder: results.json/csv/md, config.json and the figures (matplotlib)."""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import sys
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.metrics import METRIC_NAMES, PSNR_CAP_DB  # noqa: E402

RECORD_KEYS = ("dof", "method", "alpha", "kl", "gap", "seed", *METRIC_NAMES, "n_triplets")
METRIC_TITLES = {"mse": "MSE (lower is better)", "psnr": f"PSNR dB (higher; capped at {PSNR_CAP_DB:g})",
                 "ssim": "SSIM (higher)", "iou": "silhouette IoU (higher)",
                 "centroid_error": "centroid error px (lower)"}
PACKAGES = ("inbetween-bench", "torch", "numpy", "h5py", "opencv-python-headless", "scikit-image", "pyrender2",
            "trimesh", "PyOpenGL", "matplotlib")


def method_label(r: dict[str, Any]) -> str:
    """Row label of a record: the method, with alpha and KL form for the alpha-VAE."""
    if r["method"] != "alpha-vae":
        return r["method"]
    return f"alpha-vae α={r['alpha']:g}" + (f" ({r['kl']})" if r["kl"] else "")


def aggregate(records: list[dict], dof: int, metric: str) -> tuple[list[str], list[int], dict]:
    """Rows (method labels, in first-seen order), gaps, and (label, gap) -> (mean, std, n seeds)."""
    rows: list[str] = []
    cells: dict[tuple[str, int], list[float]] = {}
    for r in records:
        if r["dof"] != dof:
            continue
        label = method_label(r)
        if label not in rows:
            rows.append(label)
        cells.setdefault((label, r["gap"]), []).append(r[metric])
    gaps = sorted({g for _, g in cells})
    stats = {key: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
             for key, v in cells.items()}
    return rows, gaps, stats


def _fmt(metric: str, mean: float, std: float, n: int) -> str:
    digits = {"mse": 5, "psnr": 2, "ssim": 4, "iou": 4, "centroid_error": 3}[metric]
    text = f"{mean:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if n > 1 else "")


def markdown(config, result) -> str:
    """results.md: per DoF, methods x gaps tables of every metric (mean ± std over seeds)."""
    lines = ["# Benchmark results", "",
             f"Mean ± standard deviation over {config.seeds} seed(s) for learned methods "
             "(deterministic baselines have one value). Every test triplet (t-k, t, t+k) of every test sequence "
             "counts; see docs/benchmark.md for the metrics.", ""]
    for dof in sorted(result.datasets):
        info = result.datasets[dof]
        lines += [f"## DoF {dof}", "", f"Data: `{info['file']}` (sha256 `{info['sha256'][:16]}…`)", ""]
        for metric in METRIC_NAMES:
            rows, gaps, stats = aggregate(result.records, dof, metric)
            lines += [f"### {METRIC_TITLES[metric]}", "",
                      "| method | " + " | ".join(f"gap {g}" for g in gaps) + " |",
                      "|---|" + "---|" * len(gaps)]
            for label in rows:
                cells = [_fmt(metric, *stats[(label, g)]) if (label, g) in stats else "–" for g in gaps]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            if metric in ("iou", "centroid_error", "ssim"):
                ceil = {c["gap"]: c[metric] for c in result.ceiling if c["dof"] == dof}
                lines.append("| *true x1 (ceiling)* | " + " | ".join(
                    _fmt(metric, ceil[g], 0, 1) if g in ceil else "–" for g in gaps) + " |")
            lines.append("")
        n = {c["gap"]: c["n_triplets"] for c in result.ceiling if c["dof"] == dof}
        lines += ["Test triplets per gap: " + ", ".join(f"{g}: {n[g]}" for g in sorted(n)), ""]
    lines += ["## Figures", ""]
    for dof in sorted(result.datasets):
        lines.append(f"![in-betweens dof {dof}](inbetween-dof{dof}.png)")
        if len(result.strips.get(dof, {})) > 1:
            lines.append(f"![latent interpolation dof {dof}](interpolation-dof{dof}.png)")
    lines += ["![MSE against gap](mse-vs-gap.png)"]
    if result.curves:
        lines.append("![training curves](training-curves.png)")
    lines += ["", f"Wall time of this command: {result.wall_s / 60:.1f} min (models and evaluations found in the cache "
                  "are reused, not re-timed).", ""]
    return "\n".join(lines)


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
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.1 * n_cols + 2.2, 1.1 * n_rows + 0.4), squeeze=False)
    for i, (label, imgs) in enumerate(rows.items()):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            if j < len(imgs):
                ax.imshow(_img(imgs[j]), interpolation="nearest")
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_mse_vs_gap(records: list[dict], dofs: list[int], path: Path) -> None:
    fig, axes = plt.subplots(1, len(dofs), figsize=(4.6 * len(dofs), 3.6), squeeze=False)
    for ax, dof in zip(axes[0], dofs):
        rows, gaps, stats = aggregate(records, dof, "mse")
        for label in rows:
            g = [k for k in gaps if (label, k) in stats]
            mean = np.array([stats[(label, k)][0] for k in g])
            std = np.array([stats[(label, k)][1] for k in g])
            ax.errorbar(g, mean, yerr=std, marker="o", capsize=3, label=label)
        ax.set_title(f"DoF {dof}")
        ax.set_xlabel("gap k (frames)")
        ax.set_ylabel("MSE")
        ax.set_xticks(gaps)
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_curves(curves: dict[str, str], path: Path) -> None:
    """Training curves of every seed-0 learned model (from its log.csv), one column per DoF.

    Top row: alpha-VAE train and test loss (nats per triplet) per epoch. Bottom row, when frame-CNN
    logs exist: its training MSE per step (the mean over each block of steps).
    """
    logs = {label: _read_log(log) for label, log in curves.items()}
    logs = {label: rows for label, rows in logs.items() if rows}
    if not logs:
        return
    dofs = sorted({label.split()[0] for label in logs}, key=lambda d: int(d[3:]))
    cnn = any("epoch" not in rows[0] for rows in logs.values())
    fig, axes = plt.subplots(1 + cnn, len(dofs), figsize=(4.6 * len(dofs), 3.6 * (1 + cnn)), squeeze=False)
    for col, dof in enumerate(dofs):
        top, bottom = axes[0][col], axes[-1][col]
        for label, rows in logs.items():
            if not label.startswith(dof + " "):
                continue
            name = label[len(dof) + 1:]
            if "epoch" in rows[0]:  # an alpha-VAE log (inbetween.train)
                x = [float(r["epoch"]) for r in rows]
                line, = top.plot(x, [float(r["train_loss"]) for r in rows], marker=".", label=name + " train")
                top.plot(x, [float(r["test_loss"]) for r in rows], ls="--", color=line.get_color(), label="  test")
            else:  # a frame-CNN log (benchmarks.frame_cnn)
                bottom.plot([int(r["step"]) for r in rows], [float(r["train_loss"]) for r in rows], marker=".",
                            markersize=3, label=name)
        top.set_title(f"{dof}: alpha-VAE loss per triplet")
        top.set_xlabel("epoch")
        if cnn:
            bottom.set_title(f"{dof}: frame-CNN training MSE")
            bottom.set_xlabel("step")
        for ax in {top, bottom}:
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


# ----------------------------------------------------------------------------- the folder


def write_output(config, result, out: Path) -> Path:
    """Write everything into a temporary sibling folder, then rename it to `out`."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        records = [{k: r.get(k) for k in RECORD_KEYS} for r in result.records]
        doc = {"datasets": {str(d): v for d, v in sorted(result.datasets.items())}, "records": records,
               "ceiling": result.ceiling}
        (tmp / "results.json").write_text(json.dumps(doc, indent=1))
        with open(tmp / "results.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=RECORD_KEYS)
            writer.writeheader()
            writer.writerows(records)
        (tmp / "results.md").write_text(markdown(config, result))
        cfg = asdict(config) | {"versions": versions(), "wall_s": round(result.wall_s, 1),
                                "command": " ".join(sys.argv)}
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1, default=str))
        dofs = sorted(result.datasets)
        for dof in dofs:
            gap = max(config.gaps)
            figure_grid(result.examples[dof], f"DoF {dof}: in-betweens at gap {gap} (test set)",
                        tmp / f"inbetween-dof{dof}.png")
            if len(result.strips.get(dof, {})) > 1:
                figure_grid(result.strips[dof], f"DoF {dof}: decoded latent interpolation between x(t-{gap}) and "
                            f"x(t+{gap})", tmp / f"interpolation-dof{dof}.png")
        figure_mse_vs_gap(records, dofs, tmp / "mse-vs-gap.png")
        if result.curves:
            figure_curves(result.curves, tmp / "training-curves.png")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
