"""Scoring: every method on every evaluation split, gap and intermediate frame of one dataset, plus the figures' inputs.

For gap k the evaluation pairs are the end frames (t-k, t+k) of every window inside every sequence
(`inbetween.data.triplet_index`), and the targets are the 2k-1 frames between them: frame t-k+j at
tau = j / 2k, j = 1..2k-1 (tau = 0.5 is the middle frame t, the headline). Every split of the file
except train and val is scored, and every record names its split, so anyone can recompute a number
from the HDF5 file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import h5py
import torch
from tqdm import tqdm

from benchmarks import metrics, report
from ibutil.run import RECORD_KEYS
from inbetween.data import triplet_index
from render import h5format

EVAL_BATCH = 512  # pairs per forward pass
NOT_SCORED = ("train", "val")  # splits methods learn or select on
SUMMARY_KEYS = (*RECORD_KEYS, "lr_trials")  # every record carries its model's training summary (ibutil.run)


@dataclass(frozen=True)
class Row:
    """One row-maker: a loaded model behind the method interface, and the fields of its records."""

    label: str  # row name in figures, e.g. "alpha-vae a=100 avg-gaussian"
    predict: Callable  # (x0, x2, tau) -> x_tau, (B, 3, H, W) in [0, 1]
    fields: dict  # method, alpha, kl, seed, the TrainSummary's RECORD_KEYS and lr_trials
    shown: bool  # drawn in the example grids and strips (seed 0 or unseeded)
    log: str | None  # its training log.csv, drawn in training-curves.png


def evaluation_splits(path) -> list[str]:
    """The splits of the file that are scored: all but train and val, in the file's order."""
    with h5format.open_dataset(path) as f:
        return [s for s in f if isinstance(f[s], h5py.Group) and "frames" in f[s] and s not in NOT_SCORED]


def path_frames(frames: torch.Tensor, masks: torch.Tensor, k: int, j: int) -> dict[str, torch.Tensor]:
    """The pairs of gap k and their targets at tau = j / 2k, over every window of every sequence.

    frames (S, T, 3, H, W) uint8 and masks (S, T, H, W) of one split -> x0, x2, target (N, 3, H, W)
    float in [0, 1] and mask (N, H, W), N = S (T - 2k), ordered by sequence, then middle frame t.
    """
    s, t, _ = torch.from_numpy(triplet_index(frames.shape[0], frames.shape[1], (k,))).T  # (N,) each
    x = {name: frames[s, t + d].float() / 255 for name, d in (("x0", -k), ("target", j - k), ("x2", k))}
    return x | {"mask": masks[s, t - k + j]}


def evaluate(predict: Callable, pairs: dict[str, torch.Tensor], tau: float) -> dict[str, float]:
    """Mean metrics of `predict` at `tau` over every pair of `pairs`, in batches."""
    batches, n = [], len(pairs["x0"])
    for i in range(0, n, EVAL_BATCH):
        sl = slice(i, i + EVAL_BATCH)
        with torch.no_grad():
            pred = predict(pairs["x0"][sl], pairs["x2"][sl], tau).float().cpu().clamp(0, 1)
        batches.append(metrics.all_metrics(pred, pairs["target"][sl], pairs["mask"][sl]))
    return metrics.mean_metrics(batches) | {"n_triplets": n}


def evaluate_dof(dof: int, path, rows: list[Row], gaps: tuple[int, ...], *, all_taus: bool = True,
                 progress: bool = True) -> dict:
    """Score every row on every evaluation split, gap and tau of one dataset; the figures' examples and strips too."""
    records, ceiling = [], []
    for split in evaluation_splits(path):
        arrays = h5format.read_split(path, split)
        frames = torch.from_numpy(arrays.frames).permute(0, 1, 4, 2, 3)  # (S, T, 3, H, W) uint8
        masks = torch.from_numpy(arrays.masks)  # (S, T, H, W)
        work = [(k, j) for k in gaps for j in (range(1, 2 * k) if all_taus else (k,))]
        for k, j in tqdm(work, desc=f"eval dof{dof} {split}", disable=not progress, leave=False):
            pairs, tau = path_frames(frames, masks, k, j), j / (2 * k)
            where = {"dof": dof, "split": split, "gap": k, "tau": tau}
            # The true frame scored against itself: the mask metrics' ceiling (silhouettes are thresholded).
            per = metrics.all_metrics(pairs["target"], pairs["target"], pairs["mask"])
            ceiling.append(where | metrics.mean_metrics(per) | {"n_triplets": len(pairs["target"])})
            for row in rows:
                records.append(where | row.fields | evaluate(row.predict, pairs, tau))
    test = h5format.read_split(path, "test")
    examples, strips = report.pick_figures(dof, test.frames, max(gaps), [r for r in rows if r.shown])
    curves = {f"dof{dof} {r.label}": r.log for r in rows if r.shown and r.log}
    return {"dof": dof, "dataset": {"file": str(path), "sha256": h5format.sha256_file(path)}, "records": records,
            "ceiling": ceiling, "examples": examples, "strips": strips, "curves": curves}
