"""Measure the v2 metrics on the default datasets: table build time and size, scoring time, ground-truth ceiling.

python -m benchmarks.metric_speed --cache .cache/inbetween-bench [--dof 1 --dof 2 --dof 6] [--size 32] [--threads 1]
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import click
import cv2
import numpy as np
import torch

from benchmarks import metrics, pose, tables
from ibdata import h5format
from ibdata.frames import to_float
from render.dataset import render_dataset
from render.presets import RenderConfig


def _dataset(cache: Path, config: RenderConfig) -> Path:
    # The benchmark's dataset cache naming (sha256 of the config JSON), so its renders are reused.
    path = cache / "data" / f"dof{config.dof}-{tables.key_hash(config.to_json())}.h5"
    if not path.exists():
        render_dataset(config, path, workers=2, overwrite=True)
    return path


def look_alikes(table, queries: int = 2000, apart_deg: float = 30.0) -> dict:
    """How alike two distinct poses can look: for up to `queries` table frames (evenly picked), the cosine
    distance to the nearest table frame more than `apart_deg` away in pose, against the distance to the
    adjacent grid frame. A look-alike closer than a grid step is a pose a small error can flip to."""
    pick = np.linspace(0, len(table.frames) - 1, min(queries, len(table.frames))).astype(int)
    unit = table.unit_rows(torch.device("cpu"))
    apart, partner, step = [], [], []
    for start in range(0, len(pick), 64):  # (64, T, 3, 3) float64 rotations per block
        idx = pick[start:start + 64]
        dist = (1.0 - unit[idx] @ unit.T).double().numpy()  # (B, T)
        angle = pose.geodesic_deg(table.rotations[idx][:, None], table.rotations[None])  # (B, T)
        far = np.where(angle > apart_deg, dist, np.inf)
        apart.append(far.min(axis=1))
        partner.append(far.argmin(axis=1))
        step.append(np.where((angle > 0) & (angle <= table.step_deg * 1.01), dist, np.inf).min(axis=1))
    apart, partner, step = np.concatenate(apart), np.concatenate(partner), np.concatenate(step)
    worst = np.argsort(apart)[:5]
    return {"lookalike_queries": len(pick), "adjacent_step_distance_median": float(np.median(step)),
            "lookalike_distance_min": float(apart.min()), "lookalike_distance_p01": float(np.quantile(apart, 0.01)),
            "lookalike_distance_median": float(np.median(apart)),
            "lookalike_closer_than_a_step": float((apart < step).mean()),
            "lookalike_worst_pairs": [[table.factors[pick[i]].round(1).tolist(),
                                       table.factors[partner[i]].round(1).tolist(), round(float(apart[i]), 5)]
                                      for i in worst]}


def _timed(fn, *args, repeats: int = 3):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return out, best


def measure(cache: Path, dof: int, size: int, gap: int) -> dict:
    path = _dataset(cache, RenderConfig(dof=dof, size=size))
    start = time.perf_counter()
    table = metrics.table_for(path, cache)
    first_call = time.perf_counter() - start
    start = time.perf_counter()
    metrics.table_for(path, cache)
    cached_call = time.perf_counter() - start
    test = h5format.read_split(path, "test")
    s, t = test.factors.shape[:2]
    x = to_float(test.frames).numpy().reshape(s * t, size, size, 3).transpose(0, 3, 1, 2)
    f = test.factors.reshape(s * t, -1).astype(np.float64)
    masks = test.masks.reshape(s * t, size, size)
    truth, seconds = _timed(metrics.table_metrics, x, f, table)
    _, before = _timed(metrics.all_metrics, x, x, masks)  # the five v1 metrics
    _, after = _timed(lambda: metrics.all_metrics(x, x, masks, factors=f, table=table))
    # copy-x0 at `gap`: predict frame t by frame t - gap of the same sequence
    seq = np.arange(s * t).reshape(s, t)
    target, source = seq[:, gap:].ravel(), seq[:, :-gap].ravel()
    copy = metrics.table_metrics(x[source], f[target], table)
    out = {"dof": dof, "size": size, "table_frames": int(table.meta["frames"]),
           "table_build_s": table.meta["build_seconds"], "table_first_call_s": round(first_call, 2),
           "table_cached_call_s": round(cached_call, 3), "table_mib": round(table.nbytes / 2**20, 2),
           "table_file_mib": round(sum(p.stat().st_size for p in (cache / "tables").glob(f"*dof{dof}-*.npz"))
                                   / 2**20, 2),
           "frames_scored": len(x), "table_metrics_s_per_1000": round(seconds / len(x) * 1000, 3),
           "all_metrics_s_per_1000_before": round(before / len(x) * 1000, 3),
           "all_metrics_s_per_1000_after": round(after / len(x) * 1000, 3)}
    if dof in (1, 2):
        err = truth["pose_error_deg"]
        bound = table.step_deg / 2 * (1 if dof == 1 else math.sqrt(2))  # farthest a pose can be from the grid
        blurred = np.stack([cv2.GaussianBlur(im.transpose(1, 2, 0), (0, 0), 1.0) for im in x]).transpose(0, 3, 1, 2)
        blur_err = metrics.table_metrics(blurred, f, table)["pose_error_deg"]
        out.update(step_deg=table.step_deg, grid_bound_deg=round(bound, 3), truth_error_mean=float(err.mean()),
                   truth_error_max=float(err.max()), truth_beyond_grid_bound=float((err > bound + 1e-6).mean()),
                   truth_beyond_10deg=float((err > 10).mean()),
                   truth_worst=sorted(np.round(err, 1).tolist())[-10:],
                   blur1px_error_median=float(np.median(blur_err)), blur1px_beyond_10deg=float((blur_err > 10).mean()),
                   blur1px_worst=sorted(np.round(blur_err, 1).tolist())[-10:],
                   **look_alikes(table),
                   truth_nn_distance_mean=float(truth["nn_distance"].mean()),
                   copy_gap=gap, copy_error_mean=float(copy["pose_error_deg"].mean()),
                   copy_nn_distance_mean=float(copy["nn_distance"].mean()))
    else:
        out.update(truth_error_mean=float(truth["position_error_px"].mean()),
                   truth_error_max=float(truth["position_error_px"].max()),
                   truth_found=float(truth["position_found"].mean()), copy_gap=gap,
                   copy_error_mean=float(copy["position_error_px"].mean()))
    return out


@click.command()
@click.option("--cache", default=".cache/inbetween-bench", show_default=True, help="Dataset and table cache folder.")
@click.option("--dof", "dofs", type=click.Choice(["1", "2", "6"]), multiple=True, default=("1", "2", "6"),
              help="DoF presets to measure (repeat the option).")
@click.option("--size", default=32, show_default=True, help="Frame size of the default datasets.")
@click.option("--gap", default=10, show_default=True, help="Gap of the copy-x0 hedge that is scored too.")
@click.option("--threads", default=1, show_default=True,
              help="torch intra-op threads (0 = torch's default); one is fastest on a shared 2-core machine.")
def main(cache: str, dofs: tuple[str, ...], size: int, gap: int, threads: int) -> None:
    """Print one JSON line per DoF: table build time and size, seconds per 1000 frames, ground-truth scores."""
    if threads:
        torch.set_num_threads(threads)
    for dof in dofs:
        click.echo(json.dumps(measure(Path(cache), int(dof), size, gap)))


if __name__ == "__main__":
    main()
