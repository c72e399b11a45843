"""Scoring: every method on every evaluation split, gap and intermediate frame of one dataset, plus the figures' inputs.

For gap k the evaluation pairs are the end frames (t-k, t+k) of every window inside every sequence
(`ibdata.triplets.TripletDataset`: on `heldout` only windows whose middle frame lies in the held-out
region), and the targets are the 2k-1 frames between them: frame t-k+j at tau = j / 2k,
j = 1..2k-1 (tau = 0.5 is the middle frame t, the headline). Every split of the file except train
and val is scored. Each target is well-posed or not (ibdata.tasks.well_posed on the file's factors),
and every (split, gap, tau) is reported as one record per subset, so anyone can recompute a number
from the HDF5 file. DoF 1 and 2 also get ACAI's smoothness of the recovered poses along each path.
At tau = 0.5 each row's per-triplet metrics are kept too (TRIPLET_METRICS), for paired tests over triplets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.scoring import metrics, pose
from benchmarks.scoring.examples import TRIPLET_ROW, pick_figures
from ibdata import h5format
from ibdata.frames import to_float
from ibdata.triplets import TripletDataset
from ibutil.errors import UserError
from ibutil.preempt import StopFlag
from ibutil.run import RECORD_KEYS

EVAL_BATCH = 512  # pairs per forward pass
NOT_SCORED = ("train", "val")  # splits methods learn or select on
SUMMARY_KEYS = (*RECORD_KEYS, "lr_trials")  # every record carries its model's training summary (ibutil.run)
# Bump when what an evaluation output holds changes: the engine's eval hash includes it, so old outputs are redone.
SCORING_VERSION = 4  # 4: placement_error_px (dof 6), the exact pose search
# Metrics averaged over the triplets where they are defined (an object hidden in every frame has no position).
NAN_MEAN = ("position_error_px", "placement_error_px")
# Kept per triplet at tau = 0.5 (the headline), so that two rows can be compared triplet by triplet
# (benchmarks.results.claims' paired test): the place metrics of the paper's claims, and the two image metrics.
TRIPLET_METRICS = ("pose_error_deg", "position_error_px", "placement_error_px", "mse", "ssim")


@dataclass(frozen=True)
class Row:
    """One row-maker: a loaded model behind the method interface, and the fields of its records."""

    label: str  # row name in figures, e.g. "alpha-vae a=100 avg-gaussian"
    predict: Callable  # (x0, x2, tau) -> x_tau, (B, 3, H, W) in [0, 1]
    fields: dict  # method, alpha, kl, seed, the TrainSummary's RECORD_KEYS and lr_trials
    shown: bool  # drawn in the example grids and strips (the first seed, or unseeded)
    log: str | None  # its training log.csv, drawn in training-curves.png


def evaluation_splits(path, score_train: bool = False) -> list[str]:
    """The splits of the file (a path or its DatasetHeader) that are scored: all but train and val that hold
    sequences, test first; with `score_train` the train split too, last (a diagnostic: what the methods do on
    the frames they learned from)."""
    skip = tuple(s for s in NOT_SCORED if not (score_train and s == "train"))
    found = [s for s, (n_seq, _) in h5format.read_header(path).shapes.items() if s not in skip and n_seq > 0]
    return sorted(found, key=lambda s: (s == "train", s != "test", s))  # test (the paper's protocol) first, train last


def windows(path, split: str, k: int) -> TripletDataset | None:
    """The scored windows (s, t, k) of gap k in `split` with their factors; None if the split has none."""
    try:
        return TripletDataset(path, split, gaps=k, in_memory=False)
    except UserError:  # heldout: no window of this gap has its middle frame in the region
        return None


def path_frames(frames: torch.Tensor, masks: torch.Tensor, index: np.ndarray, j: int) -> dict[str, torch.Tensor]:
    """The pairs of windows `index` (N, 3) = (s, t, k) and their targets at tau = j / 2k.

    frames (S, T, 3, H, W) uint8 and masks (S, T, H, W) of one split -> x0, x2, target (N, 3, H, W)
    float in [0, 1] and mask (N, H, W), in the order of `index`.
    """
    s, t, k = torch.from_numpy(index).T  # (N,) each
    x = {name: to_float(frames[s, t + d]) for name, d in (("x0", -k), ("target", j - k), ("x2", k))}
    return x | {"mask": masks[s, t - k + j]}


def frame_metrics(pred, truth: metrics.Truth, table, device) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Every metric per frame against a metrics.Truth (the five of all_metrics and sharpness, plus the table's
    metrics when there is a table), and for pose tables the recovered table index (N,) that path smoothness needs."""
    pred = pred.detach().to("cpu", torch.float64).numpy()  # (N, 3, H, W): converted once for every metric
    out = metrics.score(pred, truth)
    if table is None:
        return out, None
    if isinstance(table, pose.PoseTable):
        index, distance = pose.recover(pred, table, device)
        return out | pose.scores_of_recovered(index, distance, truth.factors, table), index
    return out | metrics.table_metrics(pred, truth.factors, table, device, truth.masses), None


def mean_of(per: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, float]:
    """Means of per-triplet metrics over the triplets where `keep` (N,) bool is True."""
    out = {}
    for name, v in per.items():
        v = v[keep]
        finite = v[~np.isnan(v)] if name in NAN_MEAN else v
        out[name] = float(np.mean(finite)) if len(finite) else None
    return out


def subset_records(where: dict, per: dict[str, np.ndarray], well_posed: np.ndarray) -> list[dict]:
    """One record per well-posedness subset that has triplets: where | well_posed | means | n_triplets."""
    return [where | {"well_posed": bool(flag)} | mean_of(per, well_posed == flag)
            | {"n_triplets": int((well_posed == flag).sum())}
            for flag in (True, False) if (well_posed == flag).any()]


def path_records(where: dict, index: np.ndarray, ends: np.ndarray, well_posed: np.ndarray, table) -> list[dict]:
    """Smoothness records of the paths of one gap: index (N, 2k-1) recovered table rows, ends (N, 2, F) the
    true end factors, well_posed (N,) whether every frame of the path is; the mean over defined paths."""
    score = pose.smoothness_of_recovered(index, ends, table)  # (N,), NaN where the ends share a pose
    out = []
    for flag in (True, False):
        keep = well_posed == flag
        if keep.any():
            defined = score[keep][~np.isnan(score[keep])]
            out.append(where | {"well_posed": bool(flag), "smoothness": float(defined.mean()) if len(defined) else None,
                                "n_paths": int(keep.sum()), "n_undefined": int(keep.sum() - len(defined))})
    return out


def truths(pairs: dict[str, torch.Tensor], factors: np.ndarray | None = None, table=None,
           device=None) -> list[metrics.Truth]:
    """The metrics.Truth of each EVAL_BATCH of targets: made once per (split, gap, tau) and shared by every row."""
    out = []
    for i in range(0, len(pairs["target"]), EVAL_BATCH):
        sl = slice(i, i + EVAL_BATCH)
        target = pairs["target"][sl].detach().to("cpu", torch.float64).numpy()
        out.append(metrics.truth(target, pairs["mask"][sl], None if factors is None else factors[sl], table, device))
    return out


def evaluate(predict: Callable, pairs: dict[str, torch.Tensor], tau: float, factors: np.ndarray | None = None,
             table=None, device=None, truth: list[metrics.Truth] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Per-triplet metrics of `predict` at `tau` over every pair (and the recovered table rows, pose tables);
    `truth`: truths(pairs, factors, table, device), when several rows are scored on the same pairs."""
    truth = truths(pairs, factors, table, device) if truth is None else truth
    per, index = [], []
    for batch, i in enumerate(range(0, len(pairs["x0"]), EVAL_BATCH)):
        sl = slice(i, i + EVAL_BATCH)
        with torch.no_grad():
            pred = predict(pairs["x0"][sl], pairs["x2"][sl], tau).float().cpu().clamp(0, 1)
        m, idx = frame_metrics(pred, truth[batch], table, device)
        per.append(m)
        index.append(idx)
    joined = {name: np.concatenate([b[name] for b in per]) for name in per[0]}
    return joined, (np.concatenate(index) if index[0] is not None else None)


def ceiling_metrics(frames: torch.Tensor, masks: torch.Tensor, factors: np.ndarray, table,
                    device) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Every metric of every true frame of a split against itself, once: name -> (S, T), and the recovered
    table rows (S, T) for pose tables. The ceiling rows gather from these."""
    s_, t_ = frames.shape[:2]
    flat = to_float(frames.flatten(0, 1))  # (S*T, 3, H, W)
    pairs = {"x0": flat, "x2": flat, "target": flat, "mask": masks.flatten(0, 1)}
    per, index = evaluate(lambda x0, x2, tau: x0, pairs, 0.5, factors.reshape(s_ * t_, -1), table, device)
    return {name: v.reshape(s_, t_) for name, v in per.items()}, (None if index is None else index.reshape(s_, t_))


def scored_groups(path, split: str, gaps: tuple[int, ...], all_taus: bool) -> list[tuple[int, int, TripletDataset]]:
    """(k, j, windows) of one split (a path or its header) in the order evaluate_dof scores them: gap, then j (every
    1..2k-1, or k alone), the windows in their index order; gaps without a scored window are left out."""
    found = {k: windows(path, split, k) for k in gaps}
    return [(k, j, found[k]) for k in gaps if found[k] is not None for j in (range(1, 2 * k) if all_taus else (k,))]


def evaluate_dof(dof: int, path, rows: list[Row], gaps: tuple[int, ...], *, all_taus: bool = True,
                 progress: bool = True, table=None, device=None, score_train: bool = False,
                 splits: list[str] | None = None) -> dict:
    """Score every row on every evaluation split, gap, tau and well-posedness subset of one dataset.

    `table` (metrics.table_for) adds sharpness and the pose or position metrics, and for pose tables
    the path smoothness (needs all_taus); `device` is where the table metrics run. `score_train` scores
    the train split too (records with split "train": a diagnostic, kept out of the headline tables). `splits`
    scores only those of the evaluation splits, in evaluation order (score-predictions: the splits a
    predictions file holds). Its "timing": the wall seconds of the whole scoring and, per row, of its predictions
    and metrics (evaluate()) with the frames it scored.
    """
    start = time.perf_counter()
    row_seconds, row_frames = [0.0] * len(rows), [0] * len(rows)  # per row: wall time in evaluate() and frames scored
    records, ceiling, paths = [], [], []
    triplets: list[dict] = []  # per row and (split, gap) at tau 0.5: the target frames (s, t) and their metrics (N,)
    smooth = isinstance(table, pose.PoseTable) and all_taus
    header = h5format.read_header(path)  # read once, passed down
    scored = evaluation_splits(header, score_train)
    if splits is not None:
        unknown = sorted(set(splits) - set(scored))
        if unknown:
            raise UserError(f"{path} scores the splits {', '.join(scored)}, not {', '.join(unknown)}")
        scored = [s for s in scored if s in splits]
    # A stop signal (SIGTERM, Ctrl-C) ends the scoring after the (split, gap, tau) unit in hand: nothing of it is kept
    # (the caller writes its output only when it returns), and the same command scores again from the start.
    groups = {split: scored_groups(header, split, gaps, all_taus) for split in scored}
    total, done = sum(map(len, groups.values())), 0
    with StopFlag() as stop:
        for split in scored:
            arrays = h5format.read_split(path, split)
            frames = torch.from_numpy(arrays.frames).permute(0, 1, 4, 2, 3)  # (S, T, 3, H, W) uint8
            masks = torch.from_numpy(arrays.masks)  # (S, T, H, W)
            truth, truth_index = ceiling_metrics(frames, masks, arrays.factors, table, device)
            bar = tqdm(groups[split], desc=f"eval dof{dof} {split}", disable=not progress, leave=False)
            path_index: dict[int, list[np.ndarray]] = {}  # row (or -1: the truth) -> (N,) table rows per j of this gap
            path_wp: list[np.ndarray] = []
            for k, j, ds in bar:
                tau = j / (2 * k)
                pairs = path_frames(frames, masks, ds.index, j)
                s, t = ds.index[:, 0], ds.index[:, 1] - k + j  # the target frames
                factors = ds.triplet_factors(None, tau)[1] if table is not None else None
                try:
                    wp = ds.well_posed(None, tau)
                except ValueError as exc:  # a factor unit without a tolerance (a user's file)
                    raise UserError(f"{path}: {exc}") from None
                where = {"dof": dof, "split": split, "gap": k, "tau": tau}
                # The true frame scored against itself: the ceiling (silhouettes are thresholded, tables are grids).
                ceiling += subset_records(where, {n: v[s, t] for n, v in truth.items()}, wp)
                if smooth and j == 1:
                    path_index, path_wp = {-1: []}, []
                if smooth:
                    path_index[-1].append(truth_index[s, t])
                    path_wp.append(wp)
                shared = truths(pairs, factors, table, device)  # the targets' share of every metric, once for all rows
                for i, row in enumerate(rows):
                    began = time.perf_counter()
                    per, index = evaluate(row.predict, pairs, tau, factors, table, device, shared)
                    row_seconds[i] += time.perf_counter() - began
                    row_frames[i] += len(pairs["target"])
                    records += subset_records(where | row.fields, per, wp)
                    if tau == 0.5:
                        triplets.append({"dof": dof, "split": split, "gap": k}
                                        | {f: row.fields.get(f) for f in TRIPLET_ROW}
                                        | {"s": np.asarray(s), "t": np.asarray(t), "well_posed": np.asarray(wp)}
                                        | {m: per[m] for m in TRIPLET_METRICS if m in per})
                    if smooth:
                        path_index.setdefault(i, []).append(index)
                if smooth and j == 2 * k - 1:  # the last frame of this gap's paths: score them
                    ends = np.stack(ds.triplet_factors(None, 0.5)[::2], axis=1)  # (N, 2, F) factors of x0, x2
                    every = np.stack(path_wp, axis=1).all(axis=1)  # (N,) all frames of the path well-posed
                    base = {"dof": dof, "split": split, "gap": k}
                    for i, idx in sorted(path_index.items(), key=lambda kv: kv[0] < 0):  # the truth last
                        fields_ = {"method": "true frames"} if i < 0 else rows[i].fields
                        paths += path_records(base | fields_, np.stack(idx, axis=1), ends, every, table)
                done += 1
                stop.check(f"scoring of dof{dof} stopped after {done} of {total} (split, gap, tau) units ({split}, "
                           f"gap {k}, tau {tau:g}); nothing of it was kept, trained models stay cached; run the same "
                           "command again to score from the start")
    test = h5format.read_split(path, "test")
    examples, strips = pick_figures(dof, test.frames, max(gaps), [r for r in rows if r.shown])
    curves = {f"dof{dof} {r.label}": r.log for r in rows if r.shown and r.log}
    # Wall time of this scoring: in all, and per row its predictions and metrics (the rest is shared by the rows:
    # the ceiling, the targets' share of every metric, path smoothness, the figures' frames).
    timing = {"seconds": round(time.perf_counter() - start, 3),
              "rows": [{f: row.fields.get(f) for f in TRIPLET_ROW} | {"label": row.label, "seconds": round(sec, 3),
                                                                       "frames": n}
                       for row, sec, n in zip(rows, row_seconds, row_frames)]}
    return {"dof": dof, "dataset": {"file": str(path), "sha256": header.sha256}, "records": records,
            "ceiling": ceiling, "paths": paths, "triplets": triplets, "table": table_info(table), "examples": examples,
            "strips": strips, "curves": curves, "timing": timing}


def table_info(table) -> dict | None:
    """What the report states about the reference table: its kind, grid step (pose tables) and frames."""
    if table is None:
        return None
    if isinstance(table, pose.PoseTable):
        return {"kind": "pose-table", "step_deg": table.step_deg, "frames": len(table.frames),
                "default_step_deg": pose.DEFAULT_STEP_DEG[table.config.dof]}
    return {"kind": "object-templates", "frames": len(table.frames)}
